#!/usr/bin/env bash
# Builds (or reuses from the cache) the OpenBao plugin "vault-plugin-secrets-aws":
# HashiCorp Vault's builtin AWS secrets engine (github.com/hashicorp/vault/builtin/logical/aws)
# served as an external plugin by devstack/vault-aws-plugin (go.mod/go.sum pin every dependency).
#
# Output: $VSO_CACHE/bin/vault-aws-plugin-<version>/vault-plugin-secrets-aws, alone in its directory
# (bao -dev-plugin-dir registers every file there and aborts on any that is not a plugin).
# Prints that plugin directory on stdout, e.g.
#   dir=$(devstack/build_vault_aws.sh)
#   bao server -dev -dev-plugin-dir="$dir"        # registers it as vault-plugin-secrets-aws
#   bao secrets enable -path=aws vault-plugin-secrets-aws
# or, with plugin_directory set in a server config:
#   bao plugin register -sha256="$(sha256sum "$dir/vault-plugin-secrets-aws" | cut -d' ' -f1)" secret vault-plugin-secrets-aws
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Pinned: must match the github.com/hashicorp/vault requirement in vault-aws-plugin/go.mod.
VAULT_AWS_PLUGIN_VERSION=v1.21.4
cache=${VSO_CACHE:-$HOME/.cache/vault-sts-operator}
export GOFLAGS=-buildvcs=false

log() { printf '[build_vault_aws %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

src="$here/vault-aws-plugin"
out="$cache/bin/vault-aws-plugin-$VAULT_AWS_PLUGIN_VERSION"
bin="$out/vault-plugin-secrets-aws"

if [[ -x $bin ]]; then
  log "vault-plugin-secrets-aws $VAULT_AWS_PLUGIN_VERSION cached: $bin"
  echo "$out"
  exit 0
fi

pinned=$(cd "$src" && go list -m -f '{{.Version}}' github.com/hashicorp/vault)
if [[ $pinned != "$VAULT_AWS_PLUGIN_VERSION" ]]; then
  log "error: $src/go.mod requires github.com/hashicorp/vault $pinned, this script pins $VAULT_AWS_PLUGIN_VERSION"
  exit 1
fi

mkdir -p "$cache/bin"
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
# Parallel download of the whole graph is faster than go build's lazy fetch (~1.2 GB module cache,
# mostly the github.com/hashicorp/vault zip itself).
log "go mod download (github.com/hashicorp/vault $VAULT_AWS_PLUGIN_VERSION; first time ~15-60 s)"
(cd "$src" && go mod download)
log "go build vault-plugin-secrets-aws (first time ~1.5 min on 2 cores)"
(cd "$src" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "$out.tmp/vault-plugin-secrets-aws" .)
rm -rf "$out"; mv "$out.tmp" "$out"
log "built $bin ($(du -h "$bin" | cut -f1), sha256 $(sha256sum "$bin" | cut -d' ' -f1))"
echo "$out"
