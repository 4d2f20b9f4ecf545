"""``make image``: the project's Dockerfile, built without a Docker daemon, loaded into the node.

* The base: no image registry is reachable, so the Dockerfile's base (``python:3.11-slim``) is a
  Debian bookworm rootfs built here from Debian's packages (``mmdebstrap --variant=minbase
  --include=python3,python3-venv,python3-pip,ca-certificates`` plus a ``python`` symlink), imported
  with ``podman import`` and tagged ``docker.io/library/python:3.11-slim`` in a podman storage of the
  build cache's own (never the machine's, never exported). The Dockerfile stays unchanged, so a plain
  ``docker build`` still uses the real base.
* The build: ``podman --runtime runc build --pull=never --network=host``, with the CA bundle that
  ``pip config list`` names mounted read-only at the system bundle's path for the RUN steps only
  (pip reaches PyPI through it; it is never copied into a layer). podman gets a containers.conf with
  ``default_ulimits = []`` (setrlimit is refused here) and a storage.conf under the cache.
* The result: ``podman save`` to a docker-archive under ``~/.cache/vault-sts-operator/images``, named
  by a hash of every input (Dockerfile, locks, install script, package sources, base recipe), so a
  warm run costs a hash. ``ctr images import`` loads it into the node's containerd (``k8s.io``
  namespace); ``.stack/env`` exports the reference as ``VSO_IMAGE``.

``python -m devstack.image [--no-load] [--print-size]``
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack import node, stack
from devstack.handle import Stack
from devstack.image_cache import (
    BASE_PACKAGES,
    BASE_RECIPE,
    MIRRORS,
    REPOSITORY,
    SUITE,
    Built,
    archive_for,
    cached,
    inputs_hash,
)
from devstack.layout import REPO_ROOT
from devstack.pause import cache_dir
from devstack.procs import StackError

DOCKERFILE_BASE = "docker.io/library/python:3.11-slim"
KEEP_ARCHIVES = 4  # image archives kept in the cache (several checkouts share it)


def _log(message: str) -> None:
    print(f"[image {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- podman plumbing


def _podman_dir() -> Path:
    return cache_dir().parent / "podman"


def podman_env() -> dict[str, str]:
    """Cache-local podman configuration: nothing under /etc is read for storage or written."""
    root = _podman_dir()
    (root / "storage").mkdir(parents=True, exist_ok=True)
    (root / "runroot").mkdir(parents=True, exist_ok=True)
    conf, storage = root / "containers.conf", root / "storage.conf"
    conf.write_text(
        "[containers]\n"
        "default_ulimits = []  # setrlimit is refused on this machine\n"
        "\n[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "none"\n'
    )
    storage.write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{root / "storage"}"\n'
        f'runroot = "{root / "runroot"}"\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}


def _podman(*args: str, timeout: float = 900, capture: bool = True) -> str:
    argv = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args]
    done = subprocess.run(argv, env=podman_env(), capture_output=capture, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = (done.stderr or "")[-3000:] if capture else ""
        raise StackError(f"{' '.join(argv[:6])} ... failed ({done.returncode}):\n{tail}")
    return done.stdout or ""


@contextmanager
def _lock() -> Iterator[None]:
    """One image build at a time per cache (several checkouts share it)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".image.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def pip_ca_bundle() -> Path | None:
    """The CA bundle this machine's pip uses (``pip config list``: ``...cert='<path>'``)."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.split(".")[-1] == "cert":
            path = Path(value.strip().strip("'\""))
            if path.is_file():
                return path
    return None


def base_archive() -> Path:
    """The Debian rootfs tarball (cached by recipe)."""
    key = hashlib.sha256(BASE_RECIPE.encode()).hexdigest()[:16]
    out = cache_dir() / f"base-{SUITE}-{key}.tar"
    if out.is_file():
        return out
    if shutil.which("mmdebstrap") is None:
        raise StackError("mmdebstrap is missing (`bash scripts/system-deps.sh demo` installs it as root: "
                         "apt-get install mmdebstrap)")
    _log(f"mmdebstrap {SUITE} ({BASE_PACKAGES}): the image's base, from Debian's packages")
    started = time.monotonic()
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.tar")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "--quiet",
         '--customize-hook=ln -sf python3 "$1/usr/bin/python"',
         SUITE, str(tmp), *MIRRORS],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1200, check=False,
    )
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise StackError(f"mmdebstrap failed ({done.returncode}):\n{done.stderr[-3000:]}")
    tmp.rename(out)
    _log(f"base rootfs built in {time.monotonic() - started:.0f}s ({out.stat().st_size / 1e6:.0f} MB)")
    return out


def _ensure_base_image() -> None:
    archive = base_archive()
    marker = f"vso.base.archive={archive.name}"
    found = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .Labels}}", DOCKERFILE_BASE],
        env=podman_env(), capture_output=True, text=True, check=False,
    )
    if found.returncode == 0 and archive.name in found.stdout:
        return
    _podman("import", "--change", f"LABEL {marker}", "--change", 'CMD ["python3"]', str(archive), DOCKERFILE_BASE)


def build() -> Built:
    """Build the image for the current sources unless its archive is cached."""
    hit = cached()
    if hit is not None:
        _log(f"cached: {hit.reference} ({hit.archive})")
        return hit
    with _lock():
        hit = cached()
        if hit is not None:
            return hit
        key = inputs_hash()
        reference = f"{REPOSITORY}:{key}"
        _ensure_base_image()
        ca = pip_ca_bundle()
        volumes = ["--volume", f"{ca}:/etc/ssl/certs/ca-certificates.crt:ro"] if ca else []
        _log(f"podman build {reference} (CA bundle for pip: {ca or 'none'}, read-only, build time only)")
        started = time.monotonic()
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                  check=False)
        _podman(
            "build", "--pull=never", "--network=host", "--layers", *volumes,
            "--build-arg", f"REVISION={revision.stdout.strip() or 'unknown'}",
            "--tag", reference, "--file", str(REPO_ROOT / "Dockerfile"), str(REPO_ROOT),
            capture=False,
        )
        _log(f"built in {time.monotonic() - started:.0f}s; saving")
        archive = archive_for(key)
        tmp = archive.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        _podman("save", "--format", "docker-archive", "--output", str(tmp), reference)
        tmp.rename(archive)
        _prune(keep=KEEP_ARCHIVES)
        return Built(reference, archive)


def _prune(keep: int) -> None:
    """Keep the newest ``keep`` image archives (several checkouts share the cache) and drop the podman
    tags of the others, so the cache does not grow by an image per source edit."""
    archives = sorted(cache_dir().glob("operator-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[keep:]:
        old.unlink(missing_ok=True)
        tag = old.stem.removeprefix("operator-")
        subprocess.run(["podman", "rmi", f"{REPOSITORY}:{tag}"], env=podman_env(), capture_output=True, check=False)


def ensure_in_podman(built: Built) -> None:
    """Make ``built.reference`` runnable by podman (``podman load`` from the archive if missing)."""
    found = subprocess.run(["podman", "image", "exists", built.reference], env=podman_env(), check=False)
    if found.returncode != 0:
        _podman("load", "--input", str(built.archive))


def size_bytes(reference: str) -> int:
    out = _podman("image", "inspect", "--format", "{{.Size}}", reference)
    return int(out.strip())


def load_into_stack(built: Built) -> bool:
    """Import into the running stack's node and rewrite ``.stack/env``; False when no stack runs."""
    handle = Stack.default()
    if not node.enabled() or not stack.is_healthy(handle):
        return False
    if node.loaded_image(handle.layout) != built.reference:
        seconds = node.import_image(handle, built.archive, built.reference)
        _log(f"imported {built.reference} into the node ({seconds:.1f}s)")
    stack.up(handle)  # healthy: rewrites .stack/env (VSO_IMAGE) without restarting anything
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-load", action="store_true", help="only build (or find) the archive")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        built = build()
        size = built.archive.stat().st_size
        _log(f"{built.reference}: archive {size / 1e6:.0f} MB ({time.monotonic() - started:.1f}s)")
        if not args.no_load:
            if load_into_stack(built):
                _log("loaded into the node; .stack/env exports VSO_IMAGE")
            else:
                _log("no stack runs: `make stack` imports it when the node starts")
    except StackError as exc:
        print(f"make image failed: {exc}", file=sys.stderr)
        return 1
    print(built.reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
