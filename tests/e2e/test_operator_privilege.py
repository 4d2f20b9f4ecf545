"""The operator holds no more than it needs (issue 10), tried as an MFAIdentity author or a tenant would.

Every attack points the identity's Vault at a trap: a local HTTP server that counts what reaches it. A
refused attack leaves the trap at 0 requests, the identity's MFA device at 0 codes (so 0 STS calls: both
GetSessionToken and a direct AssumeRole need one), no Secret, and a clear condition and Event.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import hvac
import pytest

from devstack.kubeconfig import kubeconfig_for_service_account
from devstack.manifests import GROUP, VERSION, assumed_role_credential, mfa_identity
from devstack.operator_run import OPERATOR_NAMESPACE, TEST_OPERATOR_ARGS, OperatorProcess
from devstack.seed import RoleSpec, SeededIdentity, seed_identity
from tests.conftest import NAMESPACED_HOME, NAMESPACED_RELEASE_SA, NAMESPACED_WATCHED
from tests.e2e.helpers import MFAID, TRAP_VAULT_ADDRESS, TRAP_VAULT_PORT, wait_for

pytestmark = pytest.mark.usefixtures("operator")


class Trap:
    """Counts every request that reaches it (and whether it carried a credential); answers 403. Keeps the JWTs
    of kubernetes-auth logins in memory (never printed), to replay them elsewhere."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[str, str, bool]] = []
        self.jwts: list[str] = []
        trap = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                carried = bool(self.headers.get("X-Vault-Token") or b"jwt" in body or b"secret_id" in body)
                trap.requests.append((self.command, self.path, carried))
                if self.path.endswith("/login") and b"jwt" in body:
                    trap.jwts.append(str(json.loads(body)["jwt"]))
                self.send_response(403)
                self.end_headers()

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Trap:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def trap() -> Iterator[Trap]:
    """A trap at the second Vault address the operator is allowed (TRAP_VAULT_ADDRESS): what an identity author
    who names an allowed address can make the operator send there."""
    with Trap(TRAP_VAULT_PORT) as running:
        assert running.address == TRAP_VAULT_ADDRESS
        yield running


@pytest.fixture
def unlisted_trap() -> Iterator[Trap]:
    """A trap at an address the platform did not list."""
    with Trap() as running:
        yield running


@pytest.fixture
def team(kube: Any, unique: str) -> str:
    return str(kube.namespace(f"priv-{unique}"))


@pytest.fixture
def seeded(stack: Any, unique: str) -> SeededIdentity:
    return seed_identity(stack, f"priv-{unique}", roles=[RoleSpec(f"app-priv-{unique}")])


def identity_ready(kube: Any, name: str) -> dict[str, Any]:
    def failed() -> dict[str, Any] | None:
        body = kube.custom.get_cluster_custom_object(GROUP, VERSION, MFAID, name)
        conds = [c for c in (body.get("status") or {}).get("conditions") or () if c["type"] == "Ready"]
        return conds[0] if conds and conds[0]["status"] == "False" else None
    return dict(wait_for(f"MFAIdentity {name} Ready=False", failed))


def codes_spent(emulator_admin: Any, serial: str) -> int:
    counters = emulator_admin.counters()
    return int(counters["codes_accepted_by_serial"].get(serial, 0) + counters["codes_refused_by_serial"].get(serial, 0))


