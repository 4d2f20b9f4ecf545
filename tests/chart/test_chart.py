"""The Helm chart: lint, render, security settings, least-privilege RBAC, install on the real apiserver."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from devstack.layout import Binaries
from devstack.operator_run import OPERATOR_NAMESPACE, OPERATOR_SA
from tests.conftest import NAMESPACED_HOME, NAMESPACED_RELEASE_SA
from tests.e2e.helpers import kubectl

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "vault-sts-operator"
SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"


def helm_binary() -> str:
    helm = Binaries.discover().helm
    assert helm is not None, "helm is not built: run devstack/build.sh helm"
    return str(helm)


def render(*sets: str) -> list[dict]:
    args = [helm_binary(), "template", "vault-sts-operator", str(CHART), "--namespace", OPERATOR_NAMESPACE,
            "--kube-version", "1.35.4"]
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_chart_crds_are_the_repository_crds():
    # The chart renders its CRDs from files/crds/ (templates/crds.yaml): copies of the repository's crds/.
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        copy = CHART / "files" / "crds" / crd.name
        assert copy.read_bytes() == crd.read_bytes(), f"{crd.name} differs in the chart: cp crds/*.yaml {copy.parent}/"
    # Helm installs a crds/ folder once and never upgrades it: the chart has none. kopf's peering CRDs were its
    # only content; with kopf retired the chart neither ships nor renders any kopf.dev CRD.
    assert not (CHART / "crds").exists(), sorted(p.name for p in (CHART / "crds").iterdir())
    rendered = [d["metadata"]["name"] for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert sorted(rendered) == sorted(f"{p.name.split('_', 1)[1].removesuffix('.yaml')}.vaultsts.io"
                                      for p in (ROOT / "crds").glob("*.yaml")), rendered


def test_helm_lint_is_clean():
    result = subprocess.run([helm_binary(), "lint", "--strict", str(CHART)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_values_schema_refuses_bad_values():
    for bad in ("replicaCount=-1", "logFormat=xml", "vault.auth.method=ldap", "unknownKey=1"):
        result = subprocess.run([helm_binary(), "template", "x", str(CHART), "--kube-version", "1.35.4",
                                 "--set", bad], capture_output=True, text=True, check=False)
        assert result.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_deployment_is_locked_down():
    docs = render("vault.address=https://vault:8200")
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Ready on the leader and on a standby alike (the body says which): a standby never Ready would stall rollouts.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert deploy["spec"]["replicas"] > 1
    assert [a for a in container["args"] if a.startswith("--leader-election")] == [
        "--leader-election-lease=vault-sts-operator", "--leader-election-lease-duration=15",
        "--leader-election-renew-deadline=10", "--leader-election-retry-period=2"]
    assert "strategy" not in deploy["spec"]  # a rolling update: the Lease keeps one replica active
    assert "--vault-address=https://vault:8200" in container["args"]


def test_single_replica_without_leader_election_recreates():
    docs = render("leaderElection.enabled=false", "replicaCount=1")
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}  # never two pods at once: both would act
    assert not [a for a in _operator_container(docs)["args"] if a.startswith("--leader-election")]


def test_leader_election_values_reach_the_operator():
    docs = render("leaderElection.leaseName=shard-1", "leaderElection.leaseDurationSeconds=30",
                  "leaderElection.renewDeadlineSeconds=20", "leaderElection.retryPeriodSeconds=4")
    assert [a for a in _operator_container(docs)["args"] if a.startswith("--leader-election")] == [
        "--leader-election-lease=shard-1", "--leader-election-lease-duration=30",
        "--leader-election-renew-deadline=20", "--leader-election-retry-period=4"]
    # no lease name: the release's full name, unique per release in its namespace
    args = _operator_container(render("fullnameOverride=sts-broker"))["args"]
    assert "--leader-election-lease=sts-broker" in args
    for bad in ("leaderElection.leaseName=Not_A_Name", "leaderElection.retryPeriodSeconds=0"):
        result = subprocess.run([helm_binary(), "template", "x", str(CHART), "--kube-version", "1.35.4",
                                 "--set", bad], capture_output=True, text=True, check=False)
        assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr, bad


def test_rbac_has_no_wildcards_and_lists_secrets_only_for_the_watch():
    for sets, may_list in (((), True), (("secretRecovery.clusterMode=check",), False)):
        docs = render(*sets)
        rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
        assert rules
        for rule in rules:
            # (the metrics-reader ClusterRole's rule names a non-resource URL: no resources, no apiGroups)
            assert "*" not in rule["verbs"] and "*" not in rule.get("resources", [])
            assert "*" not in rule.get("apiGroups", []) and "*" not in rule.get("nonResourceURLs", [])
        listing = [r for r in rules if "secrets" in r.get("resources", []) and {"list", "watch"} & set(r["verbs"])]
        # secretRecovery.clusterMode=watch (the default) lists and watches Secrets, and nothing else in that rule
        assert (listing == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}]) == may_list, \
            (sets, listing)


def test_service_monitor_is_optional():
    assert not any(d["kind"] == "ServiceMonitor" for d in render())
    monitor = next(d for d in render("metrics.serviceMonitor.enabled=true") if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_install_creates_every_object(stack, chart_release):
    # rendered with the values chart_release installs (tests/conftest.py)
    for doc in render(f"vault.address={stack.vault_addr}", "crds.enabled=false", "replicaCount=0"):
        kind, name = doc["kind"], doc["metadata"]["name"]
        ns = ["-n", doc["metadata"].get("namespace", OPERATOR_NAMESPACE)]
        scoped = kind not in ("ClusterRole", "ClusterRoleBinding")
        kubectl(stack, "get", kind.lower(), name, *(ns if scoped else []))


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("get", "secrets", "team-x", True),
        ("create", "secrets", "team-x", True),
        # secretRecovery.clusterMode=watch (the default): a label-selected watch of its own Secrets, which RBAC
        # cannot narrow by label (clusterMode=check drops it: test_cluster_scope_watches_secrets_unless_told_to_check)
        ("list", "secrets", "team-x", True),
        ("watch", "secrets", "team-x", True),
        ("list", "secrets", "", True),
        ("create", "pods", "team-x", False),
        ("delete", "namespaces", "", False),
        ("update", "leases.coordination.k8s.io", OPERATOR_NAMESPACE, True),
        ("update", "leases.coordination.k8s.io", "kube-system", False),
        ("update", "leases.coordination.k8s.io", "team-x", False),  # its Lease: its own namespace only
        ("patch", "clusterkopfpeerings.kopf.dev", "", False),  # kopf retired: no peering object to write
        ("patch", "kopfpeerings.kopf.dev", "team-x", False),
        ("patch", "deployments.apps", "team-x", True),
        ("get", "deployments.apps", "team-x", True),  # reads the restart opt-in annotation
        ("list", "deployments.apps", "team-x", False),
        ("delete", "deployments.apps", "team-x", False),
        ("patch", "assumedrolecredentials.vaultsts.io --subresource=status", "team-x", True),
        ("delete", "assumedrolecredentials.vaultsts.io", "team-x", False),
        ("create", "mfaidentities.vaultsts.io", "", False),
        ("get", "configmaps", "team-x", False),
        ("create", "serviceaccounts/token", OPERATOR_NAMESPACE, False),
    ],
)
def test_rbac_is_no_more_than_needed(stack, chart_release, verb, resource, namespace, allowed):
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    result = kubectl(stack, "auth", "can-i", verb, *resource.split(), *scope, f"--as={SA}", check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, result.stdout, result.stderr)


def _operator_container(docs: list[dict]) -> dict:
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    return dict(deploy["spec"]["template"]["spec"]["containers"][0])


MODES = ((), ("leaderElection.enabled=false", "replicaCount=1"), ("watchNamespaces={team-a,team-b}",),
         ("rbac.scope=namespaced", "watchNamespaces={team-a,team-b}"),
         ("rbac.scope=namespaced", "watchNamespaces={team-a}", "leaderElection.enabled=false", "replicaCount=1"))


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("sets", MODES)
def test_no_kopf_peering_objects_in_any_mode(sets):
    """kopf is retired: no ClusterKopfPeering, no KopfPeering, no peering Role, no kopf.dev rule, no POD_ID (kopf's
    peer id; the operator's instance id is <hostname>-<pid>, the pod's name in a pod)."""
    docs = render(*sets)
    assert not [(d["kind"], d["metadata"]["name"]) for d in docs if d["apiVersion"].startswith("kopf.dev/")], sets
    assert not [d["metadata"]["name"] for d in docs if d["metadata"]["name"].endswith("-peering")], sets
    rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    assert not [r for r in rules if "kopf.dev" in r.get("apiGroups", ())], sets
    assert not [r for r in rules if "customresourcedefinitions" in r.get("resources", ())], sets  # kopf's CRD watch
    env = {e["name"] for e in _operator_container(docs)["env"]}
    assert "POD_ID" not in env and "POD_NAMESPACE" in env, sets


@pytest.mark.parametrize("sets", MODES)
def test_leases_only_in_the_release_namespace(sets):
    """The leader election's Lease and the per-device Leases live in the release namespace; nothing in a watched
    (tenant) namespace takes part, and no ClusterRole grants Leases anywhere."""
    docs = render(*sets)
    granting = sorted((d["kind"], d["metadata"].get("namespace", "")) for d in docs
                      if d["kind"] in ("ClusterRole", "Role")
                      for r in d["rules"] if "leases" in r.get("resources", ()))
    assert granting == [("Role", OPERATOR_NAMESPACE)], (sets, granting)


def test_namespace_patterns_work_with_leader_election():
    """kopf needed a KopfPeering in each watched namespace, which a pattern cannot name: the chart refused
    patterns with peering. The Lease lives in the release namespace, so a pattern is fine now."""
    docs = render("watchNamespaces={team-*}")
    args = _operator_container(docs)["args"]
    assert "--namespace=team-*" in args and "--leader-election-lease=vault-sts-operator" in args
    assert not _by_kind(docs, "KopfPeering")


# -- namespaced RBAC, the Vault token's audience, development settings (issue 10) --------------------------------
WORKLOADS = {"deployments", "statefulsets", "daemonsets"}


def test_namespaced_scope_has_no_cluster_role_on_secrets_or_workloads():
    docs = render("rbac.scope=namespaced", "watchNamespaces={team-a,team-b}")
    # the operator's own ClusterRole (the aggregated roles for people are rbac-aggregate.yaml's)
    cluster_rules = [r for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "vault-sts-operator"
                     for r in d["rules"]]
    assert cluster_rules
    for rule in cluster_rules:
        assert not {"secrets", "events", "assumedrolecredentials", *WORKLOADS} & set(rule["resources"]), rule
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "Role"}
    for ns in ("team-a", "team-b"):
        rules = roles[(ns, "vault-sts-operator-credentials")]["rules"]
        secrets = [r for r in rules if "secrets" in r["resources"]]
        assert {v for r in secrets for v in r["verbs"]} == {"get", "create", "update", "delete", "list", "watch"}
        assert any(set(r["resources"]) >= WORKLOADS and r["verbs"] == ["get", "patch"] for r in rules)
        bindings = [d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == ns]
        assert bindings and bindings[0]["subjects"][0]["namespace"] == OPERATOR_NAMESPACE
    args = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--no-watch-secrets" not in args


@pytest.mark.parametrize("sets", [("rbac.scope=namespaced",), ("rbac.scope=namespaced", "watchNamespaces={team-*}")])
def test_namespaced_scope_needs_exact_namespaces(sets):
    args = [helm_binary(), "template", "x", str(CHART), "--kube-version", "1.35.4"]
    for value in sets:
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "rbac.scope=namespaced needs" in result.stderr, result.stderr


def test_cluster_scope_watches_secrets_unless_told_to_check():
    docs = render()
    args = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--no-watch-secrets" not in args
    rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"] if "secrets" in r.get("resources", [])]
    assert any(set(r["verbs"]) == {"list", "watch"} for r in rules)
    docs = render("secretRecovery.clusterMode=check")
    args = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--no-watch-secrets" in args and "--secret-check-interval=45" in args
    rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"] if "secrets" in r.get("resources", [])]
    assert not any({"list", "watch"} & set(r["verbs"]) for r in rules)


def test_vault_gets_a_projected_token_of_its_own_audience():
    pod = next(d for d in render() if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "vault-token")
    source = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "vault" and source["expirationSeconds"] == 600
    container = pod["containers"][0]
    assert "--vault-sa-token-file=/var/run/secrets/vault-sts-operator/vault-token" in container["args"]
    assert {"name": "vault-token", "mountPath": "/var/run/secrets/vault-sts-operator", "readOnly": True} in \
        container["volumeMounts"]
    legacy = next(d for d in render("vault.auth.kubernetes.audience=") if d["kind"] == "Deployment")
    assert not any(v["name"] == "vault-token" for v in legacy["spec"]["template"]["spec"]["volumes"])


def test_plain_http_and_secret_namespace_are_explicit_settings():
    args = next(d for d in render() if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--allow-insecure-http" not in args and not any(a.startswith("--secret-ref-namespace") for a in args)
    docs = render("allowInsecureHttp=true", "secretRefNamespace=platform-secrets", "rbac.scope=namespaced",
                  "watchNamespaces={team-a}")
    args = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--allow-insecure-http" in args and "--secret-ref-namespace=platform-secrets" in args
    refs = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "platform-secrets")
    assert refs["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]


NAMESPACED_SA = f"system:serviceaccount:{NAMESPACED_HOME}:{NAMESPACED_RELEASE_SA}"


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        # kube-system, and any namespace not watched: nothing on Secrets or workloads
        ("get", "secrets", "kube-system", False),
        ("list", "secrets", "kube-system", False),
        ("update", "secrets", "kube-system", False),
        ("patch", "daemonsets.apps", "kube-system", False),
        ("patch", "deployments.apps", "kube-system", False),
        ("get", "secrets", "team-elsewhere", False),
        ("list", "secrets", "", False),
        ("patch", "deployments.apps", "", False),
        # the watched namespaces: what issuing, the Secret watch and restarts need
        ("get", "secrets", "team-scoped-a", True),
        ("create", "secrets", "team-scoped-b", True),
        ("watch", "secrets", "team-scoped-a", True),
        ("patch", "deployments.apps", "team-scoped-a", True),
        ("delete", "deployments.apps", "team-scoped-a", False),
        ("get", "configmaps", "team-scoped-a", False),
        ("patch", "assumedrolecredentials.vaultsts.io/status", "team-scoped-b", True),
        ("patch", "assumedrolecredentials.vaultsts.io", "kube-system", False),
        # its own namespace: Leases and the Secrets MFAIdentities may name, by name
        ("update", "leases.coordination.k8s.io", NAMESPACED_HOME, True),
        ("get", "secrets", NAMESPACED_HOME, True),
        ("list", "secrets", NAMESPACED_HOME, False),
        # cluster-scoped kinds it must watch
        ("watch", "mfaidentities.vaultsts.io", "", True),
        ("create", "mfaidentities.vaultsts.io", "", False),
    ],
)
def test_namespaced_rbac_is_refused_in_kube_system(stack, namespaced_release, verb, resource, namespace, allowed):
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    result = kubectl(stack, "auth", "can-i", verb, resource, *scope, f"--as={NAMESPACED_SA}", check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, result.stdout, result.stderr)


def test_both_scopes_grant_update_on_credential_finalizers_and_nothing_more():
    """Each Secret's ownerReference sets blockOwnerDeletion: under OwnerReferencesPermissionEnforcement (OpenShift's
    default; the local stack's apiserver runs with it) the API server then demands update on the owner's finalizers
    subresource. Granted in the ClusterRole (cluster scope) or in each watched namespace's Role (namespaced)."""
    wanted = {"apiGroups": ["vaultsts.io"], "resources": ["assumedrolecredentials/finalizers"], "verbs": ["update"]}
    for sets, kind in (((), "ClusterRole"), (("rbac.scope=namespaced", "watchNamespaces={team-a,team-b}"), "Role")):
        docs = render(*sets)
        granting = [(d["kind"], d["metadata"].get("namespace", "")) for d in docs
                    if d["kind"] in ("ClusterRole", "Role")
                    for r in d["rules"] if any(res.endswith("/finalizers") for res in r.get("resources", []))]
        rules = [r for d in docs if d["kind"] == kind for r in d["rules"] if r in (wanted,)]
        expected = [(kind, "")] if kind == "ClusterRole" else [("Role", "team-a"), ("Role", "team-b")]
        assert sorted(granting) == expected and len(rules) == len(expected), (sets, granting)


