"""The Pod Identity node agent's own cost: memory per pod, CPU per request, and what it asks of the operator.

Issue 20 asks for "agent RSS and CPU per 100 pods" and "requests to the operator and STS calls per pod per
hour". No Kubernetes is needed for that: the agent is one process talking HTTP to the SDKs and HTTPS to one
operator endpoint. This benchmark runs `vault-sts-operator agent serve` as its own process, with the chart's
flags but on loopback, and plays the operator's `POST /v1/pod-identity/credentials` itself (an aiohttp HTTPS
server in this process, certificate from `services.self_signed_cert`, 10 credentials, every request counted).
Pod tokens are unsigned JWT-shaped strings of a projected token's size: the agent only pre-checks them.

Phases, on one agent process per run (`--runs`, default 2, to see the spread):

1. idle RSS after start (and the agent's CPU over `--idle-seconds`);
2. first fetch of 100, then 300, then 1,000 pods (each goes to the operator): RSS after each step;
3. cached: `--requests` requests from those pods again, within the 300-s re-validation window (no upstream call);
4. upstream: `--requests` first fetches with fresh tokens (each one upstream call, as a re-validation is);
5. latency at concurrency 1 (`--serial-requests` of each kind), besides the one under load.

CPU is utime+stime of the agent from /proc/<pid>/stat, RSS is VmRSS (and VmHWM) from /proc/<pid>/status. The
client opens a new connection per request, as pods do (each pod's SDK asks about once per 40 minutes), and starts
at most `--pace` (800) requests per second, under the agent's --rate of 1000/s (its 429s cost less). The
figures per 100 pods per hour are derived from the measured costs and the SDKs' cadence (`assumptions`).
Human progress goes to stderr; stdout gets the JSON, also written to `--output`.

    .venv/bin/python -m benchmarks.pod_identity_agent --output benchmarks/results-pod-identity-agent.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

CLK_TCK = os.sysconf("SC_CLK_TCK")
AUDIENCE = "vaultsts.io/pod-identity"
UPSTREAM_PATH = "/v1/pod-identity/credentials"
AGENT_TOKEN = "bench-agent-token"  # not a JWT: the fake operator compares it, the agent passes it on as is

# The SDKs' cadence in this mode (docs/design/pod-identity.md 1.2, 1.4, 6.1; docs/pod-identity.md "Timing").
DURATION_SECONDS = 3600
RENEW_BEFORE_SECONDS = 1200  # the default max(20m, durationSeconds/3)
REVALIDATE_SECONDS = 300  # the chart's podIdentity.agent.revalidateSeconds and the operator's revalidateAfter
# The chart's agent flags (charts/vault-sts-operator/values.yaml podIdentity.agent).
CHART_FLAGS = ("--revalidate-seconds=300", "--refresh-margin-seconds=1080", "--rate=1000", "--burst=500",
               "--max-cache-entries=10000")


def log(message: str) -> None:
    print(f"[pod-identity-agent {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- pod tokens and the fake operator


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pod_token(kind: str, index: int, now: float) -> str:
    """An unsigned token shaped and sized like a kubelet-projected one (~1.2 KB): the agent decodes its payload,
    hashes the whole string, and never verifies the signature (the operator would)."""
    namespace, pod = f"bench-{index % 10}", f"{kind}-{index}"
    claims = {
        "aud": [AUDIENCE], "exp": int(now) + 3600, "iat": int(now), "nbf": int(now),
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": hashlib.sha256(f"{kind}/{index}/{now}".encode()).hexdigest()[:36],
        "kubernetes.io": {"namespace": namespace, "node": {"name": "bench-node", "uid": "0" * 36},
                          "pod": {"name": pod, "uid": f"{index:036d}"},
                          "serviceaccount": {"name": "app", "uid": "1" * 36}},
        "sub": f"system:serviceaccount:{namespace}:app/{pod}",  # unique per pod: the fake operator keys on it
    }
    header = _b64(json.dumps({"alg": "RS256", "kid": "bench"}).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{_b64(hashlib.sha512(payload.encode()).digest() * 4)[:342]}"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


@dataclass
class FakeOperator:
    """The operator's Pod Identity endpoint: each pod (its token's `sub`) gets one of `credentials` credentials,
    each with a 3600-s lifetime and a session token of an STS one's size."""

    credentials: int = 10
    requests: int = 0
    refused: int = 0
    _answers: dict[int, dict[str, Any]] = field(default_factory=dict)

    def answer(self, index: int) -> dict[str, Any]:
        if index not in self._answers:
            expiration = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=DURATION_SECONDS)
            self._answers[index] = {
                "AccessKeyId": f"ASIABENCH{index:011d}", "SecretAccessKey": _b64(os.urandom(30)),
                "Token": _b64(os.urandom(600)),  # an STS session token is 700-1000 characters
                "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "credential": f"bench-{index}/cred-{index}", "revalidateAfter": REVALIDATE_SECONDS,
            }
        return self._answers[index]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {AGENT_TOKEN}":
            self.refused += 1
            return web.json_response({"code": "AgentTokenInvalid", "message": "bench"}, status=401)
        body = await request.json()
        sub = str(_claims(body["token"]).get("sub", ""))
        index = int(hashlib.sha256(sub.encode()).hexdigest(), 16) % self.credentials
        return web.json_response(self.answer(index))


