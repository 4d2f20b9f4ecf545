// Command vault-plugin-secrets-aws serves HashiCorp Vault's builtin AWS secrets
// engine (github.com/hashicorp/vault/builtin/logical/aws) as an external plugin,
// so the local OpenBao dev server can mount a real AWS engine.
package main

import (
	"context"
	"errors"
	"log"
	"os"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/builtin/logical/aws"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/plugin"
	"github.com/hashicorp/vault/sdk/rotation"
)

// openbaoSystemView hides Vault's rotation manager (Vault >= 1.19), which
// OpenBao's SystemView does not implement: every aws/config/root write
// deregisters a rotation job and would otherwise fail with
// "unknown method DeregisterRotationJob for service pb.SystemView".
type openbaoSystemView struct{ logical.SystemView }

func (openbaoSystemView) DeregisterRotationJob(context.Context, *rotation.RotationJobDeregisterRequest) error {
	return nil
}

func (openbaoSystemView) RegisterRotationJob(context.Context, *rotation.RotationJobConfigureRequest) (string, error) {
	return "", errors.New("automated root rotation is not supported on OpenBao")
}

func factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	conf.System = openbaoSystemView{conf.System}
	return aws.Factory(ctx, conf)
}

func main() {
	meta := &api.PluginAPIClientMeta{}
	if err := meta.FlagSet().Parse(os.Args[1:]); err != nil {
		log.Fatal(err)
	}
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: factory,
		TLSProviderFunc:    api.VaultPluginTLSProvider(meta.GetTLSConfig()),
	}); err != nil {
		log.Fatal(err)
	}
}
