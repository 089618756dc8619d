"""Webhooks out, end to end: a real gateway, the sandbox provider, a real receiver on 127.0.0.1.

Each e2e test runs on SQLite and PostgreSQL (the `database_url` fixture). The receiver
answers 500 to the first tries of each event id when told to, and checks signatures.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import insert

from gateway import Gateway, running_gateway
from smsrelay.connectors.definition import parse_definition
from smsrelay.connectors.exchange import HttpResponse
from smsrelay.dispatch.transport import InMemoryTransport
from smsrelay.dispatch.webhook_formats import FormatRegistry, NativeFormat
from smsrelay.dispatch.webhook_sender import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookRetry,
    WebhookSender,
    plan_after_failure,
    sign,
    verify_signature,
)
from smsrelay.sandbox.server import bind_free_port
from smsrelay.store.connectors import save_connector
from smsrelay.store.database import Database
from smsrelay.store.messages import new_message_id
from smsrelay.store.secret_box import SecretBox, generate_secret_key
from smsrelay.store.tables import message_events, messages
from smsrelay.store.webhooks import StatusEventFeed, recent_deliveries
from smsrelay.store.webhooks import create_webhook as create_stored_webhook

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
FAST_RETRY = WebhookRetry(initial_seconds=0.02, max_seconds=0.1)
CONNECTOR = {
    "name": "acme",
    "request": {
        "url": "https://sms.example.com/send",
        "body": {"json": {"to": "{{to}}", "text": "{{body}}"}},
    },
}

# ---------------------------------------------------------------- a webhook receiver


@dataclass
class Hit:
    """One request the receiver got, and what it answered."""

    hook: str
    event_id: str
    timestamp: str
    signature: str
    body: bytes
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


@dataclass
class Receiver:
    """Receives webhooks at /hooks/{name}; the first `fail_first[name]` tries of an id get 500."""

    base_url: str = ""
    fail_first: dict[str, int] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)

    def url(self, hook: str) -> str:
        return f"{self.base_url}/hooks/{hook}"

    async def handle(self, request: web.Request) -> web.Response:
        hook = request.match_info["hook"]
        event_id = request.headers.get(EVENT_ID_HEADER, "")
        earlier = sum(1 for h in self.hits if h.hook == hook and h.event_id == event_id)
        status = 500 if earlier < self.fail_first.get(hook, 0) else 200
        self.hits.append(
            Hit(
                hook=hook,
                event_id=event_id,
                timestamp=request.headers.get(TIMESTAMP_HEADER, ""),
                signature=request.headers.get(SIGNATURE_HEADER, ""),
                body=await request.read(),
                answered=status,
            )
        )
        return web.Response(status=status, text="oops" if status == 500 else "ok")

    def accepted(self, hook: str) -> list[Hit]:
        return [h for h in self.hits if h.hook == hook and h.answered == 200]

    def accepted_types(self, hook: str, message_id: str) -> list[str]:
        return sorted(
            h.event["type"]
            for h in self.accepted(hook)
            if h.event["data"]["message_id"] == message_id
        )


@asynccontextmanager
async def running_receiver(**fail_first: int) -> AsyncIterator[Receiver]:
    receiver = Receiver(fail_first=dict(fail_first))
    app = web.Application()
    app.router.add_post("/hooks/{hook}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = bind_free_port("127.0.0.1")
    site = web.SockSite(runner, sock)
    await site.start()
    host, port = sock.getsockname()[:2]
    receiver.base_url = f"http://{host}:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()
        sock.close()


# ---------------------------------------------------------------- helpers


def fast_retries(gw: Gateway, retry: WebhookRetry = FAST_RETRY) -> None:
    sender: WebhookSender = gw.runtime.extras["webhook_sender"]
    sender.retry = retry


async def create_webhook(gw: Gateway, url: str, **fields: Any) -> dict[str, Any]:
    response = await gw.client.post("/v1/webhooks", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def send(gw: Gateway, to: str, **extra: Any) -> str:
    response = await gw.client.post("/v1/messages", json={"to": to, "body": "hi", **extra})
    assert response.status_code == 202, response.text
    message_id: str = response.json()["id"]
    return message_id


async def eventually(check: Any, timeout: float = 20.0) -> None:
    """Wait until `check()` is true (polling; the timeout only stops a hung test)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def delivery_log(gw: Gateway, webhook_id: str) -> list[dict[str, Any]]:
    response = await gw.client.get(f"/v1/webhooks/{webhook_id}")
    assert response.status_code == 200, response.text
    deliveries: list[dict[str, Any]] = response.json()["deliveries"]
    return deliveries


