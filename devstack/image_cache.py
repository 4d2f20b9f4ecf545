"""Which operator image the current sources make, and whether ``make image`` already built it.

The image's tag is a hash of every input (Dockerfile, locks, install script, package sources, base recipe);
its archive is cached under ``~/.cache/vault-sts-operator/images``. devstack/image.py builds it,
devstack/stack.py imports a cached one into the node when the node starts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack.layout import REPO_ROOT
from devstack.pause import cache_dir

REPOSITORY = "vso.local/vault-sts-operator"
SUITE = "bookworm"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
MIRRORS = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
BASE_RECIPE = json.dumps(
    {"variant": "minbase", "suite": SUITE, "include": BASE_PACKAGES, "mirrors": MIRRORS, "python_symlink": True}
)
# what the image is made of: any change here makes a new image (and a new tag)
INPUTS = ("Dockerfile", "pyproject.toml", "README.md", "requirements", "scripts/image_install.sh", "operator")


@dataclass(frozen=True)
class Built:
    reference: str
    archive: Path


def _input_files() -> Iterator[Path]:
    for name in INPUTS:
        path = REPO_ROOT / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and not f.name.endswith((".pyc", ".egg-info")) \
                        and not any(p.endswith(".egg-info") for p in f.parts):
                    yield f


def inputs_hash() -> str:
    digest = hashlib.sha256(BASE_RECIPE.encode())
    for f in _input_files():
        digest.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def archive_for(key: str) -> Path:
    return cache_dir() / f"operator-{key}.tar"


def cached() -> Built | None:
    """The image archive for the current sources, if ``make image`` built it."""
    key = inputs_hash()
    archive = archive_for(key)
    return Built(f"{REPOSITORY}:{key}", archive) if archive.is_file() else None
