"""The platform's allow-list of destinations (domain/destinations.py): what an MFAIdentity may point the operator at."""

from __future__ import annotations

import contextlib

import pytest

from vault_sts_operator.domain.destinations import (
    AWS_STS_ENDPOINTS,
    DestinationError,
    allowed,
    parse_destination,
    pattern_problems,
    public_sts_endpoint,
    same_destination,
    valid_region,
    vault_audience,
)


@pytest.mark.parametrize("url", [
    "https://sts.amazonaws.com", "https://sts.eu-west-1.amazonaws.com", "https://sts.us-gov-west-1.amazonaws.com",
    "https://sts-fips.us-east-1.amazonaws.com", "https://sts.cn-north-1.amazonaws.com.cn",
    "https://sts.us-east-1.api.aws", "https://STS.EU-WEST-1.AMAZONAWS.COM:443/", "https://sts.us-iso-east-1.c2s.ic.gov",
])
def test_aws_public_endpoints_are_allowed_by_default(url):
    assert allowed(url, AWS_STS_ENDPOINTS)


@pytest.mark.parametrize("url", [
    "https://evil.example",
    "https://sts.evil.example.amazonaws.com",  # '*' is one DNS label, not several
    "https://sts.amazonaws.com.evil.example",
    "https://sts.amazonaws.com:8443",  # another port
    "http://sts.amazonaws.com",  # another scheme
    "https://evilamazonaws.com",
    "https://sts..amazonaws.com",
])
def test_anything_else_is_refused(url):
    with contextlib.suppress(DestinationError):  # malformed: refused too
        assert not allowed(url, AWS_STS_ENDPOINTS)


@pytest.mark.parametrize("url", [
    "https://vault.example@evil.example",  # reads as vault.example, goes to evil.example
    "https://user:pw@vault.example",
    "https://vault.example/v1/../../evil",
    "https://vault.example?x=1",
    "https://vault.example#x",
    "ftp://vault.example",
    "https://",
])
def test_urls_that_hide_their_destination_are_malformed(url):
    with pytest.raises(DestinationError):
        parse_destination(url)


def test_destinations_compare_scheme_host_and_port():
    assert same_destination("https://Vault.Example", "https://vault.example:443/")
    assert same_destination("http://127.0.0.1:8200", "http://127.0.0.1:8200/")
    assert not same_destination("https://vault.example", "https://vault.example:8200")
    assert not same_destination("https://vault.example", "http://vault.example:443")
    assert same_destination("https://[::1]:8200", "https://[0:0::1]:8200") is False  # text, not address, compared
    assert str(parse_destination("https://[::1]:8200")) == "https://[::1]:8200"


def test_each_vault_gets_an_audience_of_its_own():
    assert vault_audience("https://Vault-B.example/") == "https://vault-b.example:443"
    assert vault_audience("https://vault-b.example:8200") != vault_audience("https://vault-c.example:8200")


def test_regions_and_their_public_endpoints():
    assert valid_region("eu-west-1") and valid_region("us-gov-west-1") and valid_region("us-isob-east-1")
    for bad in ("evil.example/", "eu-west-1.evil", "", "us_east_1", "x" * 40):
        assert not valid_region(bad)
    assert public_sts_endpoint("eu-west-1") == "https://sts.eu-west-1.amazonaws.com"
    assert public_sts_endpoint("cn-north-1") == "https://sts.cn-north-1.amazonaws.com.cn"
    for region in ("eu-west-1", "cn-north-1", "us-gov-west-1", "us-iso-east-1", "us-isob-east-1"):
        assert allowed(public_sts_endpoint(region), AWS_STS_ENDPOINTS)


def test_an_allow_list_with_a_malformed_entry_is_reported():
    assert pattern_problems(["https://sts.*.amazonaws.com", "http://127.0.0.1:8300"]) == []
    assert len(pattern_problems(["sts.amazonaws.com", "https://a@b"])) == 2
