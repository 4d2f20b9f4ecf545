// Copyright IBM Corp. 2016, 2025 (the file it replaces); SPDX-License-Identifier: BUSL-1.1
//
// Replaces github.com/hashicorp/vault/helper/builtinplugins/registry_min.go in the copy of the module
// that devstack/build_vault_server.sh builds with -tags minimal. Vault's own "minimal"
// build (its Makefile's BUILD_MINIMAL) keeps only the core engines (kv, approle, pki, transit,
// ...); this adds back, from Vault's full registry (registry_full.go), exactly the three the
// local stack mounts: the builtin AWS secrets engine, the TOTP engine and kubernetes auth.
// Everything else (database plugins, cloud auth methods, storage backends) is left out, which
// cuts the cold build roughly in half on 2 cores.

//go:build minimal

package builtinplugins

import (
	credKube "github.com/hashicorp/vault-plugin-auth-kubernetes"
	logicalAws "github.com/hashicorp/vault/builtin/logical/aws"
	logicalTotp "github.com/hashicorp/vault/builtin/logical/totp"
	"github.com/hashicorp/vault/helper/pluginconsts"
)

func extendAddonPlugins(reg *registry) {
	reg.credentialBackends[pluginconsts.AuthTypeKubernetes] = credentialBackend{Factory: credKube.Factory}
	reg.logicalBackends[pluginconsts.SecretEngineAWS] = logicalBackend{Factory: logicalAws.Factory}
	reg.logicalBackends[pluginconsts.SecretEngineTOTP] = logicalBackend{Factory: logicalTotp.Factory}
}
