#!/usr/bin/env bash
# Vault (or OpenBao) setup for one MFAIdentity, for a Vault that runs outside the cluster.
#
#   - KV v2 holds the IAM user's long-term access key; the TOTP engine holds its MFA device's seed
#     (imported here from TOTP_OTPAUTH_URL, or by `vault-sts-operator mfa enroll`);
#   - a policy that reads totp/code/<identity> and the KV path, nothing else (never totp/keys: no seed);
#   - kubernetes auth that Vault checks with a TokenReview against the cluster (kubernetes_host,
#     kubernetes_ca_cert and a token reviewer JWT, as a Vault outside the cluster needs), and a role
#     that lets the operator's ServiceAccount log in with that policy.
#
# Secrets come from the environment and reach Vault on stdin, never in a command line or a file:
#   VAULT_ADDR, VAULT_TOKEN       an admin token (setup only)
#   KUBE_HOST                     the API server URL as Vault reaches it
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   the IAM user's long-term key
#   TOTP_OTPAUTH_URL              optional: the device's otpauth:// URL (else enrol with the CLI)
# Names (defaults in brackets): IDENTITY [ops], KV_MOUNT [secret], TOTP_MOUNT [totp],
#   AUTH_MOUNT [kubernetes], OPERATOR_NAMESPACE [vault-sts-operator], OPERATOR_SA [vault-sts-operator],
#   REVIEWER_SECRET [vault-token-reviewer] (from token-reviewer.yaml), VAULT_BIN [vault; bao works too],
#   KUBE_CA_FILE [the reviewer Secret's ca.crt].
set -euo pipefail

: "${VAULT_ADDR:?}" "${VAULT_TOKEN:?}" "${KUBE_HOST:?}" "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}"
VAULT_BIN=${VAULT_BIN:-vault}
IDENTITY=${IDENTITY:-ops}
KV_MOUNT=${KV_MOUNT:-secret}
TOTP_MOUNT=${TOTP_MOUNT:-totp}
AUTH_MOUNT=${AUTH_MOUNT:-kubernetes}
OPERATOR_NAMESPACE=${OPERATOR_NAMESPACE:-vault-sts-operator}
OPERATOR_SA=${OPERATOR_SA:-vault-sts-operator}
REVIEWER_SECRET=${REVIEWER_SECRET:-vault-token-reviewer}
v() { "$VAULT_BIN" "$@"; }
# Is <path>/ mounted (`has secrets <path>`, `has auth <path>`)? The list is read whole before grep looks:
# `v secrets list | grep -q` under pipefail fails when grep exits early and the writer gets SIGPIPE.
has() { local mounts; mounts=$(v "$1" list); grep -q "^$2/ " <<<"$mounts"; }

# 1. Secrets engines (kept when they exist).
has secrets "$KV_MOUNT" || v secrets enable -path="$KV_MOUNT" kv-v2
has secrets "$TOTP_MOUNT" || v secrets enable -path="$TOTP_MOUNT" totp

# 2. The long-term key, apart from the seed. The secret half goes through stdin.
printf '%s' "$AWS_SECRET_ACCESS_KEY" |
  v kv put -mount="$KV_MOUNT" "aws/$IDENTITY" access_key_id="$AWS_ACCESS_KEY_ID" secret_access_key=- >/dev/null

# 3. The MFA device's seed into the TOTP engine (Vault never returns it).
if [[ -n ${TOTP_OTPAUTH_URL:-} ]]; then
  printf '%s' "$TOTP_OTPAUTH_URL" | v write "$TOTP_MOUNT/keys/$IDENTITY" url=- >/dev/null
else
  echo "no TOTP_OTPAUTH_URL: enrol a new device with 'vault-sts-operator mfa enroll --user <iam-user> --totp-key $IDENTITY'"
fi

# 4. A policy that reads codes and the key, and nothing else.
v policy write "vault-sts-operator-$IDENTITY" - <<HCL
path "$TOTP_MOUNT/code/$IDENTITY"          { capabilities = ["read"] }
path "$KV_MOUNT/data/aws/$IDENTITY"        { capabilities = ["read"] }
HCL

# 5. Kubernetes auth for a Vault outside the cluster: Vault asks the API server (TokenReview) with
#    the reviewer's JWT whether the operator's token is valid.
has auth "$AUTH_MOUNT" || v auth enable -path="$AUTH_MOUNT" kubernetes
ca_file=${KUBE_CA_FILE:-}
cleanup() { [[ -z ${tmp_ca:-} ]] || rm -f "$tmp_ca"; }
trap cleanup EXIT
if [[ -z $ca_file ]]; then
  tmp_ca=$(mktemp)  # the cluster's CA certificate: public, not a secret
  kubectl get secret "$REVIEWER_SECRET" -n "$OPERATOR_NAMESPACE" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$tmp_ca"
  ca_file=$tmp_ca
fi
kubectl get secret "$REVIEWER_SECRET" -n "$OPERATOR_NAMESPACE" -o jsonpath='{.data.token}' | base64 -d |
  v write "auth/$AUTH_MOUNT/config" kubernetes_host="$KUBE_HOST" kubernetes_ca_cert=@"$ca_file" \
    token_reviewer_jwt=- disable_local_ca_jwt=true >/dev/null

# 6. The role the MFAIdentity names (spec.vault.auth.kubernetes.role).
# audience: the chart presents a projected token of this audience (vault.auth.kubernetes.audience, default
# vault); with it set, Vault asks the API server to review the token for that audience only.
v write "auth/$AUTH_MOUNT/role/vault-sts-operator-$IDENTITY" \
  bound_service_account_names="$OPERATOR_SA" bound_service_account_namespaces="$OPERATOR_NAMESPACE" \
  audience="${VAULT_AUDIENCE:-vault}" policies="vault-sts-operator-$IDENTITY" ttl=1h >/dev/null

echo "Vault is ready for MFAIdentity $IDENTITY: role vault-sts-operator-$IDENTITY on auth/$AUTH_MOUNT"
