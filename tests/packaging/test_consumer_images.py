"""The Pod Identity consumer images (devstack/consumers), built daemonless and run by podman as a kubelet would:
uid 65532 with no passwd entry, a read-only root. Each program finds credentials in its environment through
its SDK's default chain, calls GetCallerIdentity on an STS emulator on this machine's loopback, and prints one
JSON line per call; without credentials, an ``ok: false`` line, and it goes on."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devstack import consumers, image
from devstack.consumers.images import GO_DIR, JS_DIR, PYTHON_SCRIPT, Image

ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def built() -> dict[str, Image]:
    return consumers.build_images()


@pytest.fixture(scope="module")
def emulator() -> Iterator[dict[str, str]]:
    """A fresh STS emulator on loopback with one user, one role, and credentials AssumeRole issued for it."""
    proc = subprocess.Popen([sys.executable, "-m", "devstack.sts_emulator", "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        from devstack.sts_emulator.admin import EmulatorAdmin

        admin = EmulatorAdmin(url)
        admin.wait_healthy()
        admin.create_user("consumer", account=ACCOUNT)
        key = admin.create_access_key("consumer")
        role = f"arn:aws:iam::{ACCOUNT}:role/app"
        admin.create_role(role, [f"arn:aws:iam::{ACCOUNT}:user/consumer"])
        sts = boto3.client("sts", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                           aws_secret_access_key=key["SecretAccessKey"])
        issued = sts.assume_role(RoleArn=role, RoleSessionName="consumer", DurationSeconds=900)["Credentials"]
        yield {"url": url, "AWS_ACCESS_KEY_ID": issued["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": issued["SecretAccessKey"], "AWS_SESSION_TOKEN": issued["SessionToken"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _manifest(archive: Image) -> tuple[dict[str, Any], dict[str, Any]]:
    with tarfile.open(archive.archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
    return manifest, config


def test_the_archives_name_their_inputs_and_run_as_an_unprivileged_user(built: dict[str, Image]) -> None:
    assert set(built) == {"go", "js", "java"}
    for sdk, found in built.items():
        manifest, config = _manifest(found)
        assert manifest["RepoTags"] == [found.reference]
        assert found.reference.startswith(f"vso.local/consumer-{sdk}:")
        assert config["config"]["User"] == "65532:65532"
        assert len(manifest["Layers"]) == len(config["rootfs"]["diff_ids"]) == (1 if sdk == "go" else 2)
    assert _manifest(built["java"])[1]["config"]["Entrypoint"][-1] == "Consumer"
    assert _manifest(built["go"])[1]["config"]["Entrypoint"] == ["/consumer"]
    assert _manifest(built["js"])[1]["config"]["Entrypoint"] == ["/usr/bin/node", "/app/consumer.mjs"]
    # pinned: the Go module graph by go.sum, the npm tree by its lockfile (no version range resolved at build time)
    assert (GO_DIR / "go.sum").is_file()
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@aws-sdk/client-sts"]["version"] == \
        json.loads((JS_DIR / "package.json").read_text())["dependencies"]["@aws-sdk/client-sts"]
    # a second build is a cache hit: same reference, same archive
    assert consumers.build_images() == built


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "--runtime", "runc", *args], env=image.podman_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _run(argv: list[str], env: dict[str, str], seconds: float) -> list[dict[str, Any]]:
    """Run for ``seconds`` then stop it (SIGTERM: every consumer exits on it); its JSON lines."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**image.podman_env(), **env})
    time.sleep(seconds)
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    lines = [json.loads(raw) for raw in out.splitlines() if raw.startswith("{")]
    assert lines, f"no JSON line from {argv[-1]}:\n{out[-2000:]}\n{err[-2000:]}"
    return lines


def _environments(emulator: dict[str, str]) -> list[tuple[bool, dict[str, str]]]:
    base = {"AWS_ENDPOINT_URL_STS": emulator["url"], "AWS_REGION": "us-east-1", "INTERVAL": "1",
            "AWS_EC2_METADATA_DISABLED": "true"}
    creds = {k: v for k, v in emulator.items() if k.startswith("AWS_")}
    return [(True, {**base, **creds}), (False, base)]


def _check(sdk: str, lines: list[dict[str, Any]], with_credentials: bool, emulator: dict[str, str]) -> None:
    first = lines[0]
    assert first["sdk"] == sdk and abs(first["t"] - time.time()) < 60, first
    if with_credentials:
        assert first["ok"] is True, first
        assert first["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/app/consumer"
        assert first["access_key_id"] == emulator["AWS_ACCESS_KEY_ID"]
        assert len(lines) >= 2  # it loops
    else:
        assert first["ok"] is False and first["error"], first
    assert emulator["AWS_SECRET_ACCESS_KEY"] not in json.dumps(lines)


@pytest.mark.parametrize("sdk", ["go", "js", "java"])
def test_the_image_calls_sts_with_its_sdks_default_chain(
        sdk: str, built: dict[str, Image], emulator: dict[str, str]) -> None:
    found = built[sdk]
    if _podman("image", "exists", found.reference).returncode != 0:
        loaded = _podman("load", "--input", str(found.archive), timeout=300)
        assert loaded.returncode == 0, loaded.stderr
    for with_credentials, env in _environments(emulator):
        argv = ["podman", "--runtime", "runc", "run", "--rm", "--passwd=false", "--read-only", "--network=host",
                *(arg for name in env for arg in ("--env", name)), found.reference]
        _check(sdk, _run(argv, env, seconds=3 if sdk == "go" else 6), with_credentials, emulator)


def test_the_python_consumer_calls_sts_with_boto3s_default_chain(emulator: dict[str, str]) -> None:
    """The Python consumer runs in the operator's image (its boto3); here with this checkout's boto3."""
    for with_credentials, env in _environments(emulator):
        argv = [sys.executable, "-c", PYTHON_SCRIPT.read_text()]
        _check("python", _run(argv, {**env, "AWS_CONFIG_FILE": "/nonexistent",
                                     "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}, seconds=3),
               with_credentials, emulator)
