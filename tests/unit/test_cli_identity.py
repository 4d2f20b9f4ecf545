"""kopf's peering identity when the image's uid has no passwd entry (issue 9)."""

from __future__ import annotations

from vault_sts_operator.cli import fallback_identity


def _no_passwd_entry() -> str:
    raise KeyError("getpwuid(): uid not found: 65532")


def test_pod_id_set_leaves_it_to_kopf() -> None:
    assert fallback_identity({"POD_ID": "op-0", "HOSTNAME": "h"}, _no_passwd_entry, lambda: "x") is None


def test_known_user_leaves_it_to_kopf() -> None:
    assert fallback_identity({"HOSTNAME": "h"}, lambda: "alice", lambda: "x") is None


def test_no_passwd_entry_uses_the_pod_name() -> None:
    assert fallback_identity({"HOSTNAME": "vso-7d9f-abcde"}, _no_passwd_entry, lambda: "x") == "vso-7d9f-abcde"


def test_no_passwd_entry_and_no_hostname_variable_asks_the_kernel() -> None:
    assert fallback_identity({}, _no_passwd_entry, lambda: "node-1") == "node-1"


def test_empty_pod_id_counts_as_unset() -> None:
    assert fallback_identity({"POD_ID": ""}, _no_passwd_entry, lambda: "node-1") == "node-1"


def test_peering_with_namespace_patterns_is_refused_at_start() -> None:
    import pytest

    from vault_sts_operator.cli import _parser, config_from_args

    args = _parser().parse_args(["run", "-n", "team-*", "--peering", "vso", "--vault-address", "https://v:8200"])
    with pytest.raises(SystemExit, match=r"--peering with namespace patterns \(team-\*\)"):
        config_from_args(args)
    named = _parser().parse_args(["run", "-n", "team-a", "--peering", "vso", "--vault-address", "https://v:8200"])
    assert config_from_args(named).namespaces == ("team-a",)
    unpeered = _parser().parse_args(["run", "-n", "team-*", "--vault-address", "https://v:8200"])
    assert config_from_args(unpeered).peering_name == ""
