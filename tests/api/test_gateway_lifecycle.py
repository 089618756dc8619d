"""The gateway end to end: a real server, the sandbox as provider, the API as the only door.

Each test runs on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from gateway import Gateway, running_gateway
from smsrelay.sandbox import sandbox_connector_yaml


def fast_retry_connector(
    gw: Gateway, name: str = "sbx", *, batch: bool = False, **changes: Any
) -> dict[str, Any]:
    """The shipped sandbox connector, pointed at this server's sandbox, with quick retries."""
    document: dict[str, Any] = yaml.safe_load(
        sandbox_connector_yaml(gw.base_url + "/sandbox", batch=batch)
    )
    document["name"] = name
    document["retry"] = {"max_attempts": 4, "initial_seconds": 0.05, "max_seconds": 3}
    document.update(changes)
    return document


async def add_connector_and_sender(gw: Gateway, document: dict[str, Any], sender: str) -> None:
    response = await gw.client.put(f"/v1/connectors/{document['name']}", json=document)
    assert response.status_code == 200, response.text
    response = await gw.client.post(
        "/v1/senders", json={"name": sender, "connector": document["name"], "sender_id": "TESTER"}
    )
    assert response.status_code == 201, response.text


async def send(gw: Gateway, to: str, body: str = "hello", **extra: Any) -> dict[str, Any]:
    response = await gw.client.post("/v1/messages", json={"to": to, "body": body, **extra})
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def attempt_times(message: dict[str, Any]) -> list[datetime]:
    return [datetime.fromisoformat(e["at"]) for e in message["history"] if e["kind"] == "attempt"]


