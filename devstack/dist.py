"""``make dist``: the release artefacts, built locally into ``dist/``.

* ``vault_sts_operator-<version>-py3-none-any.whl``: the Python package (the operator and the CLI for
  people, ``vault-sts-operator`` and ``kubectl-vaultsts``), for ``pipx install`` (docs/install.md).
* ``vault-sts-operator-<chart version>.tgz``: ``helm package charts/vault-sts-operator``.
* ``vault-sts-operator-image-<appVersion>.oci.tar``: the operator image as ``make image`` builds it
  (devstack/image.py, from the Dockerfile), tagged ``vault-sts-operator:<appVersion>`` (the chart's
  default ``image.repository`` and ``image.tag``) and saved with ``podman save --format oci-archive``.
  Push it with ``skopeo copy oci-archive:<file> docker://<registry>/vault-sts-operator:<appVersion>``
  or ``podman load -i <file>``.
* ``sbom.cdx.json``: the CycloneDX SBOM of ``make sbom`` (run by the Makefile before this module).
* ``SHA256SUMS``: ``sha256sum -c SHA256SUMS`` checks every file above.

``python -m devstack.dist [--out DIR]`` (the Makefile's ``dist`` target empties ``dist/`` first).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from devstack import image
from devstack.layout import REPO_ROOT, Binaries
from devstack.procs import StackError

CHART = REPO_ROOT / "charts" / "vault-sts-operator"
SUMS = "SHA256SUMS"
SBOM = "sbom.cdx.json"
IMAGE_NAME = "vault-sts-operator"  # the chart's default image.repository


def _log(message: str) -> None:
    print(f"[dist] {message}", file=sys.stderr, flush=True)


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        raise StackError(f"{' '.join(argv[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def _podman(*args: str) -> str:
    return _run(["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args], env=image.podman_env(),
                timeout=900)


def wheel(out: Path) -> Path:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(REPO_ROOT), "-w", str(out)], timeout=600)
    return out / f"vault_sts_operator-{version}-py3-none-any.whl"


def chart(out: Path) -> Path:
    helm = Binaries.discover().helm
    if helm is None:
        _run(["bash", str(REPO_ROOT / "devstack" / "build.sh"), "helm"], timeout=1800)
        helm = Binaries.discover().helm
    assert helm is not None
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    _run([str(helm), "package", str(CHART), "-d", str(out)], timeout=120)
    return out / f"vault-sts-operator-{version}.tgz"


def operator_image(out: Path) -> Path:
    app_version = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
    built = image.build()
    image.ensure_in_podman(built)
    tag = f"localhost/{IMAGE_NAME}:{app_version}"
    target = out / f"{IMAGE_NAME}-image-{app_version}.oci.tar"
    _podman("tag", built.reference, tag)
    try:
        _log(f"podman save --format oci-archive {built.reference} as {tag}")
        _podman("save", "--format", "oci-archive", "--output", str(target), tag)
    finally:
        _podman("untag", built.reference, tag)  # the build cache's storage keeps only its own tags
    return target


def write_sums(out: Path, files: list[Path]) -> Path:
    lines = []
    for path in sorted(files, key=lambda p: p.name):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        lines.append(f"{digest.hexdigest()}  {path.name}\n")
    sums = out / SUMS
    sums.write_text("".join(lines))
    return sums


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.dist", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist", help="where to write (default dist/)")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sbom = out / SBOM
    try:
        if not sbom.is_file():
            raise StackError(f"{sbom} is missing: `make sbom` writes it (`make dist` runs it first)")
        files = [wheel(out), chart(out), operator_image(out), sbom]
        for path in files:
            if not path.is_file():
                raise StackError(f"{path} was not written")
        files.append(write_sums(out, files))
    except StackError as exc:
        print(f"make dist failed: {exc}", file=sys.stderr)
        return 1
    for path in files:
        print(f"{path.stat().st_size:>12,}  {path.relative_to(out.parent) if out.parent in path.parents else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
