"""The chart on the real kube-apiserver: a ``helm upgrade`` carries a changed CRD, uninstall keeps CRDs,
and the aggregated roles let an app team bound to ``edit`` manage credentials but not identities.

The CRD test installs a copy of the chart whose CRDs are moved to a throwaway API group, so the
vaultsts.io CRDs that other suites share on the stack are never touched.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from devstack.env import StackEnv
from tests.chart.test_chart import CHART, ROOT
from tests.conftest import RELEASE, helm
from tests.e2e.helpers import kubectl, wait_for


def _chart_copy(tmp_path: Path, group: str, version: str, add_column: bool) -> Path:
    chart = tmp_path / f"chart-{version}"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = version
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    for path in (chart / "files" / "crds").glob("*.yaml"):
        if not path.name.startswith("vaultsts.io_"):
            path.unlink()  # only the project's own CRDs are moved to the throwaway group
            continue
        crd = yaml.safe_load(path.read_text().replace("vaultsts.io", group))
        if add_column:
            for served in crd["spec"]["versions"]:
                served["additionalPrinterColumns"].append(
                    {"name": "Upgraded", "type": "string", "jsonPath": ".metadata.uid", "priority": 1})
        path.write_text(yaml.safe_dump(crd))
    return chart


def _columns(stack: StackEnv, name: str) -> list[str]:
    crd = json.loads(kubectl(stack, "get", "crd", name, "-o", "json").stdout)
    return [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]


def test_helm_upgrade_applies_a_changed_crd_and_uninstall_keeps_it(stack, tmp_path, unique):
    group = f"u{unique}.vaultsts.io"
    crd_name = f"assumedrolecredentials.{group}"
    release, namespace = f"crd-{unique}", f"crd-{unique}"
    common = ["--namespace", namespace, "--set", "leaderElection.enabled=false", "--set", "replicaCount=1",
              "--set", f"fullnameOverride=crd-{unique}", "--set", "rbac.aggregateClusterRoles=false"]
    try:
        helm(stack, "install", release, str(_chart_copy(tmp_path, group, "0.1.0", add_column=False)),
             "--create-namespace", *common)
        kubectl(stack, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd_name}")
        assert "Upgraded" not in _columns(stack, crd_name)
        # A custom resource under the old schema survives the upgrade.
        kubectl(stack, "apply", "-f", "-", stdin=json.dumps({
            "apiVersion": f"{group}/v1alpha1", "kind": "AssumedRoleCredential",
            "metadata": {"name": "survivor", "namespace": namespace},
            "spec": {"identityRef": {"name": "ops"}, "roleArn": "arn:aws:iam::123456789012:role/app-x"}}))

        helm(stack, "upgrade", release, str(_chart_copy(tmp_path, group, "0.2.0", add_column=True)), *common)
        assert "Upgraded" in _columns(stack, crd_name), "helm upgrade did not upgrade the CRD"
        crd = json.loads(kubectl(stack, "get", "crd", crd_name, "-o", "json").stdout)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["helm.sh/chart"] == "vault-sts-operator-0.2.0"

        helm(stack, "uninstall", release, "--namespace", namespace)
        kubectl(stack, "get", "crd", crd_name)  # kept
        kubectl(stack, "get", f"assumedrolecredentials.{group}", "survivor", "-n", namespace)
    finally:
        helm(stack, "uninstall", release, "--namespace", namespace, check=False)
        kubectl(stack, "delete", "crd", crd_name, f"mfaidentities.{group}", "--ignore-not-found", check=False)
        kubectl(stack, "delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


def _nudge_crd_finalizer(stack: StackEnv, crd: str, nudged: list[str]) -> None:
    """Work around a kube-apiserver race (1.31+, ``ResilientWatchCacheInitialization``), not a chart fault.

    When a CRD's watch cache is not ready (a CRD never read yet, or, as rancher-desktop PR 208 found, a
    sibling in the same group just deleted), the CRD finalizer's list of its instances gets 429 "storage
    is (re)initializing" instead of waiting, and its work queue backs off exponentially (5 ms doubling,
    up to 1,000 s), so the CRD sits ``Terminating`` for minutes (one CI run: over 120 s). This is what
    kubernetes/kubernetes PR 140485 and rancher-desktop PR 208 do: list the instances until the cache
    answers (the list builds and warms it), then touch an annotation: an update the finalizer re-queues
    at once instead of after its back-off. docs/install.md gives users the same two steps.
    """
    served = kubectl(stack, "get", "crd", crd, "-o",
                     "jsonpath={.spec.group}/{.spec.versions[?(@.storage==true)].name}/{.spec.names.plural}",
                     check=False).stdout.strip()
    if served.count("/") != 2:
        return
    # A list with no `limit`: a list with one (as `kubectl get` sends) is passed to etcd while the cache is
    # not ready, so only this one's success shows that the finalizer's own list will succeed.
    warmed = kubectl(stack, "get", "--raw", f"/apis/{served}", "--request-timeout=10s", check=False)
    if warmed.returncode == 0:
        kubectl(stack, "annotate", "crd", crd, "--overwrite", f"vaultsts.io/finalizer-nudge={len(nudged)}",
                check=False)
        nudged.append(crd)


def test_crds_keep_false_removes_them_on_uninstall(stack, tmp_path, unique):
    group = f"k{unique}.vaultsts.io"
    release, namespace = f"crdk-{unique}", f"crdk-{unique}"
    try:
        helm(stack, "install", release, str(_chart_copy(tmp_path, group, "0.1.0", add_column=False)),
             "--namespace", namespace, "--create-namespace", "--set", "crds.keep=false",
             "--set", "leaderElection.enabled=false", "--set", "replicaCount=1",
             "--set", f"fullnameOverride=crdk-{unique}",
             "--set", "rbac.aggregateClusterRoles=false")
        crds = [f"assumedrolecredentials.{group}", f"mfaidentities.{group}"]
        kubectl(stack, "get", "crd", *crds)
        # Without `--wait`: the point is that the CRDs go, which the loop below checks. (One CI run saw
        # `helm uninstall --wait` outlive its 120-s limit with no output to tell what it waited for.)
        helm(stack, "uninstall", release, "--namespace", namespace)
        # What the chart decides: Helm deleted both CRDs instead of keeping them (a kept CRD has no
        # deletionTimestamp). Finalizing them is then the API server's work, waited for below.
        deleting = kubectl(stack, "get", "crd", *crds, "--ignore-not-found", "-o",
                           "jsonpath={range .items[*]}{.metadata.name}={.metadata.deletionTimestamp}{\"\\n\"}{end}",
                           check=False).stdout.split()
        assert all(not line.endswith("=") for line in deleting), f"a CRD was kept on uninstall: {deleting}"

        def left() -> str:
            return kubectl(stack, "get", "crd", *crds, "--ignore-not-found", "-o",
                           "jsonpath={range .items[*]}{.metadata.name} {.status.conditions}{\"\\n\"}{end}",
                           check=False).stdout.strip()

        nudged: list[str] = []

        def gone() -> bool:
            still = left()
            for line in still.splitlines():
                if "InstanceDeletionFailed" in line:
                    _nudge_crd_finalizer(stack, line.split(" ", 1)[0], nudged)
            return not still

        try:
            # 300 s, as operator-framework's e2e allows for the same API-server back-off (its issue 1437);
            # without it the CRDs go in about 3 s here.
            wait_for("CRD removal", gone, timeout=300, interval=2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still there: {left()}; finalizer nudged: {nudged}") from None
    finally:
        kubectl(stack, "delete", "crd", f"assumedrolecredentials.{group}", f"mfaidentities.{group}",
                "--ignore-not-found", check=False)
        kubectl(stack, "delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def team(stack: StackEnv, chart_release: str, unique: str):
    """A namespace whose team (user alice-<id>) is bound to the built-in `edit` role, and a viewer."""
    namespace = f"team-{unique}"
    kubectl(stack, "create", "namespace", namespace)
    kubectl(stack, "create", "rolebinding", "editors", "--clusterrole=edit", f"--user=alice-{unique}",
            "-n", namespace)
    kubectl(stack, "create", "rolebinding", "viewers", "--clusterrole=view", f"--user=victor-{unique}",
            "-n", namespace)
    kubectl(stack, "create", "clusterrolebinding", f"reader-{unique}",
            f"--clusterrole={RELEASE}-identity-reader", f"--user=rita-{unique}")
    yield namespace
    kubectl(stack, "delete", "clusterrolebinding", f"reader-{unique}", "--ignore-not-found", check=False)
    kubectl(stack, "delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.parametrize(
    ("who", "verb", "resource", "in_namespace", "allowed"),
    [
        ("alice", "create", "assumedrolecredentials.vaultsts.io", True, True),
        ("alice", "delete", "assumedrolecredentials.vaultsts.io", True, True),
        # `kubectl auth can-i VERB RESOURCE/NAME` reads the part after "/" as a name: the status
        # subresource needs --subresource.
        ("alice", "patch", "assumedrolecredentials.vaultsts.io --subresource=status", True, False),
        ("alice", "create", "mfaidentities.vaultsts.io", False, False),
        ("alice", "get", "mfaidentities.vaultsts.io", False, False),
        ("victor", "list", "assumedrolecredentials.vaultsts.io", True, True),
        ("victor", "create", "assumedrolecredentials.vaultsts.io", True, False),
        ("rita", "list", "mfaidentities.vaultsts.io", False, True),
        ("rita", "create", "mfaidentities.vaultsts.io", False, False),
        ("rita", "create", "assumedrolecredentials.vaultsts.io", True, False),
    ],
)
def test_aggregated_roles_on_the_apiserver(stack, team, unique, who, verb, resource, in_namespace, allowed):
    scope = ["-n", team] if in_namespace else []

    def answer() -> bool:
        result = kubectl(stack, "auth", "can-i", verb, *resource.split(), *scope, f"--as={who}-{unique}",
                         check=False)
        return result.stdout.strip() == ("yes" if allowed else "no")

    # The aggregation controller fills view/edit/admin within moments of the chart's install.
    wait_for(f"{who} can-i {verb} {resource} = {allowed}", answer, timeout=20)


# -- upgrade from the kopf chart (issue 18) ----------------------------------------------------------------------
PEERING_TEMPLATE = "charts/vault-sts-operator/templates/peering.yaml"
KOPF_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _kopf_chart(tmp_path: Path) -> Path:
    """The chart as committed last with kopf peering (the last commit that has templates/peering.yaml)."""
    commit = _git("log", "-1", "--format=%H", "--", PEERING_TEMPLATE)
    assert commit, f"no commit ever had {PEERING_TEMPLATE}"
    exists = subprocess.run(["git", "cat-file", "-e", f"{commit}:{PEERING_TEMPLATE}"], cwd=ROOT, check=False)
    if exists.returncode != 0:  # that commit deleted it: its parent is the last one that has it
        commit = _git("rev-parse", f"{commit}^")
    archive = subprocess.run(["git", "archive", commit, "charts/vault-sts-operator"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path / "previous", filter="data")
    chart = tmp_path / "previous" / "charts" / "vault-sts-operator"
    assert (chart / "templates" / "peering.yaml").is_file() and (chart / "crds" / "kopf.dev_peerings.yaml").is_file()
    return chart


def _exists(stack: StackEnv, *what: str) -> bool:
    return bool(kubectl(stack, "get", *what, "--ignore-not-found", "-o", "name").stdout.strip())


@pytest.mark.parametrize("scope", ["cluster-wide", "namespaced"])
def test_helm_upgrade_from_the_kopf_chart_removes_its_peering_objects(stack, crds, tmp_path, unique, scope):
    """``helm upgrade`` from the last chart with kopf peering (enabled, as it was by default) to this one: the
    release's ClusterKopfPeering (cluster-wide) or its KopfPeering and peering Role/RoleBinding in the watched
    namespace (watchNamespaces) are gone, and the Deployment elects its leader with a Lease.

    kopf's peering CRDs stay in place, on purpose: other kopf operators in the cluster may use them (their CRs
    would go with the CRDs), and Helm never deletes (nor upgrades) the CRDs of a chart's crds/ folder anyway: the
    CHANGELOG tells whoever runs no other kopf operator to delete them by hand. Without pods (replicaCount=0):
    the objects are Helm's business, the rollout is tests/node's."""
    release = namespace = f"kopfup-{unique}"
    watched = f"kopfup-team-{unique}"
    crds_before = {crd: _exists(stack, "crd", crd) for crd in KOPF_CRDS}
    common = ["--namespace", namespace, "--set", "replicaCount=0", "--set", "crds.enabled=false",
              "--set", f"fullnameOverride={release}", "--set", "rbac.aggregateClusterRoles=false",
              "--set", f"vault.address={stack.vault_addr}"]
    if scope == "namespaced":
        kubectl(stack, "create", "namespace", watched)
        common += ["--set", f"watchNamespaces={{{watched}}}"]
    try:
        helm(stack, "install", release, str(_kopf_chart(tmp_path)), "--create-namespace", *common,
             "--set", "peering.enabled=true", "--set", f"peering.name={release}")
        for crd in KOPF_CRDS:  # the previous chart's crds/ folder installed them (or found them)
            kubectl(stack, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
        if scope == "cluster-wide":
            peering_objects = [("clusterkopfpeerings.kopf.dev", release)]
        else:
            peering_objects = [("kopfpeerings.kopf.dev", release, "-n", watched),
                               ("role", f"{release}-peering", "-n", watched),
                               ("rolebinding", f"{release}-peering", "-n", watched)]
        for obj in peering_objects:
            assert _exists(stack, *obj), f"the previous chart did not create {obj}"

        helm(stack, "upgrade", release, str(CHART), *common, "--set", "leaderElection.enabled=true")

        left = [obj for obj in peering_objects if _exists(stack, *obj)]
        assert not left, f"still there after the upgrade: {left}"
        for crd in KOPF_CRDS:
            assert _exists(stack, "crd", crd), f"helm upgrade removed {crd}"
        deploy = json.loads(kubectl(stack, "get", "deployment", release, "-n", namespace, "-o", "json").stdout)
        args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--leader-election-lease={release}" in args and not [a for a in args if "peering" in a], args
        sa = f"--as=system:serviceaccount:{namespace}:{release}"
        for verb, resource, where in (("patch", "clusterkopfpeerings.kopf.dev", []),
                                      ("patch", "kopfpeerings.kopf.dev", ["-n", watched]),
                                      ("list", "customresourcedefinitions.apiextensions.k8s.io", [])):
            answer = kubectl(stack, "auth", "can-i", verb, resource, *where, sa, check=False).stdout.strip()
            assert answer == "no", (verb, resource, answer)
        assert kubectl(stack, "auth", "can-i", "update", "leases.coordination.k8s.io", "-n", namespace, sa,
                       check=False).stdout.strip() == "yes"
    finally:
        helm(stack, "uninstall", release, "--namespace", namespace, check=False)
        for ns in (namespace, watched):
            kubectl(stack, "delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
        kubectl(stack, "delete", "clusterkopfpeerings.kopf.dev", release, "--ignore-not-found", check=False)
        # the cluster as found: the CRDs go only if this test's install created them
        created = [crd for crd, existed in crds_before.items() if not existed]
        if created:
            kubectl(stack, "delete", "crd", *created, "--ignore-not-found", check=False)
