"""The suppression list: automatic after repeated delivery failures, manual, promotional only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from api.test_webhooks import CONNECTOR, create_webhook, eventually, running_receiver, send
from gateway import Gateway, running_gateway
from smsrelay.connectors.definition import parse_definition
from smsrelay.store.connectors import save_connector
from smsrelay.store.database import Database
from smsrelay.store.messages import new_message_id
from smsrelay.store.secret_box import SecretBox, generate_secret_key
from smsrelay.store.suppression import failure_streak, is_suppressed, recount_failures
from smsrelay.store.tables import messages

UNDELIVERABLE = "+15005550001"  # the sandbox reports it undelivered (absent_subscriber)
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


async def suppressed_numbers(gw: Gateway) -> dict[str, dict[str, Any]]:
    response = await gw.client.get("/v1/suppressions")
    assert response.status_code == 200, response.text
    return {s["number"]: s for s in response.json()["data"]}


async def test_three_undelivered_suppress_a_number_for_promotional_sends_until_released(
    database_url: str, tmp_path: Path
) -> None:
    async with running_receiver() as receiver, running_gateway(database_url, tmp_path) as gw:
        await create_webhook(gw, receiver.url("sync"), events=["undelivered"])
        failed = [await send(gw, UNDELIVERABLE, type="promotional") for _ in range(2)]
        failed.append(await send(gw, UNDELIVERABLE))  # transactional failures count too
        for message_id in failed:
            await gw.wait_for_status(message_id, "undelivered")
        # The recount runs in the transaction that queues the webhook deliveries.
        await eventually(lambda: len(receiver.accepted("sync")) == 3)
        entry = (await suppressed_numbers(gw))[UNDELIVERABLE]
        assert entry["source"] == "failures" and entry["consecutive_failures"] == 3
        assert entry["reason"] == "absent_subscriber"

        refused = await gw.client.post(
            "/v1/messages", json={"to": UNDELIVERABLE, "body": "sale!", "type": "promotional"}
        )
        assert refused.status_code == 422
        assert refused.json()["errors"] == [
            {
                "path": "to",
                "message": "suppressed after 3 consecutive delivery failures; "
                f"DELETE /v1/suppressions/{UNDELIVERABLE} to send again",
            }
        ]
        batch = await gw.client.post(
            "/v1/messages/batch",
            json={
                "messages": [
                    {"to": UNDELIVERABLE, "body": "sale!", "type": "promotional"},
                    {"to": "+15005550006", "body": "sale!", "type": "promotional"},
                    {"to": UNDELIVERABLE, "body": "your code is 1234"},
                ]
            },
        )
        assert batch.status_code == 202, batch.text
        assert [a["index"] for a in batch.json()["accepted"]] == [1, 2]
        assert [r["index"] for r in batch.json()["rejected"]] == [0]
        assert batch.json()["rejected"][0]["errors"][0]["path"] == "to"

        released = await gw.client.delete(f"/v1/suppressions/{UNDELIVERABLE}")
        assert released.status_code == 204
        assert UNDELIVERABLE not in await suppressed_numbers(gw)
        again = await send(gw, UNDELIVERABLE, type="promotional")
        await gw.wait_for_status(again, "undelivered")
        await eventually(lambda: len(receiver.accepted("sync")) == 5)
        # Failures before the release no longer count: one new failure is not three.
        assert UNDELIVERABLE not in await suppressed_numbers(gw)
        assert (await gw.client.delete(f"/v1/suppressions/{UNDELIVERABLE}")).status_code == 404


async def test_numbers_can_be_suppressed_by_hand(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        added = await gw.client.post(
            "/v1/suppressions", json={"number": "+15005550123", "reason": "asked to stop"}
        )
        assert added.status_code == 201, added.text
        assert added.json()["source"] == "manual"
        repeated = await gw.client.post("/v1/suppressions", json={"number": "+15005550123"})
        assert repeated.status_code == 200 and repeated.json()["reason"] == "asked to stop"
        refused = await gw.client.post(
            "/v1/messages", json={"to": "+15005550123", "body": "sale!", "type": "promotional"}
        )
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["message"] == (
            "suppressed by hand (asked to stop); DELETE /v1/suppressions/+15005550123 to send again"
        )
        transactional = await gw.client.post(
            "/v1/messages", json={"to": "+15005550123", "body": "your code is 1234"}
        )
        assert transactional.status_code == 202

        bad = await gw.client.post("/v1/suppressions", json={"number": "call me"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "number"
        assert (await gw.client.delete("/v1/suppressions/+15005550123")).status_code == 204
        assert await suppressed_numbers(gw) == {}


# ---------------------------------------------------------------- the count, at the store


def test_the_streak_is_the_run_of_undelivered_at_the_newest_end() -> None:
    assert failure_streak(["undelivered", "undelivered", "delivered", "undelivered"]) == 2
    assert failure_streak(["delivered", "undelivered"]) == 0
    assert failure_streak([]) == 0


async def test_a_delivered_message_resets_the_count_and_lifts_the_suppression(
    database: Database,
) -> None:
    box = SecretBox([generate_secret_key()])
    connector = await save_connector(database, box, parse_definition(CONNECTOR), now=NOW)
    number = "+4915112345678"

    async def finish(status: str, minutes: int) -> None:
        at = NOW + timedelta(minutes=minutes)
        async with database.transaction() as conn:
            await conn.execute(
                insert(messages).values(
                    id=new_message_id(),
                    connector_id=connector.id,
                    to=number,
                    body="hi",
                    status=status,
                    created_at=at,
                    updated_at=at,
                    final_at=at,
                )
            )
            await recount_failures(conn, database, [number], threshold=3, now=at)

    await finish("undelivered", 1)
    await finish("undelivered", 2)
    assert await is_suppressed(database, number) is None
    await finish("delivered", 3)
    await finish("undelivered", 4)
    await finish("undelivered", 5)
    assert await is_suppressed(database, number) is None  # the delivery broke the run
    await finish("undelivered", 6)
    record = await is_suppressed(database, number)
    assert record is not None and record.consecutive_failures == 3
    await finish("delivered", 7)
    assert await is_suppressed(database, number) is None
