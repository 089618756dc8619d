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
content, recipient or secret ever appears. The send path pays ~2 µs per message: a
histogram observation and two increments (`ConnectorMeter` keeps each connector's
labelled children, so no label is looked up per request).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# The content type of the text format `render` writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

PROVIDER_REQUESTS = Counter(
    "smsrelay_provider_requests",
    "Requests sent to providers, by connector and result: the HTTP status class of the "
    "answer (2xx, 4xx...) or why there was none (timeout, connection_error...).",
    ["connector", "result"],
    registry=REGISTRY,
)
PROVIDER_REQUEST_SECONDS = Histogram(
    "smsrelay_provider_request_seconds",
    "Time from sending a request to a provider to its answer (or the error), by connector.",
    ["connector"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
MESSAGE_ATTEMPTS = Counter(
    "smsrelay_message_attempts",
    "Send attempts worked out per message, by connector and outcome (sent, retry, failed, "
    "dispatch_error).",
    ["connector", "outcome"],
    registry=REGISTRY,
)
DELIVERY_REPORTS = Counter(
    "smsrelay_delivery_reports_stored",
    "Delivery-report callbacks stored (each is mapped to its message afterwards).",
    registry=REGISTRY,
)


class ConnectorMeter:
    """One connector's request and attempt metrics, each label lookup done once."""

    def __init__(self, connector: str) -> None:
        self.connector = connector
        self._seconds = PROVIDER_REQUEST_SECONDS.labels(connector)
        self._results: dict[str, Counter] = {}
        self._outcomes: dict[str, Counter] = {}

    def request(self, seconds: float, result: str) -> None:
        """One request answered (`result` "2xx"...) or failed (`result` the reason)."""
        self._seconds.observe(seconds)
        counter = self._results.get(result)
        if counter is None:
            counter = self._results[result] = PROVIDER_REQUESTS.labels(self.connector, result)
        counter.inc()

    def attempts(self, outcomes: Iterable[str]) -> None:
        """Attempts worked out, one outcome per message."""
        for outcome in outcomes:
            counter = self._outcomes.get(outcome)
            if counter is None:
                counter = self._outcomes[outcome] = MESSAGE_ATTEMPTS.labels(self.connector, outcome)
            counter.inc()


def status_class(status: int) -> str:
    """An HTTP status as its class label: 200 -> "2xx"."""
    return f"{status // 100}xx"


def error_reason(reason: str) -> str:
    """A transport error's reason without its detail ("blocked_address: ..." -> its kind)."""
    return reason.split(":", 1)[0].strip() or "error"


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    """Messages of one connector in one waiting status, and how late the earliest is."""

    connector: str
    status: str
    messages: int
    # Seconds since the earliest of them fell due (0 when none is due yet).
    overdue_seconds: float


def outbox_families(depths: Sequence[OutboxDepth]) -> list[Metric]:
    """The outbox gauges for `depths` (read from the database at scrape time)."""
    waiting = GaugeMetricFamily(
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
    lag: dict[str, float] = {}
    for depth in depths:
        waiting.add_metric([depth.connector, depth.status], depth.messages)
        if depth.status == "queued":
            lag[depth.connector] = max(lag.get(depth.connector, 0.0), depth.overdue_seconds)
    for connector, seconds in sorted(lag.items()):
        overdue.add_metric([connector], seconds)
    return [waiting, overdue]


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


def render(depths: Sequence[OutboxDepth] | None = None) -> bytes:
    """This process's metrics, and the outbox gauges when `depths` are given, as text."""
    text = generate_latest(REGISTRY)
    if depths is None:
        return text
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_Families(outbox_families(depths)))
    return text + generate_latest(scrape)


__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "ConnectorMeter",
    "OutboxDepth",
    "error_reason",
    "outbox_families",
    "render",
    "serve_metrics",
    "status_class",
]
