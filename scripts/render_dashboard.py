"""Draws docs/dashboard.png: the Grafana dashboard's main panels, computed from live scrapes.

No Grafana or Prometheus runs here, so this is not a screenshot. It runs the operator on the local
stack (`make stack` first), creates credentials that issue, rotate (short lifetimes and one rotation
on request), one refused by the identity's allow-list and one that AWS refuses, scrapes /metrics
every few seconds, evaluates each panel's query over those scrapes in Python, and draws the panels
with matplotlib, titled as in charts/vault-sts-operator/files/grafana-dashboard.json.

    python scripts/render_dashboard.py --minutes 5 --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

Sample = tuple[str, dict[str, str], float]


def scrape(text: str) -> list[Sample]:
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.name, dict(s.labels), float(s.value)) for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("vault_sts_operator_")]


def select(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())]


def run_workload(minutes: float, interval: float) -> tuple[list[tuple[float, list[Sample]]], str, str]:
    from devstack.env import StackEnv
    from devstack.manifests import assumed_role_credential, mfa_identity
    from devstack.operator_run import OperatorProcess
    from devstack.seed import RoleSpec, seed_identity
    from tests.e2e.helpers import Kube, kubectl

    stack = StackEnv.load()
    kubectl(stack, "apply", "-f", str(ROOT / "crds"))
    kube = Kube(stack)
    tag = uuid.uuid4().hex[:6]
    namespace = kube.namespace(f"dash-{tag}")
    seeded = seed_identity(stack, f"dash-{tag}", roles=[RoleSpec(f"app-dash-{tag}-{i}") for i in range(4)])
    other = seed_identity(stack, f"other-{tag}", roles=[RoleSpec(f"app-dash-{tag}-denied")])
    allowed = [*seeded.role_arns, other.role_arns[0]]  # the identity allows it; AWS's trust policy does not
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[namespace], allowed_role_arns=allowed,
                                     session_seconds=1800))
    operator = OperatorProcess(stack, name="dashboard-operator")
    operator.start()
    series: list[tuple[float, list[Sample]]] = []
    try:
        started = time.time()
        for i in range(6):
            kube.create_credential(assumed_role_credential(namespace, f"app-{i}", seeded.name, seeded.role_arns[i % 4],
                                                           durationSeconds=900, renewBefore=f"{12 + i % 2}m"))
        kube.create_credential(assumed_role_credential(namespace, "refused", seeded.name,
                                                       "arn:aws:iam::123456789012:role/elsewhere"))
        kube.create_credential(assumed_role_credential(namespace, "denied", seeded.name, other.role_arns[0]))
        rotated = False
        while time.time() - started < minutes * 60:
            series.append((time.time(), scrape(operator.metrics_text())))
            if not rotated and time.time() - started > minutes * 20:
                kube.patch_credential(namespace, "app-0", {"metadata": {"annotations": {
                    "vaultsts.io/rotate": str(time.time())}}})
                rotated = True
            time.sleep(interval)
    finally:
        operator.stop()
        kubectl(stack, "delete", "namespace", namespace, "--wait=false", check=False)
        kube.api.close()
    return series, namespace, seeded.name


def draw(all_series: list[tuple[float, list[Sample]]], out: Path, namespace: str, identity: str) -> None:  # noqa: PLR0915 - one figure, panel by panel
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The dashboard's $namespace and $identity variables, set to this run's: other tests' objects on a
    # shared stack stay out of the picture.
    def selected(sample: Sample) -> bool:
        labels = sample[1]
        return labels.get("namespace", namespace) == namespace and labels.get("identity", identity) == identity

    series = [(t, [s for s in samples if selected(s)]) for t, samples in all_series]
    dashboard = json.loads((ROOT / "charts/vault-sts-operator/files/grafana-dashboard.json").read_text())
    titles = {p["id"]: p["title"] for p in dashboard["panels"]}
    t0 = series[0][0]
    minutes = [(t - t0) / 60 for t, _ in series]
    plt.style.use("dark_background")
    fig, axes = plt.subplots(3, 2, figsize=(14, 11))
    fig.suptitle("vault-sts-operator dashboard, drawn from live scrapes of the local stack (not a Grafana screenshot)"
                 f"\nnamespace={namespace}, identity={identity}", fontsize=11)

    def lines(ax: Any, keyed: dict[str, list[float]], ylabel: str, stacked: bool = False) -> None:
        if stacked:
            ax.stackplot(minutes, *keyed.values(), labels=list(keyed), alpha=0.8)
        else:
            for label, values in keyed.items():
                ax.plot(minutes, values, label=label)
        ax.set_xlabel("minutes")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.2)

    # 1. Credentials by Ready state.
    keys = sorted({("Ready" if s[2] == 1 else "Not ready") + f" ({s[1]['reason']})" for _, samples in series
                   for s in select(samples, "vault_sts_operator_credential_ready_status")})
    ready: dict[str, list[float]] = {k: [] for k in keys}
    for _, samples in series:
        counts: dict[str, float] = defaultdict(float)
        for s in select(samples, "vault_sts_operator_credential_ready_status"):
            counts[("Ready" if s[2] == 1 else "Not ready") + f" ({s[1]['reason']})"] += 1
        for k in keys:
            ready[k].append(counts[k])
    axes[0][0].set_title(titles[1])
    lines(axes[0][0], ready, "credentials", stacked=True)

    # 2. Time to expiry (last scrape).
    last_t, last = series[-1]
    expiry = sorted((s[1]["name"], (s[2] - last_t) / 60) for s in
                    select(last, "vault_sts_operator_credential_expiration_timestamp_seconds"))
    ax = axes[0][1]
    ax.set_title(titles[2])
    colors = ["tab:red" if m < 10 else "tab:orange" if m < 20 else "tab:green" for _, m in expiry]
    ax.barh([n for n, _ in expiry], [m for _, m in expiry], color=colors)
    ax.set_xlabel("minutes until expiry")
    ax.grid(alpha=0.2)

    def increases(name: str, label: str, window: int = 6) -> dict[str, list[float]]:
        """increase(name[window scrapes]) by label, like Grafana's $__rate_interval."""
        totals = [{s[1].get(label, ""): s[2] for s in select(samples, name)} for _, samples in series]
        keys = sorted({k for total in totals for k in total})
        return {k: [total.get(k, 0.0) - totals[max(0, i - window)].get(k, 0.0) for i, total in enumerate(totals)]
                for k in keys}

    axes[1][0].set_title(titles[3])
    lines(axes[1][0], increases("vault_sts_operator_rotations_total", "trigger"), "issued per 30 s")
    axes[1][1].set_title(titles[4])
    lines(axes[1][1], increases("vault_sts_operator_failures_total", "reason"), "failures per 30 s")
    codes = {f"codes {k}": v for k, v in increases("vault_sts_operator_totp_codes_used_total", "identity").items()}
    codes.update({f"sessions {k}": v for k, v in
                  increases("vault_sts_operator_mfa_sessions_created_total", "identity").items()})
    axes[2][0].set_title(titles[5])
    lines(axes[2][0], codes, "per 30 s")
    session: dict[str, list[float]] = defaultdict(list)
    for t, samples in series:
        found = {s[1]["identity"]: (s[2] - t) / 60 for s in
                 select(samples, "vault_sts_operator_mfa_session_expiration_timestamp_seconds")}
        for name in {s[1]["identity"] for _, ss in series for s in
                     select(ss, "vault_sts_operator_mfa_session_expiration_timestamp_seconds")}:
            session[name].append(found.get(name, float("nan")))
    axes[2][1].set_title(titles[6])
    lines(axes[2][1], dict(session), "minutes left")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    series, namespace, identity = run_workload(args.minutes, args.interval)
    draw(series, args.out, namespace, identity)
    print(f"{len(series)} scrapes over {args.minutes} min -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
