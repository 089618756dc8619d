"""`GET /metrics`: Prometheus text with this process's counters and the outbox's gauges.

A real server with the sandbox as provider; each test runs on SQLite and PostgreSQL.
Counters belong to the process (shared by every test in it), so the tests compare a
scrape taken before with one taken after.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway import Gateway, running_gateway

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gw: Gateway) -> tuple[str, Samples]:
    """The page as text and its samples, fetched without an API key (as Prometheus does)."""
    async with httpx.AsyncClient(base_url=gw.base_url) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def send(gw: Gateway, to: str, **extra: object) -> str:
    response = await gw.client.post("/v1/messages", json={"to": to, "body": "hello", **extra})
    assert response.status_code == 202, response.text
    message_id: str = response.json()["id"]
    return message_id


async def test_requests_attempts_and_delivery_reports_are_counted(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        _, before = await scrape(gw)
        accepted = [await send(gw, "+15005550006") for _ in range(2)]
        rejected = await send(gw, "+15005550400")  # the sandbox refuses it for good
        for message_id in accepted:
            await gw.wait_for_status(message_id, "delivered")
        await gw.wait_for_status(rejected, "failed")
        text, after = await scrape(gw)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sandbox = {"connector": "sandbox"}
    assert delta("smsrelay_provider_requests_total", result="2xx", **sandbox) == 2
    assert delta("smsrelay_provider_requests_total", result="4xx", **sandbox) == 1
    assert delta("smsrelay_provider_request_seconds_count", **sandbox) == 3
    assert delta("smsrelay_message_attempts_total", outcome="sent", **sandbox) == 2
    assert delta("smsrelay_message_attempts_total", outcome="failed", **sandbox) == 1
    assert delta("smsrelay_delivery_reports_stored_total") >= 2
    assert value(after, "process_cpu_seconds_total") > 0
    # Nothing of the messages or the connector's secret (the sandbox URL) is shown.
    for private in ("+15005550006", "hello", gw.base_url, gw.api_key):
        assert private not in text


async def test_the_outbox_gauges_show_what_waits_and_how_late(
    database_url: str, tmp_path: Path
) -> None:
    # No dispatcher: what is queued stays queued.
    async with running_gateway(database_url, tmp_path, dispatcher=False) as gw:
        _, empty = await scrape(gw)
        assert value(empty, "smsrelay_outbox_messages", connector="sandbox", status="queued") == 0
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        await send(gw, "+15005550006", send_at=later)
        _, scheduled = await scrape(gw)
        waiting = {"connector": "sandbox", "status": "queued"}
        assert value(scheduled, "smsrelay_outbox_messages", **waiting) == 1
        # Scheduled for later is not late.
        assert value(scheduled, "smsrelay_outbox_overdue_seconds", connector="sandbox") == 0
        await send(gw, "+15005550006")
        await asyncio.sleep(0.3)
        _, due = await scrape(gw)
        assert value(due, "smsrelay_outbox_messages", **waiting) == 2
        overdue = value(due, "smsrelay_outbox_overdue_seconds", connector="sandbox")
        assert 0.3 <= overdue < 30