def types_by_message(log: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for delivery in log:
        found.setdefault(delivery["message_id"], []).append(delivery["type"])
    return {k: sorted(v) for k, v in found.items()}


# ---------------------------------------------------------------- end to end


async def test_each_event_arrives_once_per_dedupe_id_through_server_errors_and_is_signed(
    database_url: str, tmp_path: Path
) -> None:
    async with running_receiver(all=2) as receiver, running_gateway(database_url, tmp_path) as gw:
        fast_retries(gw)
        hook = await create_webhook(gw, receiver.url("all"))
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["*"]
        message_id = await send(gw, "+15005550006")
        await gw.wait_for_status(message_id, "delivered")
        await eventually(
            lambda: (
                receiver.accepted_types("all", message_id) == ["message.delivered", "message.sent"]
            )
        )

        accepted = receiver.accepted("all")
        assert len({h.event_id for h in accepted}) == len(accepted) == 2
        for hit in accepted:
            tries = [h for h in receiver.hits if h.event_id == hit.event_id]
            assert [h.answered for h in tries] == [500, 500, 200]
            assert {h.body for h in tries} == {hit.body}  # the same event every time
            assert hit.event["id"] == hit.event_id
            assert verify_signature(
                hook["secret"],
                hit.body,
                timestamp=hit.timestamp,
                signature=hit.signature,
                now=time.time(),
            )
        delivered = next(h.event for h in accepted if h.event["type"] == "message.delivered")
        assert delivered["data"]["message_id"] == message_id
        assert delivered["data"]["status"] == "delivered"
        assert delivered["data"]["to"] == "+15005550006"
        assert delivered["data"]["connector"] == "sandbox"
        assert delivered["data"]["sender"] == "sandbox-trans"
        assert delivered["data"]["provider_ids"]

        log = await delivery_log(gw, hook["id"])
        assert {d["id"] for d in log} == {h.event_id for h in accepted}
        for delivery in log:
            assert delivery["state"] == "delivered" and delivery["attempts"] == 3
            assert [t["status_code"] for t in delivery["tries"]] == [500, 500, 200]
            assert delivery["tries"][0]["error"] == "HTTP 500: oops"
            assert all(t["duration_ms"] >= 0 for t in delivery["tries"])


async def test_a_webhook_gets_only_the_statuses_it_subscribed_to(
    database_url: str, tmp_path: Path
) -> None:
    async with running_receiver() as receiver, running_gateway(database_url, tmp_path) as gw:
        await create_webhook(gw, receiver.url("every"))
        delivered_only = await create_webhook(gw, receiver.url("ok"), events=["delivered"])
        failures = await create_webhook(gw, receiver.url("bad"), events=["failed", "undelivered"])
        good = await send(gw, "+15005550006")
        rejected = await send(gw, "+15005550400")
        await gw.wait_for_status(good, "delivered")
        await gw.wait_for_status(rejected, "failed")
        await eventually(
            lambda: (
                receiver.accepted_types("every", good) == ["message.delivered", "message.sent"]
                and receiver.accepted_types("every", rejected) == ["message.failed"]
            )
        )
        # Deliveries to every webhook are created in the same transaction, so the logs
        # are complete once the catch-all webhook has everything.
        assert types_by_message(await delivery_log(gw, delivered_only["id"])) == {
            good: ["message.delivered"]
        }
        assert types_by_message(await delivery_log(gw, failures["id"])) == {
            rejected: ["message.failed"]
        }
        await eventually(lambda: len(receiver.accepted("bad")) == 1)
        failed_event = receiver.accepted("bad")[0].event
        assert failed_event["data"]["failure_reason"]
        assert "invalid destination" in failed_event["data"]["failure_reason"]


async def test_a_message_naming_a_webhook_reaches_it(database_url: str, tmp_path: Path) -> None:
    async with running_receiver() as receiver, running_gateway(database_url, tmp_path) as gw:
        every = await create_webhook(gw, receiver.url("every"))
        named = await create_webhook(gw, receiver.url("named"), scope="named")
        assert named["scope"] == "named"
        mine = await send(gw, "+15005550006", webhook_id=named["id"])
        other = await send(gw, "+15005550007")
        also_every = await send(gw, "+15005550008", webhook_id=every["id"])
        for message_id in (mine, other, also_every):
            await gw.wait_for_status(message_id, "delivered")
        both = ["message.delivered", "message.sent"]
        await eventually(
            lambda: all(
                receiver.accepted_types("every", m) == both for m in (mine, other, also_every)
            )
        )
        await eventually(lambda: receiver.accepted_types("named", mine) == both)
        assert types_by_message(await delivery_log(gw, named["id"])) == {mine: both}
        # Naming a webhook that already gets everything does not double the events.
        assert types_by_message(await delivery_log(gw, every["id"]))[also_every] == both


async def test_a_delivery_that_keeps_failing_is_given_up_with_every_try_logged(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        running_receiver(down=1_000) as receiver,
        running_gateway(database_url, tmp_path) as gw,
    ):
        fast_retries(
            gw, WebhookRetry(initial_seconds=0.01, max_seconds=0.05, give_up_after=timedelta(0))
        )
        hook = await create_webhook(gw, receiver.url("down"), events=["delivered"])
        message_id = await send(gw, "+15005550006")
        await gw.wait_for_status(message_id, "delivered")

        async def given_up() -> list[dict[str, Any]]:
            async with asyncio.timeout(20):
                while True:
                    log = await delivery_log(gw, hook["id"])
                    if log and log[0]["state"] == "failed":
                        return log
                    await asyncio.sleep(0.05)

        [delivery] = await given_up()
        assert delivery["last_status"] == 500 and delivery["finished_at"]
        assert [t["status_code"] for t in delivery["tries"]] == [500] * delivery["attempts"]


async def test_webhooks_are_validated_listed_and_deleted(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        response = await gw.client.post(
            "/v1/webhooks",
            json={
                "url": "ftp://example.com/x",
                "events": ["delivered", "bounced"],
                "format": "fax",
                "secret": "short",
            },
        )
        assert response.status_code == 422
        paths = {e["path"] for e in response.json()["errors"]}
        assert paths == {"url", "events[1]", "format", "secret"}

        hook = await create_webhook(
            gw, "https://hooks.example.com/sms", events=["delivered"], secret="s" * 20
        )
        assert hook["secret"] == "s" * 20 and hook["scope"] == "all"
        listed = (await gw.client.get("/v1/webhooks")).json()["data"]
        assert [w["id"] for w in listed] == [hook["id"]]
        assert "secret" not in listed[0]
        shown = (await gw.client.get(f"/v1/webhooks/{hook['id']}")).json()
        assert shown["deliveries"] == [] and "secret" not in shown

        assert (await gw.client.delete(f"/v1/webhooks/{hook['id']}")).status_code == 204
        assert (await gw.client.get(f"/v1/webhooks/{hook['id']}")).status_code == 404
        assert (await gw.client.delete(f"/v1/webhooks/{hook['id']}")).status_code == 404
        # Without events: every status, but a moengage webhook only final ones (MoEngage
        # reads any other status as a failure). Given events are kept as given.
        defaults = {
            fmt: (await create_webhook(gw, "https://hooks.example.com/x", format=fmt))["events"]
            for fmt in ("native", "clevertap", "moengage")
        }
        assert defaults == {
            "native": ["*"],
            "clevertap": ["*"],
            "moengage": ["delivered", "undelivered", "failed"],
        }
        chosen = await create_webhook(
            gw, "https://hooks.example.com/y", format="moengage", events=["sent", "delivered"]
        )
        assert chosen["events"] == ["sent", "delivered"]
        # A message may not name a webhook that is not there: its reports would go nowhere.
        refused = await gw.client.post(
            "/v1/messages",
            json={"to": "+15005550006", "body": "x", "webhook_id": hook["id"]},
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"] == [
            {
                "path": "webhook_id",
                "message": f"no webhook {hook['id']!r}: create it first (POST /v1/webhooks) "
                "or leave webhook_id out",
            }
        ]


# ---------------------------------------------------------------- pure parts


def test_signatures_verify_and_expire_after_the_replay_window() -> None:
    body = b'{"id":"evt_1"}'
    signature = sign("whsec_test", 1_717_243_200, body)
    assert signature.startswith("v1=")
    check: Mapping[str, Any] = {"timestamp": "1717243200", "signature": signature}
    assert verify_signature("whsec_test", body, now=1_717_243_200 + 299, **check)
    assert not verify_signature("whsec_test", body, now=1_717_243_200 + 301, **check)
    assert not verify_signature("whsec_test", body + b" ", now=1_717_243_200, **check)
    assert not verify_signature("other", body, now=1_717_243_200, **check)


def test_retries_back_off_with_jitter_then_give_up_after_the_window() -> None:
    retry = WebhookRetry(initial_seconds=10, max_seconds=60, give_up_after=timedelta(hours=24))
    rng = random.Random(7)
    delays = [retry.delay(n, rng) for n in range(1, 8)]
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20 and 20 <= delays[2] <= 40
    assert all(30 <= d <= 60 for d in delays[3:])
    state, next_at = plan_after_failure(3, T0, T0 + timedelta(hours=23), retry, rng)
    assert state == "pending" and next_at is not None and next_at > T0 + timedelta(hours=23)
    assert plan_after_failure(40, T0, T0 + timedelta(hours=24), retry, rng) == ("failed", None)
    assert plan_after_failure(1, T0, T0, retry, rng, retryable=False) == ("failed", None)


def test_the_event_cursor_waits_at_a_young_hole_and_passes_an_old_one() -> None:
    feed = StatusEventFeed(gap_grace=timedelta(seconds=30))
    # 103 is missing: a transaction still in flight, or rolled back.
    assert feed.settle(100, [101, 102, 104, 105], T0) == 102
    assert feed.needs_scan(105)
    # It committed later: the cursor moves past everything.
    assert feed.settle(102, [103, 104, 105], T0 + timedelta(seconds=1)) == 105
    # A hole that stays is given up after the grace period.
    assert feed.settle(105, [107], T0) == 105
    assert feed.settle(105, [107], T0 + timedelta(seconds=29)) == 105
    assert feed.settle(105, [107], T0 + timedelta(seconds=30)) == 107
    feed.handled([107], 107)
    assert not feed.needs_scan(107) and feed.needs_scan(108)


# ---------------------------------------------------------------- the sender alone, on a clock


@dataclass
class QuietFormat:
    """A format with nothing to say about any event."""

    name: str = "quiet"
    max_batch: int = 10
    default_events: tuple[str, ...] = ("*",)

    def render(self, events: Any, webhook: Any) -> tuple[bytes, str]:
        return b"", "application/json"


async def status_event(database: Database, status: str, at: datetime) -> str:
    """A message with one status entry, written the way the dispatcher writes them."""
    box = SecretBox([generate_secret_key()])
    connector = await save_connector(database, box, parse_definition(CONNECTOR), now=at)
    message_id = new_message_id()
    async with database.transaction() as conn:
        await conn.execute(
            insert(messages).values(
                id=message_id,
                connector_id=connector.id,
                to="+4915112345678",
                body="hi",
                status=status,
                created_at=at,
                updated_at=at,
            )
        )
        await conn.execute(
            insert(message_events).values(
                message_id=message_id, at=at, kind="status", status=status, detail={"from": "x"}
            )
        )
    return message_id


async def test_retries_follow_the_injected_clock_and_an_empty_body_posts_nothing(
    database: Database,
) -> None:
    box = SecretBox([generate_secret_key()])
    answers = [500, 200]
    transport = InMemoryTransport(lambda request: HttpResponse(answers.pop(0), {}, b""))
    registry = FormatRegistry([NativeFormat(), QuietFormat()])
    now = [T0]
    sender = WebhookSender(
        database, box, transport, formats=registry, clock=lambda: now[0], rng=random.Random(1)
    )
    native = await create_stored_webhook(
        database,
        box,
        url="https://hooks.example.com/a",
        events=["*"],
        format="native",
        scope="all",
        secret="s" * 20,
        now=T0,
    )
    quiet = await create_stored_webhook(
        database,
        box,
        url="https://hooks.example.com/b",
        events=["*"],
        format="quiet",
        scope="all",
        secret="s" * 20,
        now=T0,
    )
    await status_event(database, "delivered", T0 + timedelta(seconds=1))

    now[0] = T0 + timedelta(seconds=2)
    await sender.run_once()
    [first] = await recent_deliveries(database, native.id)
    assert first.state == "pending" and first.last_status == 500
    assert first.next_attempt_at is not None and first.next_attempt_at > T0 + timedelta(seconds=2)
    now[0] = first.next_attempt_at - timedelta(milliseconds=1)
    await sender.run_once()
    assert len(transport.requests) == 1  # not due yet
    now[0] = first.next_attempt_at
    await sender.run_once()
    [done] = await recent_deliveries(database, native.id)
    assert done.state == "delivered" and [t.status_code for t in done.tries] == [500, 200]
    assert {r.header(EVENT_ID_HEADER) for r in transport.requests} == {done.id}

    [skipped] = await recent_deliveries(database, quiet.id)
    assert skipped.state == "skipped" and len(transport.requests) == 2
