"""Consumer images for the Pod Identity tests: one program per AWS SDK, each with its default credential chain.

Every consumer calls STS GetCallerIdentity every ``INTERVAL`` seconds (default 10) against the endpoint in
``AWS_ENDPOINT_URL_STS`` and the region in ``AWS_REGION``, and prints one JSON line per call::

    {"sdk": "go", "ok": true, "arn": "...", "access_key_id": "ASIA...", "expiration": "...Z", "t": 1796420232}
    {"sdk": "js", "ok": false, "error": "CredentialsProviderError: ...", "t": 1796420241}

(``expiration`` only where the credentials carry one.) None has code for this operator: whatever reaches
them reaches them through their SDK's own chain (environment, container credentials, ...).

| sdk | image | program |
|---|---|---|
| python | the operator's image (``VSO_IMAGE``; boto3 is in it) | ``python_consumer.py``, passed with ``python3 -c`` |
| go | ``vso.local/consumer-go:<hash>``, ``FROM scratch`` | ``go/main.go``: aws-sdk-go-v2 ``config`` + ``service/sts`` |
| js | ``vso.local/consumer-js:<hash>``, Debian trixie's nodejs | ``js/consumer.mjs``: ``@aws-sdk/client-sts`` v3 |
| java | ``vso.local/consumer-java:<hash>``, bookworm's JRE 17 | ``java/Consumer.java``: Java SDK v2 ``sts`` |

``build_all(stack)`` builds (or finds cached) and imports them into the node; ``container()`` is the pod
spec's container for one of them. ``make consumers`` (``python -m devstack.consumers``) builds them and
loads them into a running stack.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.consumers.images import BUILDERS, PYTHON_SCRIPT, Image
from devstack.env import StackEnv
from devstack.procs import StackError

SDKS = ("python", "go", "js", "java")
DEFAULT_REGION = "us-east-1"


def build_images(sdks: tuple[str, ...] = ("go", "js", "java")) -> dict[str, Image]:
    """Build (or find in the cache) the image archives; no stack needed."""
    return {sdk: BUILDERS[sdk]() for sdk in sdks}


def _ctr(address: str, *args: str, timeout: float = 300) -> str:
    """``ctr`` against the node's containerd, run in the socket's directory with a relative address (a deep
    stack directory would push the socket path past the 107 bytes a unix address holds)."""
    sock = Path(address)
    done = subprocess.run(["ctr", "--address", sock.name, "--namespace", "k8s.io", *args], cwd=sock.parent,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise StackError(f"ctr {' '.join(args[:3])} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def load(stack: StackEnv, images: Mapping[str, Image]) -> None:
    """Import each image the node's containerd lacks (its store is a tmpfs: a restarted node has none)."""
    address = stack.extra.get("VSO_CONTAINERD_ADDRESS")
    if not address:
        raise StackError(".stack/env exports no VSO_CONTAINERD_ADDRESS: the stack runs without a node")
    present = set(_ctr(address, "images", "ls", "--quiet").split())
    for image in images.values():
        if image.reference not in present:
            _ctr(address, "images", "import", str(image.archive))


def build_all(stack: StackEnv) -> dict[str, str]:
    """sdk -> image reference, every one present in the stack's node (built and imported as needed)."""
    operator_image = stack.extra.get("VSO_IMAGE")
    if not operator_image:
        raise StackError(".stack/env exports no VSO_IMAGE: run `make image` (the Python consumer runs in it)")
    images = build_images()
    load(stack, images)
    return {"python": operator_image, **{sdk: image.reference for sdk, image in images.items()}}


def restricted_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "runAsUser": 65532, "runAsGroup": 65532, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def container(
    sdk: str,
    image: str,
    *,
    sts_endpoint: str,
    region: str = DEFAULT_REGION,
    interval: float = 10,
    env: Mapping[str, str] | None = None,
    name: str = "app",
) -> dict[str, Any]:
    """The container running consumer ``sdk`` from ``image`` (``build_all(...)[sdk]``): STS at
    ``sts_endpoint`` as pods reach it (``VSO_NODE_STS_ENDPOINT``), plus ``env`` (credentials, or the
    container-credentials variables). IMDS is off: no SDK waits on 169.254.169.254 at the end of its chain."""
    if sdk not in SDKS:
        raise ValueError(f"unknown consumer {sdk!r}: one of {', '.join(SDKS)}")
    variables = {"AWS_ENDPOINT_URL_STS": sts_endpoint, "AWS_REGION": region, "AWS_DEFAULT_REGION": region,
                 "AWS_EC2_METADATA_DISABLED": "true", "INTERVAL": f"{interval:g}", **(env or {})}
    spec: dict[str, Any] = {
        "name": name, "image": image, "imagePullPolicy": "Never",
        "env": [{"name": k, "value": v} for k, v in variables.items()],
        "securityContext": restricted_security_context(),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"memory": "256Mi" if sdk == "java" else "160Mi"}},
    }
    if sdk == "python":
        spec["command"] = ["python3", "-c", PYTHON_SCRIPT.read_text()]
    return spec
