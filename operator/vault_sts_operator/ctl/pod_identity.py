"""`vault-sts-operator pod-identity snippet|patch`: put a workload on Pod Identity (docs/pod-identity.md).

A pod of mode PodIdentity needs the same few lines whatever it is: two environment variables that send every AWS
SDK's default chain to the node agent (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`)
and a projected ServiceAccount token of audience vaultsts.io/pod-identity for it to send. There is no admission
webhook to inject them (docs/design/pod-identity.md, section 3): `snippet` prints them, `patch` writes them into a
Deployment's, StatefulSet's or DaemonSet's pod template as a strategic-merge patch (the pods roll out). `patch` is
idempotent, and refuses a container that already gets AWS_ACCESS_KEY_ID from its environment: environment keys
come before container credentials in every SDK's default chain, so such a pod would go on using them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from vault_sts_operator.ctl.errors import OK, CtlError, NotFound, Unreachable

if TYPE_CHECKING:  # the client (aiohttp) is imported when a verb runs: `--help` stays fast
    from vault_sts_operator.ctl.kube import Kube

# The consumer side of the protocol (docs/design/pod-identity.md 5.6). The address is the one every SDK accepts
# over plain HTTP (botocore, Go v2, JS v3 and Java v2: section 1.1); the audience is the operator's and the
# chart's default (`--pod-identity-audience`, `podIdentity.audience`).
CREDENTIALS_URI = "http://169.254.170.23/v1/credentials"
AUDIENCE = "vaultsts.io/pod-identity"
TOKEN_DIR = "/var/run/secrets/vaultsts.io/pod-identity"
TOKEN_PATH = "token"
TOKEN_FILE = f"{TOKEN_DIR}/{TOKEN_PATH}"
VOLUME = "vaultsts-pod-identity"
EXPIRATION_SECONDS = 3600  # the kubelet renews at 80 %; the SDKs read the file again at every fetch

URI_ENV = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
TOKEN_FILE_ENV = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
# Set, it wins over container credentials in every default chain: the pod would keep the Secret's keys.
ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
# Set, these also win over (or change) container credentials in some SDKs' chains: worth a warning, not a refusal.
SHADOWING_ENV = {
    "AWS_SHARED_CREDENTIALS_FILE": "a shared credentials file comes before container credentials in every chain",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "web identity (IRSA) comes before container credentials in every chain",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "botocore and the Go SDK prefer it over the FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "the Java SDK sends it instead of the token file",
}

KINDS = {
    "deployment": ("Deployment", "deployments", "deployment.apps"),
    "statefulset": ("StatefulSet", "statefulsets", "statefulset.apps"),
    "daemonset": ("DaemonSet", "daemonsets", "daemonset.apps"),
}
KIND_ALIASES = {"deploy": "deployment", "sts": "statefulset", "ds": "daemonset"}

EXIT_HELP = """exit codes:
  0  printed / patched / already set up (unchanged)
  1  refused: a container gets AWS_ACCESS_KEY_ID from its environment, or the API server refused the patch
  2  usage error (bad KIND/NAME, no such container)
  3  no such workload
  4  Kubernetes API unreachable or refusing our credentials"""


class UsageError(CtlError):
    exit_code = 2


# -- the pure part: what a pod needs, and the patch that gives it --------------------------------------------------
def env() -> list[dict[str, str]]:
    return [{"name": URI_ENV, "value": CREDENTIALS_URI}, {"name": TOKEN_FILE_ENV, "value": TOKEN_FILE}]


def volume_mount() -> dict[str, Any]:
    return {"name": VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}


def volume(audience: str = AUDIENCE) -> dict[str, Any]:
    return {"name": VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": audience, "expirationSeconds": EXPIRATION_SECONDS, "path": TOKEN_PATH}}]}}


def container_fragment(name: str) -> dict[str, Any]:
    return {"name": name, "env": env(), "volumeMounts": [volume_mount()]}


def snippet(*, service_account: str = "", containers: Sequence[str] = ("app",), audience: str = AUDIENCE
            ) -> dict[str, Any]:
    """The pod-spec fragment of docs/design/pod-identity.md 5.6, as a mapping."""
    spec: dict[str, Any] = {}
    if service_account:
        spec["serviceAccountName"] = service_account
    spec["containers"] = [container_fragment(name) for name in containers]
    spec["volumes"] = [volume(audience)]
    return {"spec": spec}


def render_snippet(*, service_account: str = "", container: str = "", audience: str = AUDIENCE) -> str:
    """The snippet as YAML for a pod spec (or a workload's `spec.template`), with a comment that says where it
    goes and what must be true for it to work."""
    head = [
        "# Pod Identity (docs/pod-identity.md): merge into the pod spec (a workload's spec.template).",
        "# The pod's ServiceAccount must be listed in spec.delivery.serviceAccounts of an AssumedRoleCredential",
        "# of its namespace (mode PodIdentity). Remove any AWS_ACCESS_KEY_ID from the container's env/envFrom:",
        "# environment keys win over container credentials in every SDK's default chain.",
    ]
    if not service_account:
        head.append("# serviceAccountName: <a ServiceAccount the credential names>")
    if not container:
        head.append("# Add env and volumeMounts to every container that calls AWS (here: `app`).")
    body = yaml.safe_dump(snippet(service_account=service_account, containers=(container or "app",),
                                  audience=audience), sort_keys=False, default_flow_style=False)
    return "\n".join(head) + "\n" + body


@dataclass
class Plan:
    """What `patch` would do to one pod template."""

    containers: list[str]  # the containers set up (all, or the one named)
    changes: list[str] = field(default_factory=list)  # what differs from the snippet; empty: nothing to do
    refusals: list[str] = field(default_factory=list)  # why it must not be patched
    warnings: list[str] = field(default_factory=list)  # what the user should know, patched or not
    patch: dict[str, Any] = field(default_factory=dict)  # the strategic-merge patch of the workload


def env_from_secrets(pod_spec: Mapping[str, Any], containers: Iterable[str]) -> list[str]:
    """The Secrets the named containers take their environment from (`envFrom[].secretRef`), to look for keys."""
    wanted = set(containers)
    names: list[str] = []
    for container in pod_spec.get("containers") or ():
        if container.get("name") not in wanted:
            continue
        for source in container.get("envFrom") or ():
            name = (source.get("secretRef") or {}).get("name")
            if name and name not in names:
                names.append(str(name))
    return names


def _environment_problems(container: Mapping[str, Any], secret_keys: Mapping[str, Sequence[str] | None]
                          ) -> tuple[list[str], list[str]]:
    name = container.get("name")
    refusals: list[str] = []
    warnings: list[str] = []
    for item in container.get("env") or ():
        if item.get("name") == ACCESS_KEY_ENV:
            refusals.append(f"container {name} sets {ACCESS_KEY_ENV} in env")
        elif item.get("name") in SHADOWING_ENV:
            warnings.append(f"container {name} sets {item['name']}: {SHADOWING_ENV[item['name']]}")
        elif item.get("name") in (URI_ENV, TOKEN_FILE_ENV) and "valueFrom" in item:
            refusals.append(f"container {name} sets {item['name']} from valueFrom; remove it, the patch sets a value")
    for source in container.get("envFrom") or ():
        secret = (source.get("secretRef") or {}).get("name")
        if not secret:
            continue
        keys = secret_keys.get(secret)
        prefix = str(source.get("prefix") or "")
        if keys is None:
            warnings.append(f"container {name} takes its environment from Secret {secret}, which could not be read "
                            f"to look for {ACCESS_KEY_ENV} (it may be the credential's former Secret: mode "
                            "PodIdentity deletes it, and a pod whose envFrom names a missing Secret does not start; "
                            "remove the envFrom)")
        elif ACCESS_KEY_ENV in {prefix + key for key in keys}:
            refusals.append(f"container {name} gets {ACCESS_KEY_ENV} from Secret {secret} (envFrom)")
    return refusals, warnings


def plan(pod_spec: Mapping[str, Any], *, container: str = "", audience: str = AUDIENCE,
         secret_keys: Mapping[str, Sequence[str] | None] | None = None) -> Plan:
    """Decide the patch of a pod template's spec: the containers it sets up, what changes, and whether it may.

    `secret_keys`: for each Secret of `env_from_secrets`, its key names (None: it could not be read)."""
    secret_keys = secret_keys or {}
    present = [c for c in pod_spec.get("containers") or () if c.get("name")]
    names = [str(c["name"]) for c in present]
    if container and container not in names:
        raise UsageError(f"the pod template has no container {container!r} (it has: {', '.join(names) or 'none'})")
    targets = [c for c in present if not container or c["name"] == container]
    result = Plan(containers=[str(c["name"]) for c in targets])
    for target in targets:
        refusals, warnings = _environment_problems(target, secret_keys)
        result.refusals += refusals
        result.warnings += warnings
        current_env = {item.get("name"): item for item in target.get("env") or ()}
        for wanted in env():
            have = current_env.get(wanted["name"])
            if have is None or have.get("value") != wanted["value"] or "valueFrom" in have:
                result.changes.append(f"container {target['name']}: env {wanted['name']}")
        mounts = {m.get("mountPath"): m for m in target.get("volumeMounts") or ()}
        have_mount = mounts.get(TOKEN_DIR)
        if have_mount is not None and (have_mount.get("subPath") or have_mount.get("subPathExpr")):
            # a merge would keep the subPath and mount one file where the SDKs expect a directory
            result.refusals.append(f"container {target['name']} mounts {TOKEN_DIR} with a subPath; remove that "
                                   "mount first")
        if have_mount is None or any(have_mount.get(k) != v for k, v in volume_mount().items()):
            result.changes.append(f"container {target['name']}: volumeMount {TOKEN_DIR}")
    volumes = {v.get("name"): v for v in pod_spec.get("volumes") or ()}
    have_volume = volumes.get(VOLUME)
    wanted_volume = volume(audience)
    # Compared on what the patch sets (a merge keeps other fields, such as projected.defaultMode, as they are).
    if have_volume is None or (have_volume.get("projected") or {}).get("sources") != \
            wanted_volume["projected"]["sources"]:
        if have_volume is not None and set(have_volume) - {"name", "projected"}:
            result.refusals.append(f"the pod template has a volume {VOLUME} that is not a projected token; rename "
                                   "or remove it first")
        result.changes.append(f"volume {VOLUME} (projected token, audience {audience})")
    result.patch = {"spec": {"template": {"spec": {
        "containers": [container_fragment(name) for name in result.containers],
        "volumes": [wanted_volume]}}}}
    return result


def service_account_of(pod_spec: Mapping[str, Any]) -> str:
    return str(pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or "default")


def serving_credential(credentials: Iterable[Mapping[str, Any]], service_account: str) -> str | None:
    """The AssumedRoleCredential (of the workload's namespace) whose spec.delivery names the ServiceAccount in mode
    PodIdentity; the older one when two do, as the operator decides (domain/delivery.py `serving`)."""
    named = []
    for body in credentials:
        delivery = (body.get("spec") or {}).get("delivery") or {}
        if delivery.get("mode") == "PodIdentity" and service_account in (delivery.get("serviceAccounts") or ()):
            meta = body.get("metadata") or {}
            named.append((str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")))
    return min(named)[1] if named else None


def parse_target(text: str) -> tuple[str, str, str]:
    """`KIND/NAME` as kubectl spells it (`deploy/x`, `deployment.apps/x`, `sts/x`, `ds/x`) -> (Kind, plural,
    name)."""
    kind, sep, name = text.partition("/")
    lowered = kind.strip().lower()
    lowered = KIND_ALIASES.get(lowered, lowered)
    found = next((key for key, spellings in KINDS.items() if lowered == key or lowered in spellings[1:]), None)
    if not sep or not name or "/" in name or found is None:
        raise UsageError(f"{text!r}: expected KIND/NAME with KIND deployment (deploy), statefulset (sts) or "
                         "daemonset (ds)")
    return KINDS[found][0], KINDS[found][1], name


# -- the verbs ------------------------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], exit_help: str) -> None:
    del exit_help  # this verb's exit codes differ (3 is a workload): its own epilog
    parent = sub.add_parser("pod-identity", help="the pod-spec snippet of mode PodIdentity: print it, or patch it "
                                                 "into a workload", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parent.add_subparsers(dest="pod_identity_command", required=True)
    show = verbs.add_parser("snippet", help="print the pod-spec YAML a consumer pod needs",
                            description="Print the pod-spec snippet of mode PodIdentity (docs/pod-identity.md).",
                            epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("--service-account", default="", metavar="NAME",
                      help="the pod's ServiceAccount (one an AssumedRoleCredential names in spec.delivery)")
    show.add_argument("--container", default="", metavar="NAME", help="the container's name (default: app)")
    show.add_argument("--audience", default=AUDIENCE,
                      help="the token's audience: the chart's podIdentity.audience (default %(default)s)")
    show.set_defaults(handler=run_snippet)

    apply = verbs.add_parser("patch", help="add the snippet to a Deployment's, StatefulSet's or DaemonSet's pod "
                                           "template (strategic merge; idempotent)",
                             description="Add the Pod Identity environment, volume mount and projected token volume "
                                         "to a workload's pod template, to every container or the one named, "
                                         "through the Kubernetes API (a strategic-merge patch: the pods roll out). "
                                         "Running it again changes nothing. Refused when a container gets "
                                         "AWS_ACCESS_KEY_ID from env or from a Secret's envFrom: environment keys "
                                         "win over container credentials in every SDK's default chain.",
                             epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    apply.add_argument("target", metavar="KIND/NAME", help="deploy/NAME, sts/NAME or ds/NAME")
    apply.add_argument("-n", "--namespace", default=None,
                       help="the workload's namespace (default: the kubeconfig context's, as kubectl)")
    apply.add_argument("--container", default="", metavar="NAME", help="only this container (default: all)")
    apply.add_argument("--audience", default=AUDIENCE,
                       help="the token's audience: the chart's podIdentity.audience (default %(default)s)")
    apply.add_argument("--dry-run", action="store_true",
                       help="print the patch and have the API server validate it (admission included) without "
                            "storing it (dryRun=All)")
    apply.set_defaults(handler=run_patch)


def run_snippet(args: argparse.Namespace) -> int:
    sys.stdout.write(render_snippet(service_account=args.service_account, container=args.container,
                                    audience=args.audience))
    return OK


def _read_workload(kube: Kube, plural: str, namespace: str, name: str) -> dict[str, Any]:
    from vault_sts_operator.clients import kube_paths as paths

    return kube._call("GET", paths.workload(namespace, plural, name), f"{plural[:-1]} {namespace}/{name}")


def _patch_workload(kube: Kube, plural: str, namespace: str, name: str, body: Mapping[str, Any], *,
                    dry_run: bool) -> None:
    """A strategic-merge patch; the API server's refusal (validation, an admission policy, a conflict with a change
    made since the read) is shown with its message, which the shared client's errors leave out."""
    from vault_sts_operator.clients import kube_paths as paths
    from vault_sts_operator.clients.kube_config import KubeConfigError
    from vault_sts_operator.clients.kube_rest import STRATEGIC_MERGE_PATCH, ApiError

    path = paths.workload(namespace, plural, name) + ("?dryRun=All" if dry_run else "")
    what = f"{plural[:-1]} {namespace}/{name}"
    try:
        kube._loop.run_until_complete(kube.rest.request("PATCH", path, dict(body), content_type=STRATEGIC_MERGE_PATCH,
                                                        parse=False))
    except ApiError as exc:
        detail = f"{exc}: {exc.message}" if exc.message else str(exc)
        if exc.status == 404:
            raise NotFound(f"{what} not found") from None
        if exc.status == 409:
            raise CtlError(f"{what} changed since it was read ({detail}); run the command again") from None
        if exc.status in (400, 422) or (exc.status == 403 and "denied" in exc.message.lower()):
            raise CtlError(f"the API server refused the patch of {what}: {detail}") from None
        raise Unreachable(f"Kubernetes API refused or unreachable for {what}: {detail}") from None
    except KubeConfigError as exc:
        raise Unreachable(f"no usable Kubernetes credentials: {exc}") from None
    except Exception as exc:  # a refused connection, bad TLS material
        raise Unreachable(f"Kubernetes API unreachable for {what}: {exc}") from None


def _secret_keys(kube: Kube, namespace: str, names: Iterable[str]) -> dict[str, Sequence[str] | None]:
    """Key names (never values) of the Secrets named by envFrom; None for one that is missing or unreadable."""
    keys: dict[str, Sequence[str] | None] = {}
    for name in names:
        try:
            found = kube.secret_metadata(namespace, name)
        except Unreachable:  # no `get secrets` here: say so, do not guess
            found = None
        keys[name] = None if found is None else list(found["keys"])
    return keys


def run_patch(args: argparse.Namespace) -> int:
    from vault_sts_operator.ctl.kube import Kube, current_namespace

    kind, plural, name = parse_target(args.target)
    namespace = args.namespace or current_namespace()
    shown = f"{kind.lower()}.apps/{name} in namespace {namespace}"
    kube = Kube()
    body = _read_workload(kube, plural, namespace, name)
    pod_spec = ((body.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [args.container] if args.container else [str(c.get("name")) for c in pod_spec.get("containers") or ()]
    keys = _secret_keys(kube, namespace, env_from_secrets(pod_spec, containers))
    decided = plan(pod_spec, container=args.container, audience=args.audience, secret_keys=keys)
    account = service_account_of(pod_spec)
    try:
        credentials: list[dict[str, Any]] | None = kube.credentials(namespace)
    except (Unreachable, NotFound):
        credentials = None  # cannot tell (no `list` on the CRD here): not a reason to refuse
    if credentials is not None and serving_credential(credentials, account) is None:
        decided.warnings.append(f"no AssumedRoleCredential of namespace {namespace} names ServiceAccount {account} in "
                                "spec.delivery.serviceAccounts (mode PodIdentity): its pods would be refused "
                                "(403 NotBound) until one does")
    for warning in decided.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if decided.refusals:
        raise CtlError(f"{shown}: not patched: " + "; ".join(decided.refusals) + ". Environment keys win over "
                       "container credentials in every AWS SDK's default chain, so these containers would keep "
                       "using them: remove them (and the Secret's envFrom) first")
    if not decided.changes:
        print(f"{shown}: unchanged (containers {', '.join(decided.containers)} already set up for Pod Identity)")
        return OK
    patch = {"metadata": {"resourceVersion": (body.get("metadata") or {}).get("resourceVersion")},
             **decided.patch}
    if args.dry_run:
        print(f"# {shown}: would change: {'; '.join(decided.changes)}")
        print(f"# strategic-merge patch (kubectl patch {kind.lower()} {name} -n {namespace} --type strategic "
              "--patch-file FILE):")
        sys.stdout.write(yaml.safe_dump(decided.patch, sort_keys=False, default_flow_style=False))
        _patch_workload(kube, plural, namespace, name, patch, dry_run=True)
        print("# the API server accepted it (dry run: nothing stored)")
        return OK
    _patch_workload(kube, plural, namespace, name, patch, dry_run=False)
    print(f"{shown}: patched ({'; '.join(decided.changes)}); the pods are replaced as the workload's update "
          "strategy says")
    return OK
