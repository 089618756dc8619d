"""Connectors and senders through the API: list, show, change, delete, and what is refused.

A real server with the sandbox; each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway import Gateway, running_gateway
from smsrelay.sandbox import sandbox_connector_yaml


def sandbox_copy(gw: Gateway, name: str) -> dict[str, Any]:
    """The shipped sandbox connector under another name, pointed at this server's sandbox."""
    document: dict[str, Any] = yaml.safe_load(sandbox_connector_yaml(gw.base_url + "/sandbox"))
    document["name"] = name
    return document


async def problem(gw: Gateway, method: str, path: str, status: int, **body: object) -> str:
    response = await gw.client.request(method, path, json=body or None)
    assert response.status_code == status, response.text
    detail: str = response.json()["detail"]
    return detail


async def test_a_connector_is_listed_shown_and_deleted_once_nothing_uses_it(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path, dispatcher=False) as gw:
        document = sandbox_copy(gw, "spare")
        assert (await gw.client.post("/v1/connectors", json=document)).status_code == 201
        listed = (await gw.client.get("/v1/connectors")).json()["data"]
        assert {c["name"] for c in listed} >= {"sandbox", "spare"}
        spare = next(c for c in listed if c["name"] == "spare")
        assert spare["definition"]["secrets"] == {"base_url": "***"}
        assert spare["callback_url"].startswith(gw.base_url + "/dlr/")

        # Used by a sender, then by a queued message: refused, saying why.
        sender = {"name": "spare-sender", "connector": "spare", "sender_id": "SPARE"}
        assert (await gw.client.post("/v1/senders", json=sender)).status_code == 201
        assert "sender" in await problem(gw, "DELETE", "/v1/connectors/spare", 409)
        queued = await gw.client.post(
            "/v1/messages", json={"to": "+15005550006", "body": "x", "sender": "spare-sender"}
        )
        assert queued.status_code == 202, queued.text
        assert (await gw.client.delete("/v1/senders/spare-sender")).status_code == 204
        assert "queued" in await problem(gw, "DELETE", "/v1/connectors/spare", 409)
        cancel = await gw.client.post(f"/v1/messages/{queued.json()['id']}/cancel")
        assert cancel.status_code == 200, cancel.text

        assert (await gw.client.delete("/v1/connectors/spare")).status_code == 204
        assert (await gw.client.get("/v1/connectors/spare")).status_code == 404
        assert "spare" in await problem(gw, "DELETE", "/v1/connectors/spare", 404)
        # The message sent through it keeps its history.
        shown = await gw.client.get(f"/v1/messages/{queued.json()['id']}")
        assert shown.status_code == 200 and shown.json()["status"] == "canceled"


async def test_a_sender_is_shown_changed_and_deleted(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path, dispatcher=False) as gw:
        body = {"name": "otp", "connector": "sandbox", "sender_id": "OTPCO"}
        assert (await gw.client.post("/v1/senders", json=body)).status_code == 201
        shown = (await gw.client.get("/v1/senders/otp")).json()
        assert (shown["name"], shown["connector"], shown["sender_id"]) == (
            "otp",
            "sandbox",
            "OTPCO",
        )
        changed = await gw.client.patch("/v1/senders/otp", json={"sender_id": "OTPNEW"})
        assert changed.status_code == 200 and changed.json()["sender_id"] == "OTPNEW"
        assert "otp" in await problem(
            gw, "POST", "/v1/senders", 409, name="otp", connector="sandbox", sender_id="X"
        )
        assert (await gw.client.delete("/v1/senders/otp")).status_code == 204
        assert (await gw.client.get("/v1/senders/otp")).status_code == 404
        assert (await gw.client.delete("/v1/senders/otp")).status_code == 404
        assert (await gw.client.patch("/v1/senders/otp", json={"sender_id": "Y"})).status_code == (
            404
        )
