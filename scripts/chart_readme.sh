#!/usr/bin/env bash
# Writes charts/vault-sts-operator/README.md from README.md.gotmpl and the `# --` comments of values.yaml
# with helm-docs (built from the Go module proxy and cached by devstack/build.sh helm_docs).
# Usage: scripts/chart_readme.sh [chart-dir]     (default: charts/vault-sts-operator)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=devstack/versions.env
. "$root/devstack/versions.env"
chart=${1:-$root/charts/vault-sts-operator}
bash "$root/devstack/build.sh" helm_docs 2>/dev/null
"${VSO_CACHE:-$HOME/.cache/vault-sts-operator}/bin/helm-docs-$HELM_DOCS_VERSION/helm-docs" \
  --chart-search-root "$chart" --template-files README.md.gotmpl --output-file README.md \
  --sort-values-order file --log-level warning
