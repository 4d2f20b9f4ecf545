#!/bin/sh
# The container image's install steps, run by the Dockerfile's builder stage and, unchanged, by
# scripts/check_image_recipe.sh in a temporary directory (no Docker engine needed). POSIX sh: the
# builder image (python:3.11-slim) has no bash.
#
#   image_install.sh deps VENV BUILD_VENV               (cwd: a directory holding requirements/)
#   image_install.sh app  VENV BUILD_VENV SRC WHEEL_DIR
#
# deps: VENV (the runtime venv, created without pip) gets the locked runtime dependencies and
#       BUILD_VENV the locked build backend; every file is checked against its hash, wheels only.
# app:  builds this package's wheel from SRC without build isolation (so with the locked backend,
#       nothing unpinned is fetched), installs it into VENV without touching the index, and checks
#       VENV's dependency graph is complete.
set -eu

phase="$1"
venv="$2"
build_venv="$3"
python="${PYTHON:-python3}"
pip_flags="--no-cache-dir --disable-pip-version-check --no-input"

case "$phase" in
  deps)
    "$python" -m venv --without-pip "$venv"
    "$python" -m venv "$build_venv"
    # shellcheck disable=SC2086
    "$build_venv/bin/pip" $pip_flags install --require-hashes --no-deps --only-binary=:all: \
      -r requirements/build.lock
    # shellcheck disable=SC2086
    "$build_venv/bin/pip" $pip_flags --python "$venv/bin/python" install \
      --require-hashes --no-deps --only-binary=:all: -r requirements/operator.lock
    ;;
  app)
    src="$4"
    wheel_dir="$5"
    # shellcheck disable=SC2086
    "$build_venv/bin/pip" $pip_flags wheel --no-deps --no-build-isolation --wheel-dir "$wheel_dir" "$src"
    # shellcheck disable=SC2086
    # --force-reinstall: a reused venv (the benchmarks') already holds a wheel of the same version, and pip
    # would keep that one, so the benchmark would measure the previous code.
    "$build_venv/bin/pip" $pip_flags --python "$venv/bin/python" install --no-deps --no-index --force-reinstall \
      "$wheel_dir"/vault_sts_operator-*.whl
    # shellcheck disable=SC2086
    "$build_venv/bin/pip" $pip_flags --python "$venv/bin/python" check
    ;;
  *)
    echo "usage: $0 deps VENV BUILD_VENV | app VENV BUILD_VENV SRC WHEEL_DIR" >&2
    exit 2
    ;;
esac