ATTACKS = {
    # the identity names its own Vault and no auth: the operator's default auth (its ServiceAccount JWT) must
    # not be sent there
    "own-address-default-auth": ({}, "spec.vault.auth is required: spec.vault.address names a Vault other than "
                                     "the operator's default"),
    # a token from a Secret in kube-system
    "token-from-kube-system": ({"auth": {"tokenSecretRef": {"name": "bootstrap", "namespace": "kube-system",
                                                            "key": "token"}}},
                               "tokenSecretRef.namespace 'kube-system' is not allowed"),
    # an AppRole SecretID from a tenant's namespace
    "secret-id-from-a-tenant": ({"auth": {"appRole": {"roleId": "r", "secretIdRef": {
        "name": "sid", "namespace": "default", "key": "secret_id"}}}},
        "secretIdRef.namespace 'default' is not allowed"),
    # a CA bundle from another namespace (the Secret read is the attack: the operator's rights, not the author's)
    "ca-from-kube-system": ({"auth": {"kubernetes": {"role": "x"}},
                             "caSecretRef": {"name": "ca", "namespace": "kube-system", "key": "ca.crt"}},
                            "caSecretRef.namespace 'kube-system' is not allowed"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_identity_author_cannot_borrow_the_operators_credentials_or_rights(
        stack, kube, team, seeded, trap, emulator_admin, unique, attack):
    vault_patch, expected = ATTACKS[attack]
    manifest = mfa_identity(stack, seeded, name=f"{attack}-{unique}"[:60], allowed_namespaces=[team])
    manifest["spec"]["vault"] = {"address": trap.address, **vault_patch}
    kube.apply_identity(manifest)
    name = manifest["metadata"]["name"]
    kube.create_credential(assumed_role_credential(team, "app", name, seeded.role_arns[0]))

    cond = kube.wait_reason(team, "app", "InvalidSpec")
    assert expected in cond["message"], cond["message"]
    assert trap.address not in cond["message"]
    assert expected in identity_ready(kube, name)["message"]
    kube.wait_event(team, "app", f"InvalidSpec {expected!r}",
                    lambda e: e.reason == "InvalidSpec" and expected in e.message)
    time.sleep(2)  # let any (wrong) login attempt land
    assert trap.requests == [], trap.requests
    assert codes_spent(emulator_admin, seeded.mfa_serial) == 0
    assert kube.secret(team, "app") is None


UNLISTED = {
    # the identity names a Vault the platform did not list, with its own kubernetes auth: before issue 17 the
    # operator logged in there with its own ServiceAccount JWT, which the real Vault accepted too
    "vault-kubernetes-auth": ("vault", {"auth": {"kubernetes": {"role": "vault-sts-operator"}}},
                              "spec.vault.address is not a destination the platform allows"),
    "vault-token-auth": ("vault", {"auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}},
                         "spec.vault.address is not a destination the platform allows"),
    # the identity's STS endpoint receives TOTP codes and SigV4-signed requests
    "sts-endpoint": ("sts", {}, "spec.sts.endpoint is not a destination the platform allows"),
}


@pytest.mark.parametrize("attack", sorted(UNLISTED))
def test_an_identity_cannot_send_the_operator_to_an_unlisted_destination(
        stack, kube, team, seeded, unlisted_trap, emulator_admin, unique, attack):
    """Refused as InvalidSpec before any connection: the unlisted address receives nothing, no code is spent."""
    where, patch, expected = UNLISTED[attack]
    manifest = mfa_identity(stack, seeded, name=f"unlisted-{attack}-{unique}"[:60], allowed_namespaces=[team])
    if where == "vault":
        manifest["spec"]["vault"] = {"address": unlisted_trap.address, **patch}
    else:
        manifest["spec"]["sts"] = {"region": "us-east-1", "endpoint": unlisted_trap.address}
    kube.apply_identity(manifest)
    name = manifest["metadata"]["name"]
    kube.create_credential(assumed_role_credential(team, "app", name, seeded.role_arns[0]))

    cond = kube.wait_reason(team, "app", "InvalidSpec")
    assert expected in cond["message"], cond["message"]
    assert unlisted_trap.address not in cond["message"]
    assert expected in identity_ready(kube, name)["message"]
    time.sleep(3)  # let any (wrong) request land
    assert unlisted_trap.requests == [], unlisted_trap.requests
    assert codes_spent(emulator_admin, seeded.mfa_serial) == 0
    assert kube.secret(team, "app") is None


def test_the_default_vault_token_secret_goes_to_the_default_vault_only(stack, kube, operator, team, seeded, trap,
                                                                      emulator_admin, unique):
    """Issue 17's attack as tried: the operator's default auth is a Vault token from a Secret; an identity at
    another (allowed) address names that Secret in its own tokenSecretRef. Refused as InvalidSpec: the trap
    receives nothing (before, it got `GET /v1/auth/token/lookup-self` with the token, four times in 25 s)."""
    root = stack.vault()
    try:
        token = root.auth.token.create(policies=[seeded.policy], ttl="1h")["auth"]["client_token"]
    finally:
        root.adapter.close()
    secret = f"vault-token-{unique}"
    kube.core.create_namespaced_secret(OPERATOR_NAMESPACE, {"metadata": {"name": secret},
                                                            "stringData": {"token": token}})
    with_token = OperatorProcess(stack, name="operator-token-auth", kubeconfig=operator.kubeconfig,
                                 allowed_vault_addresses=[TRAP_VAULT_ADDRESS],
                                 extra_args=["--leader-election-lease", "vault-sts-operator", "--vault-auth", "token",
                                             "--vault-token-secret", f"{OPERATOR_NAMESPACE}/{secret}/token",
                                             *TEST_OPERATOR_ARGS])
    operator.stop()
    try:
        with_token.start()
        manifest = mfa_identity(stack, seeded, name=f"borrow-{unique}"[:60], allowed_namespaces=[team])
        manifest["spec"]["vault"] = {"address": trap.address,
                                     "auth": {"tokenSecretRef": {"name": secret, "key": "token"}}}
        kube.apply_identity(manifest)
        kube.create_credential(assumed_role_credential(team, "borrow", manifest["metadata"]["name"],
                                                       seeded.role_arns[0]))
        cond = kube.wait_reason(team, "borrow", "InvalidSpec")
        assert "names the Secret that holds the operator's default Vault credentials" in cond["message"]
        time.sleep(3)
        assert trap.requests == [], trap.requests
        assert codes_spent(emulator_admin, seeded.mfa_serial) == 0
        assert kube.secret(team, "borrow") is None
        kube.delete_credential(team, "borrow")
    finally:
        with_token.stop()
        kube.core.delete_namespaced_secret(secret, OPERATOR_NAMESPACE)
        operator.start()


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_a_token_one_vault_captured_opens_no_other(stack, kube, operator, team, seeded, trap, unique):
    """An identity at an allowed second Vault (here a trap that captures what it gets) with kubernetes auth: the
    operator logs in there with a token whose audience is that Vault's address, short-lived. The real Vault's
    role requires its own audience, so the captured token is refused there; the operator's own token, with the
    default Vault's audience, is accepted (the control)."""
    manifest = mfa_identity(stack, seeded, name=f"captured-{unique}"[:60], allowed_namespaces=[team])
    manifest["spec"]["vault"] = {"address": trap.address, "auth": {"kubernetes": {"role": seeded.auth_role}}}
    kube.apply_identity(manifest)
    wait_for("the trap to receive a kubernetes-auth login", lambda: trap.jwts, timeout=60)
    captured = trap.jwts[0]
    claims = _claims(captured)
    assert claims["aud"] == [TRAP_VAULT_ADDRESS], claims["aud"]
    assert claims["exp"] - claims["iat"] <= 3600, "the token for another Vault is short-lived"
    assert claims["sub"] == "system:serviceaccount:vault-sts-operator:vault-sts-operator"
    real = stack.vault(token="")
    try:
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
            real.auth.kubernetes.login(role=seeded.auth_role, jwt=captured)
        own = operator.token_file.read_text().strip()  # what the operator sends to its default Vault
        assert _claims(own)["aud"] != claims["aud"]
        assert real.auth.kubernetes.login(role=seeded.auth_role, jwt=own)["auth"]["client_token"]
    finally:
        real.adapter.close()
    kube.custom.delete_cluster_custom_object(GROUP, VERSION, MFAID, manifest["metadata"]["name"])


def test_plain_http_default_vault_needs_the_development_setting(stack):
    """Started without --allow-insecure-http, an http:// default Vault address stops the operator at once,
    before it contacts anything."""
    # The stack's Vault speaks TLS: the same address with http:// is what a careless default looks like.
    env = {**stack.subprocess_env(), "VAULT_ADDR": stack.vault_addr.replace("https://", "http://", 1)}
    env.pop("VSO_ALLOW_INSECURE_HTTP", None)
    result = subprocess.run([sys.executable, "-m", "vault_sts_operator", "run", "--liveness", "", "--metrics-port",
                             "0"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "uses http://: plain HTTP needs --allow-insecure-http" in result.stderr, result.stderr


def _delete_and_time_recovery(kube: Any, team: str, name: str, emulator_admin: Any, seeded: Any,
                              issued: Any) -> float:
    before = kube.wait_ready(team, name, timeout=90)["status"]
    codes = codes_spent(emulator_admin, seeded.mfa_serial)
    # The Event of an issue is posted after its status: count once the current key's Event is there.
    issued_event(kube, team, name, before["accessKeyId"])
    issues = issue_events(kube, team, name)
    kube.core.delete_namespaced_secret(name, team)
    deleted_at = time.monotonic()
    back = wait_for("the Secret back", lambda: kube.secret(team, name), timeout=60, interval=0.25)
    back_after = time.monotonic() - deleted_at
    issued.add_secret(back)
    key = back["data"]["AWS_ACCESS_KEY_ID"]
    after = wait_for("the status names the new key", lambda: (
        s := kube.credential(team, name).get("status") or {}).get("accessKeyId") == key and s)
    issued_event(kube, team, name, key)
    # The operator keeps no secret value in memory: the Secret is issued again, from the cached MFA session:
    # one AssumeRole, no GetSessionToken, no TOTP code.
    assert after["accessKeyId"] != before["accessKeyId"]
    assert codes_spent(emulator_admin, seeded.mfa_serial) == codes
    assert issue_events(kube, team, name) == issues + 1
    return back_after


def test_secret_deleted_by_hand_is_back_at_once_cluster_scope(stack, kube, team, seeded, emulator_admin, issued):
    """The chart's default in the cluster-wide mode (secretRecovery.clusterMode=watch): a label-selected watch."""
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team]))
    kube.create_credential(assumed_role_credential(team, "app", seeded.name, seeded.role_arns[0]))
    back_after = _delete_and_time_recovery(kube, team, "app", emulator_admin, seeded, issued)
    assert back_after < 10, back_after
    print(f"cluster scope (label-selected watch): Secret back after {back_after:.1f}s")


def test_secret_deleted_by_hand_is_back_by_the_check_without_a_watch(stack, kube, operator, team, seeded,
                                                                    emulator_admin, issued):
    """secretRecovery.clusterMode=check (no list/watch on Secrets): each pass reads its Secret by name, at
    least every --secret-check-interval (15 s here; the chart's default is 45 s)."""
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team]))
    checker = OperatorProcess(stack, name="operator-check", kubeconfig=operator.kubeconfig, watch_secrets=False,
                              extra_args=["--leader-election-lease", "vault-sts-operator",
                                          "--secret-check-interval", "15", *TEST_OPERATOR_ARGS])
    operator.stop()
    try:
        checker.start()
        kube.create_credential(assumed_role_credential(team, "checked", seeded.name, seeded.role_arns[0]))
        back_after = _delete_and_time_recovery(kube, team, "checked", emulator_admin, seeded, issued)
        assert back_after < 30, back_after
        print(f"cluster scope (by-name check every 15 s): Secret back after {back_after:.1f}s")
        kube.delete_credential(team, "checked")
    finally:
        checker.stop()
        operator.start()


