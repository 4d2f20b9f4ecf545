"""`agent init-link` (agent/link.py) on the real kernel, in a network namespace of its own: the addresses reachable,
idempotent, IPv6 skipped when the node has it off; and how `agent serve` finds the operator (flags and the
kubelet's Service variables)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap

import pytest

from vault_sts_operator.agent.link import LinkError, init_link, ipv6_enabled
from vault_sts_operator.agent.main import add_verbs, operator_url, settings_from_args


def in_new_netns(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` as root of a new user and network namespace (only `lo`, down): the real kernel, no privilege
    on the host, nothing outside the namespace touched."""
    return subprocess.run(["unshare", "-rn", sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_addresses_go_on_the_link_which_is_set_up_and_a_second_run_changes_nothing() -> None:
    done = in_new_netns("""
        import socket
        from vault_sts_operator.agent.link import init_link
        print(init_link("lo", ["169.254.170.23/32", "fd00:ec2::23/128"]))
        print(init_link("lo", ["169.254.170.23/32", "fd00:ec2::23/128"]))
        for family, host in ((socket.AF_INET, "169.254.170.23"), (socket.AF_INET6, "fd00:ec2::23")):
            server = socket.socket(family)
            server.bind((host, 80))
            server.listen()
            socket.create_connection((host, 80), timeout=5).close()
            print("reached", host)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['169.254.170.23/32', 'fd00:ec2::23/128']"] * 2 + [
        "reached 169.254.170.23", "reached fd00:ec2::23"]


def test_a_dummy_link_is_made_or_the_error_says_to_use_lo() -> None:
    done = in_new_netns("""
        import socket
        from vault_sts_operator.agent.link import LinkError, init_link
        try:
            init_link("vaultsts-pi0", ["169.254.170.23/32"])
        except LinkError as exc:
            print("refused:", exc)
        else:
            socket.socket().bind(("169.254.170.23", 80))
            print("made", socket.if_nametoindex("vaultsts-pi0") > 0)
    """)
    assert done.returncode == 0, done.stderr
    # This kernel either has the dummy driver (the link is made and carries the address) or says what to do.
    assert done.stdout.strip() == "made True" or ("no dummy link driver" in done.stdout and "--link lo" in done.stdout)


def test_ipv6_is_skipped_when_off_and_bad_names_are_refused() -> None:
    with pytest.raises(LinkError, match="1 to 15 characters"):
        init_link("a-link-name-too-long", ["169.254.170.23/32"])
    done = in_new_netns("""
        from vault_sts_operator.agent.link import init_link
        print(init_link("lo", ["169.254.170.23/32", "fd00:ec2::23/128"], ipv6=lambda link: False))
    """)
    assert done.returncode == 0 and done.stdout.strip() == "['169.254.170.23/32']", done.stderr


def test_without_net_admin_the_error_is_the_kernels() -> None:
    """Without CAP_NET_ADMIN the kernel refuses, and the error says so (no hang, no silent success). As root, the
    capability is dropped from the bounding set (the uid stays: the checkout may be readable by root only)."""
    code = "from vault_sts_operator.agent.link import init_link; init_link('lo', ['169.254.170.23/32'])"
    drop = ["unshare", "-n", "setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else []
    done = subprocess.run([*drop, sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done.stderr


def test_ipv6_is_off_when_the_sysctl_says_so_or_the_kernel_has_none(tmp_path) -> None:
    assert not ipv6_enabled("vaultsts-pi0", proc=str(tmp_path))  # no /proc/sys/net/ipv6 at all
    conf = tmp_path / "sys/net/ipv6/conf"
    (conf / "all").mkdir(parents=True)
    (conf / "all/disable_ipv6").write_text("0\n")
    assert ipv6_enabled("vaultsts-pi0", proc=str(tmp_path))
    (conf / "vaultsts-pi0").mkdir()
    (conf / "vaultsts-pi0/disable_ipv6").write_text("1\n")
    assert not ipv6_enabled("vaultsts-pi0", proc=str(tmp_path))
    (conf / "all/disable_ipv6").write_text("1\n")
    assert not ipv6_enabled("other", proc=str(tmp_path))


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_verbs(parser.add_subparsers(dest="command"))
    return parser.parse_args(["agent", *argv])


def test_serve_flags_and_their_defaults() -> None:
    args = _parse("serve", "--operator-url", "https://10.96.0.5:443/")
    settings = settings_from_args(args)
    assert [str(a) for a in settings.listen] == ["169.254.170.23:80"] and str(settings.probe) == "127.0.0.1:8086"
    assert (settings.audience, settings.upstream_timeout, settings.rate, settings.burst) == (
        "vaultsts.io/pod-identity", 0.6, 1000.0, 500)
    assert (args.revalidate_seconds, args.refresh_margin_seconds, args.max_cache_entries) == (300.0, 1080.0, 10_000)
    assert operator_url(args) == "https://10.96.0.5:443"
    args = _parse("serve", "--listen", "169.254.170.23:80", "--listen", "[fd00:ec2::23]:80", "--probe-listen", "")
    settings = settings_from_args(args)
    assert [a.host for a in settings.listen] == ["169.254.170.23", "fd00:ec2::23"] and settings.probe is None
    with pytest.raises(SystemExit, match="brackets"):
        settings_from_args(_parse("serve", "--listen", "fd00:ec2::23:80"))
    init = _parse("init-link", "--address", "169.254.170.23/32", "--address", "fd00:ec2::23/128")
    assert (init.link, init.address) == ("vaultsts-pi0", ["169.254.170.23/32", "fd00:ec2::23/128"])


def test_the_operator_url_from_the_kubelets_service_variables() -> None:
    args = _parse("serve", "--operator-service-env", "vso-pod-identity")
    env = {"VSO_POD_IDENTITY_SERVICE_HOST": "10.96.0.5", "VSO_POD_IDENTITY_SERVICE_PORT": "443"}
    assert operator_url(args, env) == "https://10.96.0.5:443"
    env = {"VSO_POD_IDENTITY_SERVICE_HOST": "fd00::5", "VSO_POD_IDENTITY_SERVICE_PORT": "8444"}
    assert operator_url(args, env) == "https://[fd00::5]:8444"
    with pytest.raises(SystemExit, match="VSO_POD_IDENTITY_SERVICE_HOST and VSO_POD_IDENTITY_SERVICE_PORT"):
        operator_url(args, {})
    with pytest.raises(SystemExit, match="--operator-url or --operator-service-env"):
        operator_url(_parse("serve"), {})
