"""The built image (``make image``), run as a kubelet runs it: uid 65532 with no passwd entry.

Issue 9: podman adds a passwd entry for the image's user unless told not to (``--passwd=false``),
which hid a crash: kopf's ``detect_own_id`` called ``getpass.getuser()`` and died with
``KeyError: 'getpwuid(): uid not found: 65532'`` before the operator did anything. Here the image
runs with no network and no Kubernetes credentials: it must get past kopf's start and stop at
authentication, not at its own identity.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from devstack import image


@pytest.fixture(scope="module")
def built() -> image.Built:
    found = image.cached()
    assert found is not None, "the image for these sources is not built: run `make image`"
    image.ensure_in_podman(found)
    return found


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "--runtime", "runc", *args], env=image.podman_env(), capture_output=True,
                          text=True, timeout=120, check=False)


def _run(built: image.Built, *args: str, entrypoint: str | None = None, detach: bool = False,
         name: str = "") -> subprocess.CompletedProcess[str]:
    return _podman("run", *(["--detach", "--name", name] if detach else ["--rm"]), "--passwd=false",
                   "--network=none", "--read-only", "--tmpfs", "/tmp",
                   *(["--entrypoint", entrypoint] if entrypoint else []), built.reference, *args)


def test_the_image_user_has_no_passwd_entry(built: image.Built) -> None:
    done = _run(built, "-c", "import getpass; getpass.getuser()", entrypoint="python3")
    assert done.returncode != 0
    assert "getpwuid(): uid not found: 65532" in done.stderr


def test_the_operator_gets_past_its_peering_identity_without_pod_id(built: image.Built) -> None:
    name = f"vso-image-test-{uuid.uuid4().hex[:8]}"
    started = _run(built, "run", "--all-namespaces", "--liveness=", "--metrics-port=0", detach=True, name=name)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 60
        while True:  # it crashes at once, or keeps retrying to log in to Kubernetes
            logs = _podman("logs", name)
            output = logs.stdout + logs.stderr
            if "getpwuid" in output or "credentials" in output.lower() or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        _podman("rm", "--force", "--time", "0", name)
    assert "getpwuid" not in output, output[-3000:]
    assert "detect_own_id" not in output, output[-3000:]
    # it went on to authenticate to Kubernetes, which this sandbox (no network, no credentials) refuses
    assert "credentials" in output.lower() or "login" in output.lower(), output[-3000:]
