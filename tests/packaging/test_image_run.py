"""The built image (``make image``), run as a kubelet runs it: uid 65532 with no passwd entry.

Issue 9: podman adds a passwd entry for the image's user unless told not to (``--passwd=false``),
which hid a crash: kopf's ``detect_own_id`` called ``getpass.getuser()`` and died with
``KeyError: 'getpwuid(): uid not found: 65532'`` before the operator did anything. kopf is retired
(issue 18), and the operator's own instance id is ``<hostname>-<pid>``; the uid without a passwd
entry stays the precondition. Here the image runs with no network and no Kubernetes credentials: it
must start, find no cluster to log in to, and stop with status 1 and a message that says so (the
kubelet then restarts it), never crash on its own identity or run on silently.
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


def _state(name: str) -> tuple[str, int]:
    inspected = _podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)
    status, _, code = inspected.stdout.strip().partition(" ")
    return status, int(code or 0)


def test_the_operator_without_a_cluster_stops_with_a_clear_message(built: image.Built) -> None:
    name = f"vso-image-test-{uuid.uuid4().hex[:8]}"
    started = _run(built, "run", "--all-namespaces", "--liveness=", "--metrics-port=0", detach=True, name=name)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 90
        while (state := _state(name))[0] not in ("exited", "stopped") and time.monotonic() < deadline:
            time.sleep(1)
        logs = _podman("logs", name)
        output = logs.stdout + logs.stderr
    finally:
        _podman("rm", "--force", "--time", "0", name)
    assert "getpwuid" not in output and "KeyError" not in output, output[-3000:]
    assert state == ("exited", 1), (state, output[-3000:])
    # it says why, once, before starting anything: no cluster to log in to (no in-cluster ServiceAccount, no
    # kubeconfig); no task is started to fail five times with a traceback each
    assert "cannot start: no usable Kubernetes credentials: no in-cluster ServiceAccount and no kubeconfig found" \
        in output, output[-3000:]
    assert "Traceback" not in output and "vault-sts-operator started" not in output, output[-3000:]