@contextlib.asynccontextmanager
async def fake_operator(operator: FakeOperator, cert_dir: Path) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    app = web.Application()
    app.router.add_post(UPSTREAM_PATH, operator.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        port: int = runner.addresses[0][1]
        yield port
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- the agent process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class AgentProcess:
    python: str
    work: Path
    upstream_port: int
    port: int = field(default_factory=free_port)
    probe_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [self.python, "-m", "vault_sts_operator", "agent", "serve", f"--listen=127.0.0.1:{self.port}",
                f"--probe-listen=127.0.0.1:{self.probe_port}",
                f"--operator-url=https://127.0.0.1:{self.upstream_port}", "--server-name=localhost",
                f"--ca-file={self.work / 'tls.crt'}", f"--token-file={self.work / 'agent-token'}",
                f"--audience={AUDIENCE}", *CHART_FLAGS, "--log-format=text", "--log-level=info"]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        with open(self.work / "agent.log", "wb") as out:
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.work)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the agent exited with {self.proc.returncode}: {self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{self.probe_port}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the agent was not ready within {timeout} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.work / "agent.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _status(self) -> dict[str, int]:
        assert self.proc is not None
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
        return out

    def rss_mb(self) -> float:
        return self._status()["VmRSS"] / 1024

    def hwm_mb(self) -> float:
        return self._status()["VmHWM"] / 1024

    def cpu_s(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


# --------------------------------------------------------------------------- load


@dataclass
class Phase:
    requests: int
    seconds: float
    agent_cpu_s: float
    upstream_requests: int
    statuses: dict[str, int]
    latencies_ms: list[float]

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(self.requests / self.seconds, 1),
            "agent_cpu_s": round(self.agent_cpu_s, 2),
            "agent_cpu_s_per_1000": round(self.agent_cpu_s / self.requests * 1000, 3),
            "upstream_requests": self.upstream_requests,
            "statuses": self.statuses,
            "latency_p50_ms": round(percentile(ordered, 50), 2),
            "latency_p99_ms": round(percentile(ordered, 99), 2),
            "latency_max_ms": round(ordered[-1], 2),
        }


def percentile(ordered: Sequence[float], pct: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(pct) - 1]


async def drive(agent: AgentProcess, operator: FakeOperator, tokens: Sequence[str], concurrency: int,
                pace: float) -> Phase:
    """Each token asked once, `concurrency` at a time, each on a new connection (a pod's SDK keeps none open
    across fetches 40 minutes apart), started at most `pace` per second: the agent answers 429 above its
    --rate (1000/s, burst 500), and the 429s would be cheaper than the answers measured."""
    url = f"http://127.0.0.1:{agent.port}/v1/credentials"
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    queue = enumerate(tokens)
    connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
    origin = time.perf_counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        for slot, token in queue:
            wait = origin + slot / pace - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.perf_counter()
            async with session.get(url, headers={"Authorization": token}) as response:
                await response.read()
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[str(response.status)] += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        upstream_before, cpu_before, started = operator.requests, agent.cpu_s(), time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = agent.cpu_s() - cpu_before
    return Phase(requests=len(tokens), seconds=seconds, agent_cpu_s=cpu,
                 upstream_requests=operator.requests - upstream_before, statuses=dict(statuses),
                 latencies_ms=latencies)


# --------------------------------------------------------------------------- one run


async def one_run(args: argparse.Namespace, python: str, run: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vso-agent-bench-") as tmp:
        work = Path(tmp)
        subprocess.run([python, "-m", "vault_sts_operator.services.self_signed_cert", str(work), "localhost"],
                       check=True, cwd=work)
        (work / "agent-token").write_text(AGENT_TOKEN + "\n")
        operator = FakeOperator(credentials=args.credentials)
        async with fake_operator(operator, work) as upstream_port:
            agent = AgentProcess(python=python, work=work, upstream_port=upstream_port)
            agent.start()
            try:
                return await measure(args, agent, operator, run)
            finally:
                agent.stop()


async def measure(args: argparse.Namespace, agent: AgentProcess, operator: FakeOperator, run: int) -> dict[str, Any]:
    await agent.wait_ready()
    await asyncio.sleep(args.settle)
    rss: dict[str, float] = {"idle": agent.rss_mb()}
    cpu_before = agent.cpu_s()
    await asyncio.sleep(args.idle_seconds)
    idle_cpu = agent.cpu_s() - cpu_before
    log(f"run {run}: agent pid {agent.proc.pid if agent.proc else '?'}, idle RSS {rss['idle']:.1f} MiB, "
        f"{idle_cpu:.2f} CPU-s in {args.idle_seconds:.0f} s idle")

    now = time.time()
    pods = [pod_token("pod", i, now) for i in range(max(args.pod_steps))]
    first: list[dict[str, Any]] = []
    done = 0
    for step in sorted(args.pod_steps):
        phase = await drive(agent, operator, pods[done:step], args.concurrency, args.pace)
        done = step
        await asyncio.sleep(args.settle)
        rss[f"pods_{step}"] = agent.rss_mb()
        first.append({"pods": step, **phase.summary()})
        log(f"run {run}: {step} pods fetched once: RSS {rss[f'pods_{step}']:.1f} MiB")

    cached_tokens = [pods[i % len(pods)] for i in range(args.requests)]
    cached = await drive(agent, operator, cached_tokens, args.concurrency, args.pace)
    log(f"run {run}: cached {json.dumps(cached.summary())}")
    fresh = [pod_token("fresh", i, now) for i in range(args.requests + args.serial_requests)]
    upstream = await drive(agent, operator, fresh[:args.requests], args.concurrency, args.pace)
    log(f"run {run}: upstream {json.dumps(upstream.summary())}")
    serial_cached = await drive(agent, operator, pods[:args.serial_requests], 1, args.pace)
    serial_upstream = await drive(agent, operator, fresh[args.requests:], 1, args.pace)
    await asyncio.sleep(args.settle)
    tokens_total = len(pods) + len(fresh)
    rss[f"tokens_{tokens_total}"] = agent.rss_mb()
    rss["peak_vmhwm"] = agent.hwm_mb()

    bad = {k: v for p in (*first, cached.summary(), upstream.summary()) for k, v in p["statuses"].items()
           if k != "200"}
    if bad or cached.upstream_requests or upstream.upstream_requests != upstream.requests or operator.refused:
        log(f"run {run}: WARNING: non-200 answers {bad}, cached phase upstream calls {cached.upstream_requests}, "
            f"upstream phase calls {upstream.upstream_requests}/{upstream.requests}, refused {operator.refused}")
    low = min(args.pod_steps)
    return {
        "run": run,
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        # The first step also pays once for the client session and TLS connections to the operator (up to 8):
        # the per-token figure is the growth from the first step to the end, over the most tokens (RSS moves
        # by whole pages and allocator arenas: 1,000 pods alone grow it by under 1 MiB).
        "rss_first_step_over_idle_mb": round(rss[f"pods_{low}"] - rss["idle"], 1),
        "rss_kb_per_pod_token": round((rss[f"tokens_{tokens_total}"] - rss[f"pods_{low}"]) * 1024
                                      / (tokens_total - low), 2),
        "idle_cpu_s": round(idle_cpu, 2),
        "idle_seconds": args.idle_seconds,
        "first_fetch": first,
        "cached": cached.summary(),
        "upstream": upstream.summary(),
        "serial_cached": serial_cached.summary(),
        "serial_upstream": serial_upstream.summary(),
        "operator_requests_total": operator.requests,
        "non_200": bad,
    }


# --------------------------------------------------------------------------- derived figures


def derived(run: dict[str, Any]) -> dict[str, Any]:
    """Per 100 pods per hour, from the measured per-request costs and the cadence of `assumptions()`."""
    cadence = assumptions()
    fetches = cadence["sdk_fetches_per_pod_per_hour"]
    cached_ms = run["cached"]["agent_cpu_s_per_1000"]  # CPU-ms per request = CPU-s per 1000
    upstream_ms = run["upstream"]["agent_cpu_s_per_1000"]
    idle_per_hour = run["idle_cpu_s"] / run["idle_seconds"] * 3600

    def scenario(upstream_per_pod: float, cached_per_pod: float) -> dict[str, Any]:
        cpu = 100 * (upstream_per_pod * upstream_ms + cached_per_pod * cached_ms) / 1000
        return {"agent_requests_per_pod_per_hour": round(upstream_per_pod + cached_per_pod, 2),
                "operator_requests_per_pod_per_hour": round(upstream_per_pod, 2),
                "agent_cpu_s_per_100_pods_per_hour": round(cpu, 3),
                "agent_cpu_percent_of_a_core_per_100_pods": round(cpu / 3600 * 100, 4)}

    frequent = 60  # a process asking every minute: only one fetch per 300 s goes to the operator
    return {
        "sdk_cadence": scenario(fetches, 0.0),
        "new_client_every_minute": scenario(3600 / REVALIDATE_SECONDS, frequent - 3600 / REVALIDATE_SECONDS),
        "agent_idle_cpu_s_per_hour": round(idle_per_hour, 2),
        # /proc counts CPU in clock ticks: an idle window of 0 ticks bounds the idle cost by one tick per window.
        "agent_idle_cpu_s_per_hour_upper_bound": round((run["idle_cpu_s"] + 1 / CLK_TCK) / run["idle_seconds"]
                                                       * 3600, 2),
        "sts_calls_per_pod_per_hour": {f"{n}_pods_per_credential": round(cadence["sts_calls_per_credential_per_hour"]
                                                                          / n, 3) for n in (1, 10)},
        "agent_rss_mb_per_100_pods": round(run["rss_kb_per_pod_token"] * 100 / 1024, 2),
    }


def assumptions() -> dict[str, Any]:
    issue_every = DURATION_SECONDS - RENEW_BEFORE_SECONDS
    return {
        "duration_seconds": DURATION_SECONDS,
        "renew_before_seconds": RENEW_BEFORE_SECONDS,
        "revalidate_seconds": REVALIDATE_SECONDS,
        "sts_calls_per_credential_per_hour": 3600 / issue_every,
        "sdk_fetches_per_pod_per_hour": 3600 / issue_every,
        "text": [
            "The operator issues each credential every durationSeconds - renewBefore = 2400 s (one STS call, "
            "whatever the number of pods or nodes): 1.5 STS calls per credential per hour; per pod that is 1.5 "
            "divided by the pods sharing the credential.",
            "An SDK fetches when its copy enters its refresh window (botocore 15 min, Go and JS 5 min before "
            "Expiration). The copy it got was issued at most 40 min earlier, so its next fetch falls after the "
            "next issue and returns that credential: in steady state every SDK fetches once per 2400 s (1.5 per "
            "hour), in step with the operator, one credential provider per pod.",
            "Each such fetch comes more than 300 s after the pod's previous one, so the agent's validation of the "
            "token has lapsed and the fetch goes to the operator: operator requests per pod per hour = SDK "
            "fetches = 1.5. The kubelet's token renewal (80 % of 3600 s) adds none: the new token is sent at the "
            "next fetch, which goes upstream anyway. The agent's own refresh of a copy (below 18 min) needs a "
            "cache hit and so does not happen at this cadence.",
            "new_client_every_minute: a pod whose process builds a new SDK client every minute (a cron'd CLI): "
            "60 agent requests per hour, of which one per 300 s goes upstream (12) and the rest are cache hits.",
            "CPU per request is measured on this machine with a new TCP connection per request; the per-hour "
            "figures are that cost times the request count, plus nothing for idle (reported apart).",
        ],
    }


# --------------------------------------------------------------------------- main


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(), "load_1m_at_start": load}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pod_identity_agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="runs, each with a fresh agent process")
    parser.add_argument("--pod-steps", default="100,300,1000",
                        type=lambda text: [int(n) for n in text.split(",") if n.strip()],
                        help="pods whose first fetch is made before each RSS reading (comma-separated, rising)")
    parser.add_argument("--requests", type=int, default=5000, help="requests in the cached and upstream phases")
    parser.add_argument("--serial-requests", type=int, default=500, help="requests of each kind at concurrency 1")
    parser.add_argument("--concurrency", type=int, default=10, help="requests at once")
    parser.add_argument("--pace", type=float, default=800.0,
                        help="requests started per second at most (below the agent's --rate of 1000)")
    parser.add_argument("--credentials", type=int, default=10, help="credentials the pods are spread over")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="window for the idle CPU")
    parser.add_argument("--settle", type=float, default=1.0, help="pause before each RSS reading")
    parser.add_argument("--dev-venv", action="store_true",
                        help="run the agent from the development venv instead of an image-like runtime venv")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def spread(runs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The headline figures of every run side by side."""
    def each(path: Sequence[str]) -> list[Any]:
        out = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value[key]
            out.append(value)
        return out

    keys = {
        "rss_idle_mb": ("rss_mb", "idle"), "rss_100_pods_mb": ("rss_mb", "pods_100"),
        "rss_300_pods_mb": ("rss_mb", "pods_300"), "rss_1000_pods_mb": ("rss_mb", "pods_1000"),
        "cpu_s_per_1000_cached": ("cached", "agent_cpu_s_per_1000"),
        "cpu_s_per_1000_upstream": ("upstream", "agent_cpu_s_per_1000"),
        "cached_p50_ms": ("cached", "latency_p50_ms"), "cached_p99_ms": ("cached", "latency_p99_ms"),
        "upstream_p50_ms": ("upstream", "latency_p50_ms"), "upstream_p99_ms": ("upstream", "latency_p99_ms"),
        "serial_cached_p50_ms": ("serial_cached", "latency_p50_ms"),
        "serial_cached_p99_ms": ("serial_cached", "latency_p99_ms"),
        "serial_upstream_p50_ms": ("serial_upstream", "latency_p50_ms"),
        "serial_upstream_p99_ms": ("serial_upstream", "latency_p99_ms"),
        "cpu_s_per_100_pods_per_hour": ("derived", "sdk_cadence", "agent_cpu_s_per_100_pods_per_hour"),
    }
    with contextlib.suppress(KeyError):
        return {name: each(path) for name, path in keys.items()}
    return {}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    python = sys.executable
    if not args.dev_venv:
        from devstack.runtime_venv import ensure_runtime_venv

        log("installing the operator as the image does (locked runtime dependencies only)")
        python = str(ensure_runtime_venv())
    machine = machine_info()
    started = time.monotonic()
    runs = []
    for run in range(1, args.runs + 1):
        result = asyncio.run(one_run(args, python, run))
        result["derived"] = derived(result)
        runs.append(result)
    out = {
        "benchmark": "pod_identity_agent",
        "command": "python -m benchmarks.pod_identity_agent " + " ".join(argv if argv is not None else sys.argv[1:]),
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "agent_flags": list(CHART_FLAGS),
        "agent_python": "dev venv" if args.dev_venv else "image-like runtime venv",
        "concurrency": args.concurrency,
        "credentials": args.credentials,
        "assumptions": assumptions(),
        "machine": {**machine, "python": platform.python_version(), "aiohttp": aiohttp.__version__},
        "seconds": round(time.monotonic() - started, 1),
        "spread": spread(runs),
        "runs": runs,
    }
    text = json.dumps(out, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
