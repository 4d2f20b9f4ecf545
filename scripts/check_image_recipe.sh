#!/usr/bin/env bash
# Tests the Dockerfile's recipe without a Docker engine: performs the builder stage's steps
# (scripts/image_install.sh, the very script the Dockerfile runs) in a temporary directory, from a
# clean copy of exactly the files the Dockerfile COPYs (tracked or unignored files only: no .venv,
# no egg-info, no __pycache__), then checks the result the way the runtime stage uses it.
#
#   scripts/check_image_recipe.sh            (KEEP=1 keeps the temporary directory)
#
# Prints one "ok: ..." line per check and "recipe check passed: N checks" at the end; exits
# non-zero at the first failure.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export PYTHON

work="$(mktemp -d -t vso-image-recipe.XXXXXX)"
if [[ "${KEEP:-}" == 1 ]]; then echo "keeping $work"; else trap 'rm -rf "$work"' EXIT; fi
chmod 755 "$work"   # the unprivileged-user check below must reach the venv
passed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*" >&2; exit 1; }

"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || echo "warning: $("$PYTHON" -V) is not the image's Python 3.11" >&2
ok "interpreter $("$PYTHON" -V 2>&1) ($(command -v "$PYTHON"))"

# 1. The build context: the Dockerfile's COPY sources (builder stage; not COPY --from), taken from
#    the files git knows (committed, staged or new and not ignored).
src="$work/src"
mkdir -p "$src"
mapfile -t sources < <("$PYTHON" - "$repo/Dockerfile" <<'PY'
import shlex, sys
for line in open(sys.argv[1]):
    if not line.upper().startswith("COPY "):
        continue
    words = shlex.split(line.strip(), comments=True)
    if not any(w.startswith("--from") for w in words):
        for source in words[1:-1]:
            print(source.rstrip("/"))
PY
)
[[ ${#sources[@]} -gt 0 ]] || fail "no COPY sources found in the Dockerfile"
(
  cd "$repo"
  git ls-files -z --cached --others --exclude-standard -- "${sources[@]}" \
    | while IFS= read -r -d '' path; do [[ -e "$path" ]] && printf '%s\0' "$path"; done \
    | xargs -0 cp --parents -t "$src"
)
for source in "${sources[@]}"; do [[ -e "$src/$source" ]] || fail "COPY source $source is missing"; done
if [[ -n $(find "$src" \( -name '__pycache__' -o -name '*.egg-info' -o -name '*.pyc' \) -print -quit) ]]; then
  fail "build context is not clean"
fi
ok "clean build context: ${sources[*]} ($(find "$src" -type f | wc -l) files)"

# 2. The builder stage's two RUN steps, same script, same arguments but for the temporary paths.
venv="$work/venv"
cd "$src"
start=$SECONDS
sh scripts/image_install.sh deps "$venv" "$work/build" >"$work/deps.log" 2>&1 \
  || { tail -30 "$work/deps.log"; fail "deps step failed"; }
ok "deps: $(grep -c '==' requirements/operator.lock) locked runtime packages installed with --require-hashes ($((SECONDS - start))s)"
start=$SECONDS
sh scripts/image_install.sh app "$venv" "$work/build" "$src" "$work/wheels" >"$work/app.log" 2>&1 \
  || { tail -30 "$work/app.log"; fail "app step failed"; }
ok "app: wheel built without build isolation, installed with --no-index, pip check clean ($((SECONDS - start))s)"
cd "$work"

# 3. The wheel: top-level import package vault_sts_operator only (never `operator`).
wheel=("$work"/wheels/vault_sts_operator-*.whl)
[[ ${#wheel[@]} -eq 1 && -f "${wheel[0]}" ]] || fail "expected one wheel, got: ${wheel[*]}"
tops="$("$PYTHON" - "${wheel[0]}" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = sorted({n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")})
top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
declared = zipfile.ZipFile(sys.argv[1]).read(top_level[0]).decode().split() if top_level else tops
print(" ".join(tops) + "|" + " ".join(sorted(declared)))
PY
)"
[[ "$tops" == "vault_sts_operator|vault_sts_operator" ]] || fail "wheel top-level is '$tops'"
ok "wheel $(basename "${wheel[0]}") has top-level vault_sts_operator only"

# 4. The venv holds exactly the lock's pins plus the package (no pip, no setuptools).
"$PYTHON" - "$venv" "$src/requirements/operator.lock" <<'PY' || fail "venv contents differ from the lock"
import re, subprocess, sys
venv, lock = sys.argv[1], sys.argv[2]
locked = {m.group(1).lower().replace("_", "-"): m.group(2)
          for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", open(lock).read(), re.M)}
out = subprocess.run([f"{venv}/bin/python", "-c",
                      "import importlib.metadata as m; [print(d.metadata['Name'], d.version) "
                      "for d in m.distributions()]"], check=True, capture_output=True, text=True).stdout
installed = {name.lower().replace("_", "-"): version for name, version in (l.split() for l in out.splitlines())}
expected = dict(locked, **{"vault-sts-operator": installed.get("vault-sts-operator", "?")})
if installed != expected:
    print("extra:", sorted(set(installed.items()) - set(expected.items())), file=sys.stderr)
    print("missing:", sorted(set(expected.items()) - set(installed.items())), file=sys.stderr)
    sys.exit(1)
PY
ok "venv holds the $(grep -c '==' "$src/requirements/operator.lock") locked packages + vault-sts-operator, nothing else (no pip)"

# 5. The runtime stage: ENV as in the Dockerfile, entrypoint from PATH, cwd /tmp.
export PATH="$venv/bin:$PATH" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp
entry="$venv/bin/vault-sts-operator"
[[ "$(head -1 "$entry")" == "#!$venv/bin/python"* ]] || fail "entrypoint shebang is $(head -1 "$entry")"
want_version="$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("src/pyproject.toml","rb"))["project"]["version"])')"
before="$(find "$venv" | sort | md5sum)"
got_version="$(cd /tmp && vault-sts-operator --version)"
[[ "$got_version" == "$want_version" ]] || fail "--version printed '$got_version', want $want_version"
ok "vault-sts-operator --version: $got_version"
help="$(cd /tmp && vault-sts-operator run --help)"
for flag in --all-namespaces --namespace --vault-address --metrics-port --liveness --leader-election-lease; do
  grep -q -- "$flag" <<<"$help" || fail "run --help lacks $flag"
done
ok "vault-sts-operator run --help lists --all-namespaces, --namespace, --vault-address, --metrics-port, --liveness, --leader-election-lease"

# The full import graph (the runtime, its services and clients) loads from the venv alone.
(cd /tmp && python -c 'import vault_sts_operator.runtime, vault_sts_operator.app') \
  || fail "importing the runtime failed"
ok "import vault_sts_operator.runtime (aiohttp, hvac, boto3, prometheus_client) works"

# `operator` is still the standard library's module.
where="$(cd /tmp && python - <<'PY'
import operator, sysconfig, os
stdlib = sysconfig.get_paths()["stdlib"]
assert os.path.dirname(operator.__file__) == stdlib and hasattr(operator, "itemgetter"), operator.__file__
print(operator.__file__)
PY
)" || fail "import operator is not the standard library: $where"
ok "import operator is the standard library ($where)"

# Read-only root friendly: bytecode was compiled at install, and none of the above wrote into the venv.
pycs="$(find "$venv"/lib/python3*/site-packages/vault_sts_operator -name '*.pyc' | wc -l)"
[[ "$pycs" -gt 0 ]] || fail "no bytecode compiled at install time"
[[ "$(find "$venv" | sort | md5sum)" == "$before" ]] || fail "running the entrypoint wrote into the venv"
ok "the venv was not written to at runtime ($pycs .pyc files of the package compiled at install)"

# As the image's numeric non-root user, when this runs as root (as it does in CI).
if [[ $EUID -eq 0 ]] && command -v setpriv >/dev/null; then
  got="$(cd /tmp && setpriv --reuid=65532 --regid=65532 --clear-groups "$entry" --version)" \
    || fail "the entrypoint does not run as uid 65532"
  [[ "$got" == "$want_version" ]] || fail "as 65532, --version printed '$got'"
  ok "runs as uid/gid 65532 (setpriv): --version $got"
fi

echo "recipe check passed: $passed checks"