async def test_a_message_is_sent_to_the_sandbox_with_its_history(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        accepted = await send(gw, "+15005550006", "hi")
        assert accepted["status"] == "queued"
        assert accepted["connector"] == "sandbox" and accepted["segments"] == 1
        message = await gw.wait_for_status(accepted["id"], {"sent", "delivered"})
        received = gw.sandbox.messages(to="+15005550006")
        assert [m.body for m in received] == ["hi"]
        assert message["provider_ids"] == [received[0].id]
        kinds = [(e["kind"], e["status"]) for e in message["history"]]
        assert kinds[:3] == [("status", "queued"), ("attempt", "sent"), ("status", "sent")]


async def test_a_permanent_rejection_fails_at_once_with_the_providers_error(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        accepted = await send(gw, "+15005550400")
        message = await gw.wait_for_status(accepted["id"], "failed")
        assert message["attempts"] == 1
        assert "invalid destination" in message["failure_reason"]


async def test_server_errors_are_retried_until_the_provider_accepts(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        await add_connector_and_sender(gw, fast_retry_connector(gw), "retrying")
        accepted = await send(gw, "+15005550500", sender="retrying")
        message = await gw.wait_for_status(accepted["id"], {"sent", "delivered"})
        outcomes = [e["detail"]["outcome"] for e in message["history"] if e["kind"] == "attempt"]
        assert outcomes == ["retry", "retry", "sent"]


async def test_retries_run_out_and_the_message_fails(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        document = fast_retry_connector(gw)
        document["retry"]["max_attempts"] = 2
        await add_connector_and_sender(gw, document, "impatient")
        accepted = await send(gw, "+15005550500", sender="impatient")
        message = await gw.wait_for_status(accepted["id"], "failed")
        assert message["attempts"] == 2
        assert message["failure_reason"].startswith("retries_exhausted")


async def test_retry_after_is_honoured(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        await add_connector_and_sender(gw, fast_retry_connector(gw), "polite")
        accepted = await send(gw, "+15005550429", sender="polite")
        message = await gw.wait_for_status(accepted["id"], {"sent", "delivered"}, timeout=20)
        first, second = attempt_times(message)
        # The sandbox answers 429 with Retry-After: 2; the backoff alone would be 0.05 s.
        assert second - first >= timedelta(seconds=2)


async def test_a_scheduled_message_waits_and_can_be_canceled(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        accepted = await send(gw, "+15005550006", send_at=later)
        await asyncio.sleep(0.5)
        assert (await gw.client.get(f"/v1/messages/{accepted['id']}")).json()["status"] == "queued"
        assert gw.sandbox.messages() == []
        canceled = await gw.client.post(f"/v1/messages/{accepted['id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        again = await gw.client.post(f"/v1/messages/{accepted['id']}/cancel")
        assert again.status_code == 409


async def test_a_missing_parameter_is_refused_before_anything_is_queued(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        document = fast_retry_connector(gw)
        document["request"]["body"]["json"]["body"] = "Hi {{params.first_name}}: {{body}}"
        await add_connector_and_sender(gw, document, "personal")
        response = await gw.client.post(
            "/v1/messages", json={"to": "+15005550006", "body": "x", "sender": "personal"}
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert {
            "path": "params.first_name",
            "message": "connector 'sbx' needs this parameter",
        } in response.json()["errors"]
        listed = (await gw.client.get("/v1/messages")).json()
        assert listed["data"] == []


async def test_idempotency_key_returns_the_first_answer(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        payload = {"to": "+15005550006", "body": "once"}
        headers = {"Idempotency-Key": "order-42"}
        first = await gw.client.post("/v1/messages", json=payload, headers=headers)
        second = await gw.client.post("/v1/messages", json=payload, headers=headers)
        assert first.status_code == second.status_code == 202
        assert first.json() == second.json()
        other = await gw.client.post(
            "/v1/messages", json={**payload, "body": "twice"}, headers=headers
        )
        assert other.status_code == 409
        listed = (await gw.client.get("/v1/messages")).json()["data"]
        assert [m["id"] for m in listed] == [first.json()["id"]]


async def test_a_batch_reports_rejections_by_index_and_is_grouped_as_the_connector_says(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        await add_connector_and_sender(gw, fast_retry_connector(gw, "bulk", batch=True), "bulk")
        messages: list[dict[str, Any]] = [
            {"to": f"+1500555{i:04d}", "body": "same text", "sender": "bulk"} for i in range(10, 30)
        ]
        messages[3] = {"to": "not a number", "body": "x", "sender": "bulk"}
        messages[7] = {"to": "+15005550099", "sender": "bulk"}
        response = await gw.client.post("/v1/messages/batch", json={"messages": messages})
        assert response.status_code == 202, response.text
        answer = response.json()
        assert [r["index"] for r in answer["rejected"]] == [3, 7]
        assert answer["rejected"][0]["errors"][0]["path"] == "to"
        assert len(answer["accepted"]) == 18
        for item in answer["accepted"]:
            await gw.wait_for_status(item["id"], {"sent", "delivered"})
        received = gw.sandbox.messages(limit=100)
        assert len(received) == 18
        assert {m.request.path for m in received} == {"/sandbox/api/messages/batch"}
        # 18 messages with one body and sender: one request carried them all.
        assert len({m.request.body for m in received}) == 1


async def test_bad_input_gets_a_problem_with_field_errors(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        response = await gw.client.post(
            "/v1/messages", json={"to": "+1", "body": "x", "colour": "red"}
        )
        assert response.status_code == 422
        problem = response.json()
        assert problem["status"] == 422 and problem["title"] == "Invalid input"
        assert {e["path"] for e in problem["errors"]} == {"body.colour"}
        response = await gw.client.post("/v1/messages", json={"to": "+1", "body": "x"})
        assert response.status_code == 422
        assert response.json()["errors"][0]["path"] == "to"
        unauthenticated = await gw.client.get("/v1/messages", headers={"Authorization": ""})
        assert unauthenticated.status_code == 401


async def test_connector_secrets_are_write_only(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        document = fast_retry_connector(gw, "secretive")
        document["request"]["headers"] = {"Authorization": "Bearer {{secret.api_key}}"}
        document["secrets"]["api_key"] = "s3cr3t-value-xyz"
        response = await gw.client.post("/v1/connectors", json=document)
        assert response.status_code == 201, response.text
        assert "s3cr3t-value-xyz" not in response.text
        shown = await gw.client.get("/v1/connectors/secretive")
        assert shown.json()["definition"]["secrets"] == {"base_url": "***", "api_key": "***"}
        preview = await gw.client.post(
            "/v1/connectors/secretive/preview", json={"to": "+15005550006", "body": "x"}
        )
        assert preview.status_code == 200, preview.text
        assert "s3cr3t-value-xyz" not in preview.text
        assert ["Authorization", "Bearer ***"] in preview.json()["request"]["headers"]
        # A PUT that leaves secrets out keeps them: the connector still validates.
        document.pop("secrets")
        assert (await gw.client.put("/v1/connectors/secretive", json=document)).status_code == 200


async def test_a_new_connector_with_masked_secrets_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        # What GET shows of a connector, posted to a server that does not have it.
        exported = (await gw.client.get("/v1/connectors/sandbox")).json()["definition"]
        assert exported["secrets"] == {"base_url": "***"}
        exported["name"] = "copied"
        for answer in (
            await gw.client.post("/v1/connectors", json=exported),
            await gw.client.put("/v1/connectors/copied", json=exported),
        ):
            assert answer.status_code == 422, answer.text
            problem = answer.json()
            assert "***" in problem["detail"]
            assert problem["errors"] == [
                {"path": "secrets.base_url", "message": "is *** (masked); give the real value"}
            ]
        assert (await gw.client.get("/v1/connectors/copied")).status_code == 404
        # A real value is taken.
        exported["secrets"] = {"base_url": gw.base_url + "/sandbox"}
        assert (await gw.client.post("/v1/connectors", json=exported)).status_code == 201


async def test_the_test_endpoint_sends_now_and_returns_the_trace(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        response = await gw.client.post(
            "/v1/connectors/sandbox/test", json={"to": "+15005550006", "body": "ping"}
        )
        assert response.status_code == 200, response.text
        trace = response.json()
        assert trace["verdict"] == "accepted"
        assert trace["request"]["method"] == "POST" and trace["response"]["status"] == 200
        assert trace["provider_ids"] == [gw.sandbox.messages()[0].id]


async def test_a_rate_limit_holds_over_five_seconds(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        document = fast_retry_connector(gw, "limited")
        document["rate_limit"] = {"per_second": 20, "burst": 1}
        await add_connector_and_sender(gw, document, "limited")
        messages = [
            {"to": f"+1500555{i:04d}", "body": f"n{i}", "sender": "limited"}
            for i in range(1000, 1150)
        ]
        response = await gw.client.post("/v1/messages/batch", json={"messages": messages})
        assert len(response.json()["accepted"]) == 150
        await gw.sandbox.wait_until(lambda s: len(s.messages(limit=200)) >= 150, timeout=40)
        times = sorted(m.received_at for m in gw.sandbox.messages(limit=200))
        window = [t for t in times if t < times[0] + timedelta(seconds=5)]
        # 1 at once (burst) then 20 per second: 101 in the first five seconds, never more
        # (10% for arrival jitter), and the 149 after the first take at least 7.45 s.
        assert len(window) <= 111, len(window)
        assert times[-1] - times[0] >= timedelta(seconds=149 / 20 * 0.95), times[-1] - times[0]
        # A starved machine wakes the limiter late and sends fewer (a CI run got 68 of
        # 101), so the lower bound here only catches a dispatcher sending far below the
        # rate; that it spends exactly the rate is checked on the limiter's own clock
        # (tests/dispatch/test_worker_pipeline.py::test_rate_limit_paces_requests).
        assert len(window) >= 51, len(window)
