"""`pod-identity snippet|patch`: the snippet and the patch decision (pure; the API server's side is in
tests/e2e/test_ctl_pod_identity.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from vault_sts_operator.agent.main import POD_AUDIENCE as AGENT_AUDIENCE_DEFAULT
from vault_sts_operator.cli import _parser
from vault_sts_operator.config import PodIdentityConfig
from vault_sts_operator.ctl import pod_identity as pi
from vault_sts_operator.ctl.plugin import parser as plugin_parser

ROOT = Path(__file__).resolve().parents[2]

# docs/design/pod-identity.md 5.6, as a tenant would write it by hand.
DESIGN_SNIPPET = """
spec:
  serviceAccountName: billing
  containers:
    - name: app
      env:
        - {name: AWS_CONTAINER_CREDENTIALS_FULL_URI, value: "http://169.254.170.23/v1/credentials"}
        - {name: AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, value: /var/run/secrets/vaultsts.io/pod-identity/token}
      volumeMounts:
        - {name: vaultsts-pod-identity, mountPath: /var/run/secrets/vaultsts.io/pod-identity, readOnly: true}
  volumes:
    - name: vaultsts-pod-identity
      projected:
        sources:
          - serviceAccountToken: {audience: vaultsts.io/pod-identity, expirationSeconds: 3600, path: token}
"""


def smp(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The strategic merge of the few pod-spec lists the patch touches (containers, env, volumes by name;
    volumeMounts by mountPath; other lists replaced), enough to apply a patch twice in a test."""
    keys = {"containers": "name", "env": "name", "volumes": "name", "volumeMounts": "mountPath"}
    out = copy.deepcopy(target)
    for field, value in patch.items():
        if isinstance(value, dict):
            out[field] = smp(out.get(field) or {}, value)
        elif isinstance(value, list) and field in keys:
            merged = list(out.get(field) or [])
            for item in value:
                at = next((i for i, have in enumerate(merged) if have.get(keys[field]) == item[keys[field]]), None)
                if at is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[at] = smp(merged[at], item)
            out[field] = merged
        else:
            out[field] = copy.deepcopy(value)
    return out


def template(*containers: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"serviceAccountName": "billing", "containers": list(containers)}
    if volumes is not None:
        spec["volumes"] = volumes
    return spec


def test_the_snippet_is_the_design_s():
    printed = pi.render_snippet(service_account="billing")
    assert yaml.safe_load(printed) == yaml.safe_load(DESIGN_SNIPPET)
    assert printed.startswith("# Pod Identity")  # says where it goes and what else must hold
    assert "AWS_ACCESS_KEY_ID" in printed.split("spec:")[0]


def test_the_snippet_names_the_container_and_takes_another_audience():
    snippet = yaml.safe_load(pi.render_snippet(container="worker", audience="example.com/pods"))
    assert "serviceAccountName" not in snippet["spec"]
    assert [c["name"] for c in snippet["spec"]["containers"]] == ["worker"]
    token = snippet["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "example.com/pods", "expirationSeconds": 3600, "path": "token"}


def test_the_snippet_matches_the_operator_agent_and_chart_defaults():
    values = yaml.safe_load((ROOT / "charts/vault-sts-operator/values.yaml").read_text())
    assert pi.AUDIENCE == PodIdentityConfig().audience == AGENT_AUDIENCE_DEFAULT == values["podIdentity"]["audience"]
    assert f"http://{values['podIdentity']['agent']['addresses'][0]}/v1/credentials" == pi.CREDENTIALS_URI
    assert pi.EXPIRATION_SECONDS >= 600  # the API server's minimum for a projected token


def test_patch_sets_up_every_container_and_a_second_run_changes_nothing():
    spec = template({"name": "app", "image": "x", "env": [{"name": "LOG", "value": "1"}]},
                    {"name": "worker", "image": "y"}, volumes=[{"name": "data", "emptyDir": {}}])
    first = pi.plan(spec)
    assert first.containers == ["app", "worker"] and not first.refusals
    assert any("volume vaultsts-pod-identity" in change for change in first.changes)
    body = first.patch["spec"]["template"]["spec"]
    assert [c["name"] for c in body["containers"]] == ["app", "worker"]
    assert body["volumes"] == [pi.volume()]
    patched = smp({"spec": {"template": {"spec": spec}}}, first.patch)["spec"]["template"]["spec"]
    app = patched["containers"][0]
    assert [e["name"] for e in app["env"]] == ["LOG", pi.URI_ENV, pi.TOKEN_FILE_ENV]  # the others are kept
    assert [v["name"] for v in patched["volumes"]] == ["data", pi.VOLUME]
    again = pi.plan(patched)
    assert again.changes == [] and again.refusals == []


def test_patch_of_one_container_leaves_the_others_alone():
    spec = template({"name": "app"}, {"name": "sidecar", "env": [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}]})
    decided = pi.plan(spec, container="app")
    assert decided.containers == ["app"] and not decided.refusals  # the sidecar's keys are not this patch's business
    assert [c["name"] for c in decided.patch["spec"]["template"]["spec"]["containers"]] == ["app"]
    with pytest.raises(pi.UsageError, match="no container 'web'") as raised:
        pi.plan(spec, container="web")
    assert raised.value.exit_code == 2


