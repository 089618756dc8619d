"""Prometheus metrics (`GET /metrics`): what this process did, and what the outbox holds.

Two kinds:

- Counters and histograms of this process, kept in `REGISTRY`: requests to providers and
  how long they took, attempts recorded per outcome, delivery reports stored. Every
  `smsrelay serve` and `smsrelay worker` process keeps its own; scrape each (a worker
  serves them on `SMSRELAY_METRICS_PORT`) and sum them in Prometheus.
- Gauges read from the database when scraped (`outbox_families`): messages waiting per
  connector and status, and how late the most overdue one is. Every process on one
  database reports the same values: take their max, not their sum.

Labels are connector names, HTTP status classes, error reasons and outcomes: no message
content, recipient or secret ever appears. The send path pays well under a microsecond
per message (`ConnectorMeter`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from smsrelay.store.outbox import WaitingMessages
from smsrelay.store.timestamps import utc_now

# The content type of the text format `render` writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

DELIVERY_REPORTS = Counter(
    "smsrelay_delivery_reports_stored",
    "Delivery-report callbacks stored (each is mapped to its message afterwards).",
    registry=REGISTRY,
)

# Upper bounds of the request-time histogram, in seconds.
REQUEST_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ConnectorMeter:
    """One connector's request and attempt counts, kept as plain numbers.

    Only the dispatcher's event loop writes them, and `_MeterCollector` reads them when
    scraped: ~0.6 µs per message, where prometheus_client's own counters and histogram
    (a lock per update) cost ~2 µs. A scrape from another thread (`serve_metrics`) may see
    a request counted in one family and not yet in the next, never a torn number.
    """

    def __init__(self) -> None:
        self.results: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}
        # Requests per histogram bucket (not cumulative); the last is above every bound.
        self.buckets = [0] * (len(REQUEST_SECONDS_BUCKETS) + 1)
        self.seconds = 0.0

    def request(self, seconds: float, result: str) -> None:
        """One request answered (`result` "2xx"...) or failed (`result` the reason)."""
        self.buckets[bisect_left(REQUEST_SECONDS_BUCKETS, seconds)] += 1
        self.seconds += seconds
        self.results[result] = self.results.get(result, 0) + 1

    def attempts(self, outcomes: Iterable[str]) -> None:
        """Attempts worked out, one outcome per message."""
        counts = self.outcomes
        for outcome in outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1


_METERS: dict[str, ConnectorMeter] = {}


def connector_meter(connector: str) -> ConnectorMeter:
    """The meter of the connector named `connector` (one per name in this process)."""
    meter = _METERS.get(connector)
    if meter is None:
        meter = _METERS[connector] = ConnectorMeter()
    return meter


class _MeterCollector:
    """The connectors' meters as metric families, built at each scrape."""

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "smsrelay_provider_requests",
            "Requests sent to providers, by connector and result: the HTTP status class of "
            "the answer (2xx, 4xx...) or why there was none (timeout, connection_error...).",
            labels=["connector", "result"],
        )
        seconds = HistogramMetricFamily(
            "smsrelay_provider_request_seconds",
            "Time from sending a request to a provider to its answer (or the error), by connector.",
            labels=["connector"],
        )
        attempts = CounterMetricFamily(
            "smsrelay_message_attempts",
            "Send attempts worked out per message, by connector and outcome (sent, retry, "
            "failed, dispatch_error).",
            labels=["connector", "outcome"],
        )
        # As prometheus_client writes `le`: 0.005, 1.0, +Inf.
        bounds = [repr(float(b)) for b in REQUEST_SECONDS_BUCKETS] + ["+Inf"]
        for name, meter in sorted(dict(_METERS).items()):
            for result, count in sorted(dict(meter.results).items()):
                requests.add_metric([name, result], count)
            cumulative = list(accumulate(list(meter.buckets)))
            seconds.add_metric([name], list(zip(bounds, cumulative, strict=True)), meter.seconds)
            for outcome, count in sorted(dict(meter.outcomes).items()):
                attempts.add_metric([name, outcome], count)
        return [requests, seconds, attempts]


REGISTRY.register(_MeterCollector())


def status_class(status: int) -> str:
    """An HTTP status as its class label: 200 -> "2xx"."""
    return f"{status // 100}xx"


def error_reason(reason: str) -> str:
    """A transport error's reason without its detail ("blocked_address: ..." -> its kind)."""
    return reason.split(":", 1)[0].strip() or "error"


def outbox_families(waiting: Sequence[WaitingMessages], now: datetime) -> list[Metric]:
    """The outbox gauges for what `waiting_messages` read at `now` (at scrape time)."""
    messages = GaugeMetricFamily(
        "smsrelay_outbox_messages",
        "Messages waiting in the outbox, by connector and status (queued, sending, "
        "dispatch_error).",
        labels=["connector", "status"],
    )
    overdue = GaugeMetricFamily(
        "smsrelay_outbox_overdue_seconds",
        "How long the most overdue queued message of a connector has been due: the "
        "dispatch lag (0 when nothing is due).",
        labels=["connector"],
    )
    for group in waiting:
        messages.add_metric([group.connector, group.status], group.messages)
        if group.status == "queued":
            due = group.earliest_due
            late = (now - due).total_seconds() if due is not None else 0.0
            overdue.add_metric([group.connector], max(0.0, late))
    return [messages, overdue]


class _Families:
    """A collector that yields fixed metric families (one scrape's database gauges)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def serve_metrics(host: str, port: int) -> None:
    """Serve this process's metrics at http://host:port/metrics from a thread of its own
    (`smsrelay worker`, which has no web server; raises OSError if the port is taken)."""
    start_http_server(port, addr=host, registry=REGISTRY)


def render(waiting: Sequence[WaitingMessages] | None = None, now: datetime | None = None) -> bytes:
    """This process's metrics, and the outbox gauges when `waiting` is given, as text."""
    text = generate_latest(REGISTRY)
    if waiting is None:
        return text
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_Families(outbox_families(waiting, now or utc_now())))
    return text + generate_latest(scrape)


__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "ConnectorMeter",
    "connector_meter",
    "error_reason",
    "outbox_families",
    "render",
    "serve_metrics",
    "status_class",
]
