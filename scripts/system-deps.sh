#!/usr/bin/env bash
# The system packages `make demo` and `make test` need, in one list (CI's .ci/run calls `make test`, which
# calls this). Run as root on Debian/Ubuntu, it installs what is missing with apt-get; otherwise it stops at
# once, before any build, printing the exact command to run.
#
# Usage: scripts/system-deps.sh demo|test
#   demo: the local stack with its node and the operator image (Go, the node's runtime, podman, mmdebstrap)
#   test: the same (the suite runs the same stack), plus npm, Maven and a JDK for the SDK consumer images
set -euo pipefail

purpose=${1:-test}
case $purpose in demo|test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac

# What must be present -> the Debian package that provides it. `/path`: a file; `py:module`: a module
# python3 imports (a pyenv Python with venv stands for python3-venv); else a command on PATH or in /usr/sbin,
# /sbin (root's tools are there on Debian).
declare -A packages=(
  [make]=make [python3]=python3 [py:ensurepip]=python3-venv
  [gcc]=gcc [/usr/lib/x86_64-linux-gnu/libc.a]=libc6-dev [git]=git [openssl]=openssl
  [containerd]=containerd [runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins
  [ip]=iproute2 [nft]=nftables [conntrack]=conntrack [unshare]=util-linux
  [mmdebstrap]=mmdebstrap [podman]=podman
)
if [[ $purpose == test ]]; then
  # The Pod Identity tests' consumer images (devstack/consumers): the JavaScript SDK's packages come from npm,
  # the Java SDK's from Maven Central, compiled with a JDK (the images themselves hold Debian's runtimes).
  packages+=([npm]=npm [mvn]=maven [javac]=openjdk-17-jdk-headless)
fi

has() {
  case $1 in
    /*) [[ -e $1 ]] ;;
    py:*) command -v python3 >/dev/null 2>&1 && python3 -c "import ${1#py:}" >/dev/null 2>&1 ;;
    *) command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]] ;;
  esac
}

missing=()
for tool in "${!packages[@]}"; do has "$tool" || missing+=("${packages[$tool]}"); done
# Not from Debian's archive: Debian 12's golang-go (1.19) cannot build Kubernetes 1.35, and it has no kubectl
# package. Both come from their upstreams (go.dev, pkgs.k8s.io); the builds need Go >= 1.24.
others=()
go_version=$(go env GOVERSION 2>/dev/null | sed -E 's/^go([0-9]+)\.([0-9]+).*/\1 \2/') || true
if [[ -z $go_version ]] || (( ${go_version% *} == 1 && ${go_version#* } < 24 )); then
  others+=("Go >= 1.24 on PATH (https://go.dev/doc/install; Debian 12's golang-go is too old)")
fi
command -v kubectl >/dev/null 2>&1 || others+=("kubectl >= 1.33 on PATH (https://kubernetes.io/docs/tasks/tools/)")
if [[ ${#others[@]} -gt 0 ]]; then
  echo "make $purpose needs, besides Debian's packages:" >&2
  printf '  %s\n' "${others[@]}" >&2
  exit 1
fi

[[ ${#missing[@]} -eq 0 ]] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

command="apt-get update && apt-get install -y ${missing[*]}"
# VSO_DEPS_NO_INSTALL=1: only report (what a non-root user sees; the tests use it).
if [[ $(id -u) -ne 0 || ${VSO_DEPS_NO_INSTALL:-0} == 1 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "make $purpose needs system packages that are missing: ${missing[*]}" >&2
  echo "run as root on Debian/Ubuntu (or install the equivalents), then run make $purpose again:" >&2
  echo "  $command" >&2
  exit 1
fi
printf '[deps %s] installing system packages: %s\n' "$(date +%H:%M:%S)" "${missing[*]}" >&2
started=$(date +%s)
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
printf '[deps %s] installed in %ss\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - started ))" >&2
