#!/usr/bin/env bash
# Regenerates the hashed lock files the container image installs from (`make lock`):
#   requirements/operator.lock  runtime dependencies: pyproject.toml [project].dependencies
#   requirements/build.lock     build backend: pyproject.toml [build-system].requires
# Reproducible: the same resolver (uv, pinned in the dev extra), the image's Python (3.11, Linux) and
# a fixed upload cutoff, so a rerun resolves to the same pins and hashes. To take newer releases,
# move the cutoff: `LOCK_EXCLUDE_NEWER=$(date -u +%FT%TZ) make lock` and commit the new date below.
set -euo pipefail
cd "$(dirname "$0")/.."

EXCLUDE_NEWER="${LOCK_EXCLUDE_NEWER:-2026-11-25T00:00:00Z}"
PYTHON="${PYTHON:-.venv/bin/python}"
UV="${UV:-$(dirname "$PYTHON")/uv}"
OUT_DIR="${LOCK_OUT_DIR:-requirements}"

compile() {  # compile SRC OUT
  "$UV" pip compile "$1" --quiet --generate-hashes --no-config \
    --python-version 3.11 --python-platform linux \
    --exclude-newer "$EXCLUDE_NEWER" --custom-compile-command "make lock" \
    --output-file "$2"
}

mkdir -p "$OUT_DIR"
compile pyproject.toml "$OUT_DIR/operator.lock"

build_in="$(mktemp --suffix=.in)"
trap 'rm -f "$build_in"' EXIT
"$PYTHON" - "$build_in" <<'PY'
import sys, tomllib
with open("pyproject.toml", "rb") as handle:
    requires = tomllib.load(handle)["build-system"]["requires"]
with open(sys.argv[1], "w") as out:
    out.write("".join(f"{req}\n" for req in requires))
PY
compile "$build_in" "$OUT_DIR/build.lock"
# uv names the temporary input in "# via" comments; name the real source instead.
sed -i "s|$build_in|pyproject.toml [build-system].requires|" "$OUT_DIR/build.lock"
echo "locked: $OUT_DIR/operator.lock ($(grep -c '==' "$OUT_DIR/operator.lock") packages)," \
  "$OUT_DIR/build.lock ($(grep -c '==' "$OUT_DIR/build.lock") packages)"
