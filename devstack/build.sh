#!/usr/bin/env bash
# Builds (or reuses from the cache) the binaries the local stack runs:
# etcd, the Kubernetes control plane and node binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy), helm, promtool, helm-docs and kstatus-check.
# Usage: devstack/build.sh [component...]   (default: all)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=devstack/versions.env
. "$here/versions.env"
cache=${VSO_CACHE:-$HOME/.cache/vault-sts-operator}
export GOFLAGS=-buildvcs=false
mkdir -p "$cache/bin" "$cache/src"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# k8s.io/kubernetes as a module: require it, replace each staging module with its v0.x release.
build_kubernetes() {
  local out="$cache/bin/kubernetes-$KUBERNETES_VERSION"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy) missing=() cmd
  for cmd in "${cmds[@]}"; do [[ -x $out/$cmd ]] || missing+=("$cmd"); done
  if [[ ${#missing[@]} -eq 0 ]]; then log "kubernetes $KUBERNETES_VERSION cached"; return; fi
  local src="$cache/src/kubernetes-$KUBERNETES_VERSION" staging=v0.${KUBERNETES_VERSION#v1.}
  rm -rf "$out.tmp"; mkdir -p "$src" "$out.tmp"
  [[ -d $out ]] && cp -a "$out/." "$out.tmp/"
  cd "$src"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module vso.local/kubebuild"
    echo
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } > go.mod
  log "resolving k8s.io/kubernetes $KUBERNETES_VERSION (staging $staging)"
  local pkgs=()
  for cmd in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd@$KUBERNETES_VERSION"); done
  go get "${pkgs[@]}"
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
  # One `go build` for every binary: it compiles the packages they share once and links one binary while
  # compiling the next, instead of leaving a core idle during each link.
  local targets=()
  for cmd in "${missing[@]}"; do targets+=("k8s.io/kubernetes/cmd/$cmd"); done
  log "go build ${missing[*]} (slow: several minutes on 2 cores)"
  go build -trimpath -ldflags "$ld" -o "$out.tmp/" "${targets[@]}"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# etcd: a one-line main around etcdmain, as etcd's own main.go does.
build_etcd() {
  local out="$cache/bin/etcd-$ETCD_VERSION"
  if [[ -x $out/etcd ]]; then log "etcd $ETCD_VERSION cached"; return; fi
  local src="$cache/src/etcd-$ETCD_VERSION"
  mkdir -p "$src" "$out.tmp"; cd "$src"
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  printf 'module vso.local/etcdbuild\n\ngo %s\n' "$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')" > go.mod
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy
  log "go build etcd"
  go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" .
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_helm() {
  local out="$cache/bin/helm-$HELM_VERSION"
  if [[ -x $out/helm ]]; then log "helm $HELM_VERSION cached"; return; fi
  mkdir -p "$out.tmp"
  log "go install helm $HELM_VERSION"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# promtool (Prometheus's rule and metrics checker), from the prometheus module (v0.3xx.y is Prometheus 3.xx.y).
build_promtool() {
  local out="$cache/bin/promtool-$PROMETHEUS_VERSION"
  if [[ -x $out/promtool ]]; then log "promtool $PROMETHEUS_VERSION cached"; return; fi
  local src="$cache/src/promtool-$PROMETHEUS_VERSION"
  rm -rf "$out.tmp"; mkdir -p "$src" "$out.tmp"; cd "$src"
  printf 'module vso.local/promtoolbuild\n\ngo %s\n' "$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')" > go.mod
  # remove_all_sd: Prometheus's own build tag that leaves out every service-discovery plugin (the AWS, Azure,
  # GCE, Kubernetes... SDKs). promtool's `check` and `test rules` need none; the build is several times faster.
  GOFLAGS="$GOFLAGS -tags=remove_all_sd" go get "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
  log "go build promtool (tags remove_all_sd)"
  go build -trimpath -tags remove_all_sd -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
    -o "$out.tmp/promtool" github.com/prometheus/prometheus/cmd/promtool
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# helm-docs: the chart README's values table (charts/vault-sts-operator/README.md.gotmpl, tests/chart checks it).
build_helm_docs() {
  local out="$cache/bin/helm-docs-$HELM_DOCS_VERSION"
  if [[ -x $out/helm-docs ]]; then log "helm-docs $HELM_DOCS_VERSION cached"; return; fi
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  log "go install helm-docs $HELM_DOCS_VERSION"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w -X main.version=$HELM_DOCS_VERSION" \
    "github.com/norwoodj/helm-docs/cmd/helm-docs@$HELM_DOCS_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# kstatus-check (devstack/kstatus/main.go): how Flux (cli-utils kstatus) and Argo CD (gopher-lua, the health
# script docs/argocd-health.lua) read an object; tests/e2e/test_status_kstatus.py runs it.
build_kstatus() {
  local version="$CLI_UTILS_VERSION-lua$GOPHER_LUA_VERSION-$(sha256sum "$here/kstatus/main.go" | cut -c1-12)"
  local out="$cache/bin/kstatus-check-$version"
  if [[ -x $out/kstatus-check ]]; then log "kstatus-check $version cached"; return; fi
  local src="$cache/src/kstatus-check-$version"
  rm -rf "$out.tmp"; mkdir -p "$src" "$out.tmp"; cd "$src"
  printf 'module vso.local/kstatuscheck\n\ngo %s\n' "$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')" > go.mod
  cp "$here/kstatus/main.go" .
  go get "sigs.k8s.io/cli-utils@$CLI_UTILS_VERSION" "github.com/yuin/gopher-lua@$GOPHER_LUA_VERSION"
  go mod tidy
  log "go build kstatus-check"
  go build -trimpath -ldflags "-s -w" -o "$out.tmp/kstatus-check" .
  rm -rf "$out"; mv "$out.tmp" "$out"
}

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(etcd kubernetes helm promtool helm_docs kstatus)
for c in "${components[@]}"; do
  ( "build_$c" )
done
log "done: ${components[*]}"
