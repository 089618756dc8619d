"""The metrics module's pure parts: labels and the outbox gauges (the endpoint: tests/api)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from smsrelay.metrics import connector_meter, error_reason, render, status_class
from smsrelay.settings import load_settings
from smsrelay.store.outbox import WaitingMessages


def test_labels_stay_few_whatever_the_detail() -> None:
    assert [status_class(s) for s in (200, 202, 404, 503)] == ["2xx", "2xx", "4xx", "5xx"]
    assert error_reason("timeout") == "timeout"
    assert error_reason("blocked_address: 10.0.0.7 is private") == "blocked_address"
    assert error_reason("") == "error"


def test_the_outbox_gauges_count_every_waiting_status_and_time_only_the_queued() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    waiting = [
        WaitingMessages("alpha", "queued", 7, now - timedelta(seconds=12.5)),
        WaitingMessages("alpha", "sending", 3, now - timedelta(seconds=900)),  # a lease
        WaitingMessages("beta", "dispatch_error", 2, now - timedelta(seconds=40)),
        WaitingMessages("beta", "queued", 1, now + timedelta(hours=1)),  # scheduled: not late
    ]
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(render(waiting, now).decode())
        for sample in family.samples
        if sample.name.startswith("smsrelay_outbox")
    }
    assert samples == {
        ("smsrelay_outbox_messages", (("connector", "alpha"), ("status", "queued"))): 7,
        ("smsrelay_outbox_messages", (("connector", "alpha"), ("status", "sending"))): 3,
        ("smsrelay_outbox_messages", (("connector", "beta"), ("status", "dispatch_error"))): 2,
        ("smsrelay_outbox_messages", (("connector", "beta"), ("status", "queued"))): 1,
        ("smsrelay_outbox_overdue_seconds", (("connector", "alpha"),)): 12.5,
        ("smsrelay_outbox_overdue_seconds", (("connector", "beta"),)): 0,
    }


def test_without_the_database_the_process_metrics_are_still_rendered() -> None:
    text = render().decode()
    assert "# HELP smsrelay_provider_requests_total" in text
    assert "smsrelay_outbox_messages" not in text


def test_the_metrics_port_setting_is_off_by_default_and_checked() -> None:
    assert load_settings({}).metrics_port == 0
    assert load_settings({"SMSRELAY_METRICS_PORT": "9464"}).metrics_port == 9464
    with pytest.raises(ValueError, match=r"SMSRELAY_METRICS_PORT: expected a port .* got 70000"):
        load_settings({"SMSRELAY_METRICS_PORT": "70000"})
    with pytest.raises(ValueError, match="SMSRELAY_METRICS_PORT: expected a whole number"):
        load_settings({"SMSRELAY_METRICS_PORT": "ninety"})


def test_a_connectors_requests_make_a_cumulative_histogram_and_counters() -> None:
    meter = connector_meter("histogram-test")
    for seconds, result in ((0.003, "2xx"), (0.005, "2xx"), (0.2, "5xx"), (40.0, "timeout")):
        meter.request(seconds, result)
    meter.attempts(["sent", "sent", "retry", "retry"])
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(render().decode())
        for sample in family.samples
        if sample.labels.get("connector") == "histogram-test"
    }

    def bucket(le: str) -> float:
        key = (("connector", "histogram-test"), ("le", le))
        return samples[("smsrelay_provider_request_seconds_bucket", key)]

    # A bound counts what is at most it: 0.005 is in the 0.005 bucket.
    assert [bucket(le) for le in ("0.005", "0.01", "0.25", "30.0", "+Inf")] == [2, 2, 3, 3, 4]
    only = (("connector", "histogram-test"),)
    assert samples[("smsrelay_provider_request_seconds_count", only)] == 4
    assert abs(samples[("smsrelay_provider_request_seconds_sum", only)] - 40.208) < 1e-9
    requests = {
        key[1][1][1]: value
        for key, value in samples.items()
        if key[0] == "smsrelay_provider_requests_total"
    }
    assert requests == {"2xx": 2, "5xx": 1, "timeout": 1}
    assert (
        samples[
            (
                "smsrelay_message_attempts_total",
                (("connector", "histogram-test"), ("outcome", "retry")),
            )
        ]
        == 2
    )
    assert connector_meter("histogram-test") is meter
