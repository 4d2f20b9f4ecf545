"""The node's pause (sandbox) image, built here: no image registry is reachable.

A static binary from a few lines of C (sleeps until SIGINT/SIGTERM, reaps orphans when the pod shares
its pid namespace), packed ``FROM scratch`` as a docker-archive tarball that ``ctr images import``
reads. Cached under ``~/.cache/vault-sts-operator/images`` by a hash of its source.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

REFERENCE = "vso.local/pause:3.10"

SOURCE = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"""


def cache_dir() -> Path:
    return Path(os.environ.get("VSO_CACHE", Path.home() / ".cache" / "vault-sts-operator")) / "images"


def _tar_bytes(members: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_archive(reference: str, files: list[tuple[str, bytes, int]], config: dict[str, object]) -> bytes:
    """A one-layer docker-archive (``docker save`` format) holding ``files``."""
    layer = _tar_bytes(files)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    image_config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "devstack/pause.py"}],
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(image_config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [reference], "Layers": [layer_name]}]).encode()
    return _tar_bytes(
        [(config_name, image_config, 0o644), (layer_name, layer, 0o644), ("manifest.json", manifest, 0o644)]
    )


def ensure() -> Path:
    """Build (or reuse) the pause image archive; return its path."""
    key = hashlib.sha256((SOURCE + REFERENCE).encode()).hexdigest()[:16]
    out = cache_dir() / f"pause-{key}.tar"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, binary = Path(tmp) / "pause.c", Path(tmp) / "pause"
        src.write_text(SOURCE)
        subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(src)], check=True)
        archive = docker_archive(
            REFERENCE, [("pause", binary.read_bytes(), 0o755)], {"Entrypoint": ["/pause"], "User": "65535:65535"}
        )
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_bytes(archive)
    tmp_out.rename(out)
    return out