def test_allowed_destinations_reach_the_operator_and_default_to_awss_public_sts():
    from vault_sts_operator.domain.destinations import AWS_STS_ENDPOINTS

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert tuple(values["allowedDestinations"]["stsEndpoints"]) == AWS_STS_ENDPOINTS  # one list, two places
    docs = render("vault.address=https://vault:8200", "allowedDestinations.vaultAddresses[0]=https://vault-b:8200",
                  "networkPolicy.enabled=true", "allowedDestinations.stsEndpoints[0]=https://10.1.2.3:8443")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--allowed-vault-address=https://vault-b:8200" in container["args"]
    assert [a for a in container["args"] if a.startswith("--allowed-sts-endpoint=")] == \
        ["--allowed-sts-endpoint=https://10.1.2.3:8443"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_SERVICE_ACCOUNT"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.serviceAccountName"
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    assert {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 8443, "protocol": "TCP"}]} \
        in policy["spec"]["egress"]
    role = next(d for d in docs if d["kind"] == "Role" and any(
        "serviceaccounts/token" in r.get("resources", ()) for r in d["rules"]))
    (token_rule,) = [r for r in role["rules"] if "serviceaccounts/token" in r["resources"]]
    assert token_rule["verbs"] == ["create"] and token_rule["resourceNames"] == ["vault-sts-operator"]
    with pytest.raises(subprocess.CalledProcessError):
        render("allowedDestinations.vaultAddresses[0]=https://user@vault-b:8200")


def _no_duplicate_keys_yaml(text: str) -> None:
    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        keys = [loader.construct_object(k) for k, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        assert not duplicates, f"duplicate keys {sorted(duplicates)} at line {node.start_mark.line + 1}"
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    yaml.load(text, Loader=Strict)


def test_values_and_schema_define_each_key_once():
    """A key defined twice hides the first definition (YAML and JSON parsers keep the last): `rbac:` was, and
    `rbac.scope` lost its default and its enum check."""
    import json

    _no_duplicate_keys_yaml((CHART / "values.yaml").read_text())

    def pairs(items: list[tuple[str, object]]) -> dict:
        keys = [k for k, _ in items]
        duplicates = {k for k in keys if keys.count(k) > 1}
        assert not duplicates, f"values.schema.json defines {sorted(duplicates)} twice"
        return dict(items)

    json.loads((CHART / "values.schema.json").read_text(), object_pairs_hook=pairs)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["rbac"] == {"scope": "cluster", "aggregateClusterRoles": True}
    with pytest.raises(subprocess.CalledProcessError):
        render("rbac.scope=namespace")  # a typo: refused by the schema, not a silent cluster-wide install
