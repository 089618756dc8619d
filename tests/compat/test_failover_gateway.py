"""Connector groups end to end: a sender on a group fails over to the next connector.

Each test runs on SQLite and PostgreSQL against a real server with the sandbox provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway import Gateway, running_gateway
from smsrelay.sandbox import sandbox_connector_yaml


def sandbox_copy(gw: Gateway, name: str, *, max_attempts: int = 4) -> dict[str, Any]:
    """The shipped sandbox connector under another name, with quick retries."""
    document: dict[str, Any] = yaml.safe_load(sandbox_connector_yaml(gw.base_url + "/sandbox"))
    document["name"] = name
    document["retry"] = {"max_attempts": max_attempts, "initial_seconds": 0.05, "max_seconds": 1}
    return document


async def _group_with_sender(gw: Gateway) -> None:
    """Connectors `primary` (2 attempts) and `backup`, group `ha`, sender `ha` on it."""
    for document in (sandbox_copy(gw, "primary", max_attempts=2), sandbox_copy(gw, "backup")):
        response = await gw.client.put(f"/v1/connectors/{document['name']}", json=document)
        assert response.status_code == 200, response.text
    response = await gw.client.post(
        "/v1/connector-groups", json={"name": "ha", "connectors": ["primary", "backup"]}
    )
    assert response.status_code == 201, response.text
    response = await gw.client.post(
        "/v1/senders", json={"name": "ha", "connector": "ha", "sender_id": "TESTER"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["connector"] == "ha"


def _failovers(message: dict[str, Any]) -> list[str]:
    return [
        e["detail"]["reason"]
        for e in message["history"]
        if e["kind"] == "status" and (e["detail"] or {}).get("failover")
    ]


async def test_retries_exhausted_on_the_first_connector_fail_over_to_the_second(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        await _group_with_sender(gw)
        response = await gw.client.post(
            "/v1/messages", json={"to": "+15005550500", "body": "hi", "sender": "ha"}
        )
        assert response.status_code == 202, response.text
        assert response.json()["connector"] == "primary"
        message = await gw.wait_for_status(response.json()["id"], "delivered")
        assert message["connector"] == "backup"
        [failover] = _failovers(message)
        assert failover.startswith("failover from primary to backup: retries_exhausted")
        outcomes = [
            (e["detail"]["outcome"], e["detail"]["attempt"])
            for e in message["history"]
            if e["kind"] == "attempt"
        ]
        # Two attempts on `primary`, then attempts start again on `backup`.
        assert outcomes == [("retry", 1), ("failed", 2), ("sent", 1)]
        assert message["attempts"] == 1
        statuses = [e["status"] for e in message["history"] if e["kind"] == "status"]
        assert statuses[-1] == "delivered" and "failed" not in statuses


async def test_the_message_fails_only_when_the_last_connector_fails(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        await _group_with_sender(gw)
        response = await gw.client.post(
            "/v1/messages", json={"to": "+15005550400", "body": "hi", "sender": "ha"}
        )
        message = await gw.wait_for_status(response.json()["id"], "failed")
        assert message["connector"] == "backup"
        [failover] = _failovers(message)
        assert failover.startswith("failover from primary to backup: ")
        assert "invalid destination" in message["failure_reason"]
        # Each connector was asked once and refused it.
        assert len(gw.sandbox.messages(to="+15005550400")) == 2


async def test_connector_groups_are_managed_over_the_api(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        await _group_with_sender(gw)
        shown = (await gw.client.get("/v1/connector-groups/ha")).json()
        assert shown["connectors"] == ["primary", "backup"] and shown["senders"] == ["ha"]
        listed = (await gw.client.get("/v1/connector-groups")).json()["data"]
        assert [g["name"] for g in listed] == ["ha"]
        # New order: the sender's messages now go to `backup` first.
        reordered = await gw.client.put(
            "/v1/connector-groups/ha", json={"connectors": ["backup", "primary"]}
        )
        assert reordered.status_code == 200, reordered.text
        sent = await gw.client.post(
            "/v1/messages", json={"to": "+15005550006", "body": "x", "sender": "ha"}
        )
        assert sent.json()["connector"] == "backup"
        duplicate = await gw.client.post(
            "/v1/connector-groups", json={"name": "ha", "connectors": ["primary"]}
        )
        assert duplicate.status_code == 409
        unknown = await gw.client.post(
            "/v1/connector-groups", json={"name": "other", "connectors": ["primary", "nope"]}
        )
        assert unknown.status_code == 422
        assert unknown.json()["errors"] == [
            {"path": "connectors[1]", "message": "no connector named 'nope'"}
        ]
        clash = await gw.client.post(
            "/v1/connector-groups", json={"name": "sandbox", "connectors": ["primary"]}
        )
        assert clash.status_code == 409
        in_use = await gw.client.delete("/v1/connector-groups/ha")
        assert in_use.status_code == 409
        moved = await gw.client.patch("/v1/senders/ha", json={"connector": "primary"})
        assert moved.status_code == 200 and moved.json()["connector"] == "primary"
        assert (await gw.client.delete("/v1/connector-groups/ha")).status_code == 204
        assert (await gw.client.get("/v1/connector-groups/ha")).status_code == 404
