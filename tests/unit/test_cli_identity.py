"""`vault-sts-operator run`'s options as the process reads them: leader election (issue 18)."""

from __future__ import annotations

import pytest

from vault_sts_operator.cli import _parser, config_from_args


def test_leader_election_is_off_unless_a_lease_is_named_and_takes_client_gos_defaults() -> None:
    standalone = config_from_args(_parser().parse_args(["run", "--vault-address", "https://v:8200"]))
    assert standalone.leader_election_lease == ""
    elected = config_from_args(_parser().parse_args(["run", "--leader-election-lease", "vso"]))
    assert elected.leader_election_lease == "vso"
    assert (elected.election.lease_duration, elected.election.renew_deadline, elected.election.retry_period) == \
        (15.0, 10.0, 2.0)


def test_a_renew_deadline_that_outlives_the_lease_is_refused_at_start() -> None:
    args = _parser().parse_args(["run", "--leader-election-lease", "vso", "--leader-election-lease-duration", "10",
                                 "--leader-election-renew-deadline", "12"])
    with pytest.raises(SystemExit, match="lease duration must be longer than the renew deadline"):
        config_from_args(args)


def test_kopfs_peering_flag_is_gone() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--peering", "vso"])


def test_the_watch_stall_bound_reaches_the_config() -> None:
    assert config_from_args(_parser().parse_args(["run"])).watch_stall_seconds == 1200.0
    assert config_from_args(_parser().parse_args(["run", "--watch-stall-seconds", "90"])).watch_stall_seconds == 90.0
