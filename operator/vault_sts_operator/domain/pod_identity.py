"""Who may receive which credentials in mode PodIdentity: the verdict over two TokenReviews. Pure.

A node agent asks the operator for a pod's credentials with two tokens (docs/design/pod-identity.md 4.2, 4.3):
its own projected ServiceAccount token (audience `agent_audience`) and the pod's (audience `audience`). The API
server reviews both; this module decides from the two reviews, in this order, each refusal with its own code:

1. the agent's token authenticates, for the agent audience, as the chart's agent ServiceAccount, bound to a pod
   (so it carries the agent's node): else 401 AgentUnauthenticated (an unverified pre-check refuses a token that
   cannot be the agent's before any review);
2. the pod's token authenticates for the pod audience as a ServiceAccount: else 401 PodTokenInvalid; it is bound
   to a pod and carries that pod's node: else 403 NotPodBound (a `kubectl create token` token has no pod);
3. the pod's node is the agent's node: else 403 NodeMismatch (an agent can obtain only the credentials of pods
   on its own node; NodeRestriction keeps a node from minting tokens for pods elsewhere);
4. then (services/pod_identity_server.py) the namespace's binding, the credential's state, and leadership.

Nothing here sees a token: the reviews carry only what the API server says about them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The extras a TokenReview returns for a pod-bound token (k8s.io/apiserver pkg/authentication/serviceaccount).
POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
NODE_NAME = "authentication.kubernetes.io/node-name"
SA_PREFIX = "system:serviceaccount:"

# Refusal codes, as the agent passes them on to the SDK and the metric labels them.
AGENT_UNAUTHENTICATED = "AgentUnauthenticated"
POD_TOKEN_INVALID = "PodTokenInvalid"
NOT_POD_BOUND = "NotPodBound"
NODE_MISMATCH = "NodeMismatch"
NOT_BOUND = "NotBound"
NOT_ALLOWED = "NotAllowed"
NOT_READY = "NotReady"
NOT_LEADER = "NotLeader"
THROTTLED = "Throttled"
BAD_REQUEST = "BadRequest"
GRANTED = "Granted"


@dataclass(frozen=True)
class Review:
    """What the API server said about a token (None of it is the token)."""

    authenticated: bool
    username: str = ""
    audiences: tuple[str, ...] = ()
    extra: Mapping[str, Sequence[str]] | None = None

    def one(self, key: str) -> str:
        values = (self.extra or {}).get(key) or ()
        return str(values[0]) if len(values) == 1 else ""


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str


@dataclass(frozen=True)
class PodSubject:
    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str
    node: str


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, read WITHOUT checking its signature: for a cheap pre-check (the agent) or for bounding
    a cache by a token the API server has verified (the operator). ValueError says what is wrong."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("is not a JWT")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError("payload is not JSON") from None
    if not isinstance(claims, dict):
        raise ValueError("payload is not a JSON object")
    return claims


def service_account_of(username: str) -> tuple[str, str] | None:
    """(namespace, name) of a ServiceAccount username, or None for any other user."""
    if not username.startswith(SA_PREFIX):
        return None
    namespace, sep, name = username[len(SA_PREFIX):].partition(":")
    if not sep or not namespace or not name or ":" in name:
        return None
    return namespace, name


def agent_token_precheck(token: str, *, audience: str, agent: tuple[str, str], now: float) -> Refusal | None:
    """Refuse, before any TokenReview, a token that cannot be the agent's: not a JWT, expired, of another audience
    or another subject (claims read UNVERIFIED). A tenant's own token, a token sprayed at random or one of the
    pod audience costs the API server nothing; only a forgery that copies the agent's claims reaches a review,
    and those are paced per address (services/pod_identity_server.py). Never the verdict: agent_node is."""
    refused = Refusal(401, AGENT_UNAUTHENTICATED,
                      "the agent's token is not a current token of the agent's ServiceAccount for audience "
                      f"{audience!r}")
    try:
        claims = unverified_claims(token)
    except ValueError:
        return refused
    if claims_problem(claims, audience=audience, now=now) is not None:
        return refused
    if claims.get("sub") != f"{SA_PREFIX}{agent[0]}:{agent[1]}":
        return refused
    return None


def claims_problem(claims: Mapping[str, Any], *, audience: str, now: float) -> str | None:
    """Why unverified claims cannot be a current token for `audience` ("has no expiry (exp)", "has expired", "is
    not for audience ..."), or None: the one reading of `exp` and `aud` for both pre-checks (agent and operator)."""
    exp, aud = claims.get("exp"), claims.get("aud")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return "has no expiry (exp)"
    if exp <= now:
        return "has expired"
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        return f"is not for audience {audience}"
    return None


def agent_node(review: Review, *, audience: str, agent: tuple[str, str]) -> str | Refusal:
    """The node the asking agent runs on, from its own token's review; `agent` = (namespace, ServiceAccount)."""
    refused = Refusal(401, AGENT_UNAUTHENTICATED,
                      "the agent's token is not a current token of the agent's ServiceAccount for audience "
                      f"{audience!r}")
    if not review.authenticated or audience not in review.audiences:
        return refused
    if service_account_of(review.username) != agent:
        return refused
    node = review.one(NODE_NAME)
    if not node or not review.one(POD_UID):
        return Refusal(401, AGENT_UNAUTHENTICATED, "the agent's token is not bound to a pod on a node")
    return node


def pod_subject(review: Review, *, audience: str) -> PodSubject | Refusal:
    """The pod a pod token stands for, from its review."""
    if not review.authenticated or audience not in review.audiences:
        return Refusal(401, POD_TOKEN_INVALID,
                       f"the pod's token is not valid for audience {audience!r} (expired, another audience, or its "
                       "pod or ServiceAccount is gone): mount a projected serviceAccountToken with that audience")
    account = service_account_of(review.username)
    if account is None:
        return Refusal(401, POD_TOKEN_INVALID, "the pod's token is not a ServiceAccount token")
    pod_name, pod_uid, node = review.one(POD_NAME), review.one(POD_UID), review.one(NODE_NAME)
    if not (pod_name and pod_uid and node):
        return Refusal(403, NOT_POD_BOUND, "the token is not bound to a pod on a node: use the projected token the "
                                           "kubelet mounts, not one made with `kubectl create token`")
    return PodSubject(namespace=account[0], service_account=account[1], pod_name=pod_name, pod_uid=pod_uid,
                      node=node)


def node_refusal(pod: PodSubject, node: str) -> Refusal | None:
    """An agent may obtain only the credentials of pods on its own node."""
    if pod.node == node:
        return None
    return Refusal(403, NODE_MISMATCH, "the pod does not run on the asking agent's node")


def not_bound(pod: PodSubject) -> Refusal:
    return Refusal(403, NOT_BOUND, f"no AssumedRoleCredential in namespace {pod.namespace} serves ServiceAccount "
                                   f"{pod.service_account} (spec.delivery.serviceAccounts)")
