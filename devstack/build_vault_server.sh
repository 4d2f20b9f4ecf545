#!/usr/bin/env bash
# Builds (or reuses from the cache) the HashiCorp Vault server the local stack runs when
# VSO_VAULT_FLAVOR=hashicorp (see docs/vault-flavours.md).
#
# LICENCE: HashiCorp Vault is under the Business Source License 1.1 (BUSL-1.1). This binary is
# built for LOCAL TESTS ONLY: it is never shipped, never put in an image, a chart or a release
# artefact of this project. The operator itself talks to any Vault over HTTP and contains no Vault code.
#
# What is built: package main of the Go module github.com/hashicorp/vault (the module root),
# at the version pinned in devstack/vault-server/go.mod (also HASHICORP_VAULT_VERSION in
# versions.env), with Vault's own "minimal" build tag (its Makefile's BUILD_MINIMAL=1: kv, approle,
# pki, transit, userpass, jwt, cert), three lines adapted to the published sdk (sdk_skew.py), plus, by swapping one file of a copy of the module
# (devstack/vault-server/_overlay/registry_min.go), the three builtin plugins the stack mounts:
# the AWS secrets engine, TOTP and kubernetes auth. No UI, CGO off (as Vault's release builds).
#
# Output: $VSO_CACHE/bin/vault-<version>/vault; prints that path on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=devstack/versions.env
. "$here/versions.env"
version=$HASHICORP_VAULT_VERSION
cache=${VSO_CACHE:-$HOME/.cache/vault-sts-operator}
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { printf '[build_vault_server %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

src="$here/vault-server"
out="$cache/bin/vault-$version"
bin="$out/vault"

if [[ -x $bin ]]; then
  log "vault $version cached: $bin"
  echo "$bin"
  exit 0
fi

pinned=$(cd "$src" && go list -m -f '{{.Version}}' github.com/hashicorp/vault)
if [[ $pinned != "$version" ]]; then
  log "error: $src/go.mod requires github.com/hashicorp/vault $pinned, versions.env pins $version"
  exit 1
fi

started=$(date +%s)
mkdir -p "$cache/bin" "$cache/src"
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
# Only the vault module itself is downloaded up front; go build fetches the modules the minimal build
# imports (a fraction of the ~2,900 lines of go.sum, which covers every build tag).
log "go mod download github.com/hashicorp/vault $version"
(cd "$src" && go mod download github.com/hashicorp/vault)
moddir=$(cd "$src" && go list -m -f '{{.Dir}}' github.com/hashicorp/vault)
# Vault's registry is unexported and go build -overlay may not replace files in GOMODCACHE: build
# from a copy of the (checksum-verified) module with registry_min.go swapped, through a directory
# replace in a copy of go.mod. go.sum still pins every other module.
work="$cache/src/vault-$version"
rm -rf "$work"; mkdir -p "$work"
cp -r "$moddir" "$work/vault"; chmod -R u+w "$work/vault"
cp "$src/_overlay/registry_min.go" "$work/vault/helper/builtinplugins/registry_min.go"
# three call sites adapted to the published sdk (the tree's own ./sdk was never published): see the file
python3 "$src/sdk_skew.py" "$work/vault"
cp "$src/go.mod" "$src/go.sum" "$work/"
printf '\nreplace github.com/hashicorp/vault => ./vault\n' >> "$work/go.mod"
log "go build vault $version (minimal + aws, totp, kubernetes; first time ~10-20 min on 2 shared cores)"
(cd "$work" && go build -mod=readonly -trimpath -tags minimal \
  -ldflags "-s -w -X github.com/hashicorp/vault/version.BuildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -o "$out.tmp/vault" github.com/hashicorp/vault)
rm -rf "$out"; mv "$out.tmp" "$out"
log "built $bin in $(( $(date +%s) - started ))s ($(du -h "$bin" | cut -f1)): $("$bin" version)"
echo "$bin"