def issue_events(kube: Any, ns: str, name: str) -> int:
    return sum(e.count or 1 for e in kube.events(ns, name) if e.reason in ("Issued", "Rotated"))


def issued_event(kube: Any, ns: str, name: str, access_key_id: str) -> None:
    kube.wait_event(ns, name, f"Issued or Rotated for {access_key_id}",
                    lambda e: e.reason in ("Issued", "Rotated") and access_key_id in (e.message or ""))


def test_secret_deleted_by_hand_is_back_at_once_namespaced_scope(stack, kube, operator, namespaced_release, unique,
                                                                 emulator_admin, issued):
    """Namespaced RBAC: the operator watches its own Secrets (label-selected) and wakes their credential."""
    team = NAMESPACED_WATCHED[0]
    seeded = seed_identity(stack, f"watch-{unique}", roles=[RoleSpec(f"app-watch-{unique}")],
                           bound_namespaces=(NAMESPACED_HOME,), bound_service_accounts=(NAMESPACED_RELEASE_SA,))
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[team]))
    kubeconfig = kubeconfig_for_service_account(stack, NAMESPACED_HOME, NAMESPACED_RELEASE_SA,
                                                stack.stack_dir / "operator-scoped.kubeconfig")
    scoped = OperatorProcess(stack, name="operator-scoped", kubeconfig=kubeconfig, namespace=NAMESPACED_HOME,
                             service_account=NAMESPACED_RELEASE_SA, watch_secrets=True,
                             extra_args=["--namespace", team])
    operator.stop()  # the cluster-wide instance steps aside
    offset = len(scoped.log_text())  # the log file is appended to across runs
    try:
        scoped.start()
        name = f"w-{unique}"
        kube.create_credential(assumed_role_credential(team, name, seeded.name, seeded.role_arns[0]))
        back_after = _delete_and_time_recovery(kube, team, name, emulator_admin, seeded, issued)
        assert back_after < 10, back_after
        log = scoped.log_text()[offset:]
        assert "was deleted; waking its credential" in log
        assert "Forbidden" not in log  # the namespaced RBAC is enough
        print(f"namespaced scope (label-selected watch): Secret back after {back_after:.1f}s")
        kube.delete_credential(team, name)
    finally:
        scoped.stop()
        operator.start()
