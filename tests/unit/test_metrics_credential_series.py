"""The per-credential series are made one sample at a time while the exposition writes them (metrics.py
`CredentialSeries.collect`): the text is what eager families with the same samples give, in both formats,
also for a registry restricted to some names."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from vault_sts_operator.metrics import CredentialSeries, CredentialState

STATES = [
    CredentialState("team-a", "app", 1_800_000_000.0, True, "Issued", 1_799_999_000.0),
    CredentialState("team-a", 'quo"te\\d', None, False, "InvalidSpec", None),
    CredentialState("team-b", "new", None, None, "", None),
    CredentialState("team-b", "issuing", 1_800_000_100.5, None, "", 1_800_000_050.0),
]


class Eager(Collector):
    """The same series with every sample in a list, as GaugeMetricFamily.add_metric makes them."""

    def __init__(self, now: float) -> None:
        self.now = now

    def describe(self) -> Iterable[Metric]:
        return CredentialSeries()._families()

    def collect(self) -> Iterable[Metric]:
        until, stamp, ready, renewal = CredentialSeries()._families()
        for s in STATES:
            if s.expiration is not None:
                until.add_metric([s.namespace, s.name], s.expiration - self.now)
                stamp.add_metric([s.namespace, s.name], s.expiration)
            if s.ready is not None:
                ready.add_metric([s.namespace, s.name, s.reason], 1.0 if s.ready else 0.0)
            if s.renewal is not None:
                renewal.add_metric([s.namespace, s.name], s.renewal)
        return [until, stamp, ready, renewal]


@pytest.mark.parametrize("render", [generate_latest, generate_openmetrics])
def test_lazy_series_render_as_eager_ones(render: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_799_990_000.0)
    series = CredentialSeries()
    series.source = lambda: iter(STATES)
    ours, eager = CollectorRegistry(), CollectorRegistry()
    ours.register(series)
    eager.register(Eager(1_799_990_000.0))
    text = render(ours)  # type: ignore[operator]
    assert text == render(eager)  # type: ignore[operator]
    assert b'name="quo\\"te\\\\d"' in text and b'reason="InvalidSpec"' in text
    assert text.count(b"vault_sts_operator_credential_seconds_until_expiry{") == 2
    names = ["vault_sts_operator_credential_ready_status"]
    assert render(ours.restricted_registry(names)) == render(eager.restricted_registry(names))  # type: ignore[operator]


def test_a_scrape_streams_what_prometheus_client_renders_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics server writes a family at a time; the text is the registry's whole exposition, byte for byte,
    in both formats, and with no family an OpenMetrics answer still ends with # EOF."""
    import asyncio

    import aiohttp

    from vault_sts_operator.services.metrics_server import MetricsServer

    monkeypatch.setattr(time, "time", lambda: 1_799_990_000.0)
    series = CredentialSeries()
    series.source = lambda: iter(STATES)
    registry = CollectorRegistry()
    registry.register(series)
    openmetrics = "application/openmetrics-text; version=1.0.0"

    async def scrape(registry: CollectorRegistry) -> tuple[bytes, bytes]:
        server = MetricsServer(port=0, host="127.0.0.1", reviews=None, tls=None, registry=registry)
        await server.start()
        url = f"http://127.0.0.1:{server.bound_port}/metrics"
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(url) as response:
                    text = await response.read()
                async with client.get(url, headers={"Accept": openmetrics}) as response:
                    om = await response.read()
            return text, om
        finally:
            await server.stop()

    text, om = asyncio.run(scrape(registry))
    assert text == generate_latest(registry) and text.count(b"# TYPE") == 4
    assert om == generate_openmetrics(registry) and om.endswith(b"# EOF\n") and om.count(b"# EOF") == 1
    empty_text, empty_om = asyncio.run(scrape(CollectorRegistry()))
    assert (empty_text, empty_om) == (b"", b"# EOF\n")
