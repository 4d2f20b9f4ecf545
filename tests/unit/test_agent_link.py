"""`agent init-link` (agent/link.py) with a recording stand-in for `ip`: idempotent, IPv6 skipped when the node
has it off; and how `agent serve` finds the operator (flags and the kubelet's Service variables)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pytest

from vault_sts_operator.agent import link
from vault_sts_operator.agent.link import LinkError, Result, init_link, ipv6_enabled
from vault_sts_operator.agent.main import add_verbs, operator_url, settings_from_args


class FakeIp:
    def __init__(self, *, exists: bool = False, fail: str = "") -> None:
        self.exists = exists
        self.fail = fail
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str]) -> Result:
        self.calls.append(list(args))
        if self.fail and self.fail in " ".join(args):
            return Result(2, "RTNETLINK answers: Operation not permitted")
        if args[:2] == ["link", "show"]:
            return Result(0 if self.exists else 1, "" if self.exists else 'Device "vaultsts-pi0" does not exist.')
        if args[:2] == ["link", "add"]:
            self.exists = True
        return Result(0, "")


def test_the_link_is_made_with_both_addresses_and_set_up() -> None:
    ip = FakeIp()
    assigned = init_link("vaultsts-pi0", ["169.254.170.23/32", "fd00:ec2::23/128"], run=ip, ipv6=lambda _: True)
    assert assigned == ["169.254.170.23/32", "fd00:ec2::23/128"]
    assert ip.calls == [["link", "show", "dev", "vaultsts-pi0"],
                        ["link", "add", "vaultsts-pi0", "type", "dummy"],
                        ["-4", "addr", "replace", "169.254.170.23/32", "dev", "vaultsts-pi0"],
                        ["-6", "addr", "replace", "fd00:ec2::23/128", "dev", "vaultsts-pi0", "nodad"],
                        ["link", "set", "dev", "vaultsts-pi0", "up"]]


def test_a_second_run_makes_no_second_link_and_replaces_the_addresses(caplog: pytest.LogCaptureFixture) -> None:
    ip = FakeIp(exists=True)
    caplog.set_level("INFO")
    assert init_link("vaultsts-pi0", ["169.254.170.23/32", "fd00:ec2::23/128"], run=ip,
                     ipv6=lambda _: False) == ["169.254.170.23/32"]
    assert ["link", "add", "vaultsts-pi0", "type", "dummy"] not in ip.calls
    assert not any(call[0] == "-6" for call in ip.calls)
    assert "IPv6 is disabled on this node: fd00:ec2::23/128 not assigned" in caplog.text


def test_failures_are_errors_with_ips_message() -> None:
    with pytest.raises(LinkError, match="Operation not permitted"):
        init_link("vaultsts-pi0", ["169.254.170.23/32"], run=FakeIp(fail="link add"))
    with pytest.raises(LinkError, match=r"addr replace 169\.254\.170\.23/32"):
        init_link("vaultsts-pi0", ["169.254.170.23/32"], run=FakeIp(fail="-4 addr"))
    no_driver = FakeIp()

    def without_dummy_driver(args: Sequence[str]) -> Result:
        return Result(2, "Error: Unknown device type.") if "dummy" in args else no_driver(args)

    with pytest.raises(LinkError, match="--link lo"):  # a kernel without CONFIG_DUMMY, as this machine's
        init_link("vaultsts-pi0", ["169.254.170.23/32"], run=without_dummy_driver)
    with pytest.raises(LinkError, match="15 characters"):
        init_link("a-name-longer-than-15", ["169.254.170.23/32"], run=FakeIp())
    with pytest.raises(ValueError, match="does not appear to be"):
        init_link("vaultsts-pi0", ["not-an-address"], run=FakeIp())


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


def test_the_real_ip_runner_reports_a_missing_link() -> None:
    # `ip link show` needs no privilege: the runner's plumbing, not the link, is what is checked here
    done = link.run_ip(["link", "show", "dev", "vaultsts-nonexistent0"])
    assert done.returncode != 0 and done.stderr


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