def test_a_changed_value_or_audience_is_put_back():
    spec = template({"name": "app", "env": [{"name": pi.URI_ENV, "value": "http://169.254.170.2/v1/creds"}],
                     "volumeMounts": [pi.volume_mount()]}, volumes=[pi.volume("other")])
    decided = pi.plan(spec)
    assert decided.changes == ["container app: env AWS_CONTAINER_CREDENTIALS_FULL_URI",
                               "container app: env AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                               "volume vaultsts-pod-identity (projected token, audience vaultsts.io/pod-identity)"]
    assert pi.plan(smp({"spec": {"template": {"spec": spec}}}, decided.patch)["spec"]["template"]["spec"]).changes == []
    # only what the patch sets counts: a defaultMode of the volume is kept by the merge and is no change
    kept = template({"name": "app", "env": pi.env(), "volumeMounts": [pi.volume_mount()]},
                    volumes=[{**pi.volume(), "projected": {**pi.volume()["projected"], "defaultMode": 0o440}}])
    assert pi.plan(kept).changes == []


def test_environment_keys_refuse_the_patch():
    in_env = template({"name": "app", "env": [{"name": "AWS_ACCESS_KEY_ID",
                                               "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]})
    assert pi.plan(in_env).refusals == ["container app sets AWS_ACCESS_KEY_ID in env"]
    from_secret = template({"name": "app", "envFrom": [{"secretRef": {"name": "billing-aws"}},
                                                       {"configMapRef": {"name": "settings"}}]})
    assert pi.env_from_secrets(from_secret, ["app"]) == ["billing-aws"]
    keys = {"billing-aws": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]}
    assert pi.plan(from_secret, secret_keys=keys).refusals == [
        "container app gets AWS_ACCESS_KEY_ID from Secret billing-aws (envFrom)"]
    prefixed = template({"name": "app", "envFrom": [{"prefix": "AWS_", "secretRef": {"name": "keys"}}]})
    assert pi.plan(prefixed, secret_keys={"keys": ["ACCESS_KEY_ID"]}).refusals
    assert pi.plan(prefixed, secret_keys={"keys": ["REGION"]}).refusals == []


def test_a_secret_that_cannot_be_read_is_a_warning_not_a_guess():
    spec = template({"name": "app", "envFrom": [{"secretRef": {"name": "billing"}}]})
    decided = pi.plan(spec, secret_keys={"billing": None})
    assert decided.refusals == [] and decided.changes
    assert "could not be read" in decided.warnings[0] and "deletes it" in decided.warnings[0]


def test_other_variables_that_shadow_container_credentials_are_warned_about():
    spec = template({"name": "app", "env": [{"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/aws/credentials"},
                                            {"name": "AWS_CONTAINER_AUTHORIZATION_TOKEN", "value": "x"}]})
    decided = pi.plan(spec)
    assert decided.refusals == [] and len(decided.warnings) == 2


def test_what_a_merge_cannot_fix_is_refused():
    secret_volume = template({"name": "app"}, volumes=[{"name": pi.VOLUME, "secret": {"secretName": "x"}}])
    assert "not a projected token" in pi.plan(secret_volume).refusals[0]
    sub_path = template({"name": "app", "volumeMounts": [{"name": "cfg", "mountPath": pi.TOKEN_DIR,
                                                          "subPath": "token"}]})
    assert "subPath" in pi.plan(sub_path).refusals[0]
    from_field = template({"name": "app", "env": [{"name": pi.URI_ENV, "valueFrom": {"configMapKeyRef": {
        "name": "c", "key": "k"}}}]})
    assert "valueFrom" in pi.plan(from_field).refusals[0]


def test_kubectl_spellings_of_the_target():
    assert pi.parse_target("deploy/billing") == ("Deployment", "deployments", "billing")
    assert pi.parse_target("Deployment.apps/billing") == ("Deployment", "deployments", "billing")
    assert pi.parse_target("sts/db") == ("StatefulSet", "statefulsets", "db")
    assert pi.parse_target("daemonsets/agent") == ("DaemonSet", "daemonsets", "agent")
    for bad in ("billing", "pod/billing", "deploy/", "deploy/a/b", "cronjob/x"):
        with pytest.raises(pi.UsageError):
            pi.parse_target(bad)


def test_the_serving_credential_is_the_older_as_the_operator_decides():
    def arc(name: str, created: str, mode: str, accounts: list[str]) -> dict[str, Any]:
        return {"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"delivery": {"mode": mode, "serviceAccounts": accounts}}}

    found = [arc("new", "2026-12-02T00:00:00Z", "PodIdentity", ["billing"]),
             arc("old", "2026-12-01T00:00:00Z", "PodIdentity", ["billing", "worker"]),
             arc("secret", "2026-11-01T00:00:00Z", "Secret", ["billing"])]
    assert pi.serving_credential(found, "billing") == "old"
    assert pi.serving_credential(found, "worker") == "old"
    assert pi.serving_credential(found, "default") is None
    assert pi.service_account_of({}) == "default"


@pytest.mark.parametrize("parser", [_parser, plugin_parser])
def test_both_command_lines_have_the_verb(parser):
    args = parser().parse_args(["pod-identity", "patch", "deploy/x", "-n", "team-a", "--container", "app",
                                "--dry-run"])
    assert (args.target, args.namespace, args.container, args.dry_run) == ("deploy/x", "team-a", "app", True)
    args = parser().parse_args(["pod-identity", "snippet", "--service-account", "billing"])
    assert args.handler is pi.run_snippet and args.audience == pi.AUDIENCE
