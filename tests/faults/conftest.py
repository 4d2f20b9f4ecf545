"""Fault-suite fixtures: the operator as a process with the chart's ServiceAccount (as in tests/e2e), a guard
watching every operator-managed Secret for the whole session, seeded identities whose TOTP seed the test
process keeps (in memory only) so OpenBao can be re-seeded after a restart, and the session's fault report."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import devstack.seed
from devstack.env import StackEnv
from devstack.kubeconfig import kubeconfig_for_service_account
from devstack.manifests import mfa_identity
from devstack.operator_run import OPERATOR_NAMESPACE, OPERATOR_SA, TEST_OPERATOR_ARGS, OperatorProcess
from devstack.seed import RoleSpec, SeededIdentity, seed_identity
from tests.e2e.helpers import Kube
from tests.faults.helpers import REPORTS_WRITTEN, FaultReport, SecretGuard

LEASE = "vault-sts-operator"  # the leader election Lease, as the chart names it for the e2e release


@pytest.fixture(scope="session")
def operator_kubeconfig(stack: StackEnv, chart_release: str) -> Path:
    return Path(kubeconfig_for_service_account(stack, OPERATOR_NAMESPACE, OPERATOR_SA,
                                               stack.stack_dir / "operator-sa.kubeconfig"))


def new_operator(stack: StackEnv, kubeconfig: Path, name: str) -> OperatorProcess:
    return OperatorProcess(stack, name=name, kubeconfig=kubeconfig,
                           extra_args=["--leader-election-lease", LEASE, *TEST_OPERATOR_ARGS])


@pytest.fixture(scope="session")
def operators() -> list[OperatorProcess]:
    """Every operator process the suite ran (the leak scan reads all their logs)."""
    return []


@pytest.fixture(scope="session")
def operator(stack: StackEnv, operator_kubeconfig: Path, operators: list[OperatorProcess]
             ) -> Iterator[OperatorProcess]:
    proc = new_operator(stack, operator_kubeconfig, "faults-operator")
    operators.append(proc)
    proc.stop_others()  # the end-to-end suite's operator, when both suites run in one session
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def report() -> FaultReport:
    return FaultReport()


@pytest.fixture(scope="session")
def guard(stack: StackEnv) -> Iterator[SecretGuard]:
    watcher = SecretGuard(stack)
    watcher.start()
    yield watcher
    watcher.stop()


@pytest.fixture(scope="session")
def seeds() -> dict[str, str]:
    """TOTP seeds of the identities this suite seeded, by identity name (never printed or written)."""
    return {}


@pytest.fixture
def team(kube: Kube, unique: str, request: pytest.FixtureRequest) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", request.node.name.removeprefix("test_").lower())[:16].strip("-")
    return kube.namespace(f"f-{words}-{unique}")


@pytest.fixture
def make_identity(stack: StackEnv, kube: Kube, team: str, unique: str, report: FaultReport, seeds: dict[str, str]
                  ) -> Callable[..., SeededIdentity]:
    """Seed an identity allowing ``team`` and apply its MFAIdentity; its serial joins the report."""

    def make(prefix: str, *, totp_period: int = 30, roles: int = 1, session_seconds: int = 43200,
             namespaces: list[str] | None = None, mfa_modes: list[str] | None = None) -> SeededIdentity:
        name = f"{prefix}-{unique}"
        captured: list[str] = []

        def capture() -> str:
            seed = original()
            captured.append(seed)
            return seed

        original = devstack.seed.new_totp_seed
        with mock.patch.object(devstack.seed, "new_totp_seed", capture):
            seeded = seed_identity(stack, name, totp_period=totp_period,
                                   roles=[RoleSpec(f"app-{name}-{i}") for i in range(roles)])
        seeds[name] = captured[0]
        report.serials.add(seeded.mfa_serial)
        kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=namespaces or [team],
                                         session_seconds=session_seconds, mfa_modes=mfa_modes))
        return seeded

    return make


@pytest.fixture(autouse=True)
def _running(operator: OperatorProcess, guard: SecretGuard) -> None:
    """Every fault test runs with the operator up and the Secret guard watching."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the report the last test wrote (``.stack/fault-report.json``) at the end of the session."""
    for path in REPORTS_WRITTEN:
        terminalreporter.section("fault report")
        terminalreporter.write_line(f"{path}:")
        terminalreporter.write_line(json.dumps(json.loads(path.read_text()), indent=2))
