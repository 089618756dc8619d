"""DLR intake served in front of FastAPI (`api.dlr_intake`): answers, rows and group commit.

The end-to-end behaviour (mapping, verification, caps) is in test_delivery_intake.py; these
tests pin what the ASGI endpoint itself promises: 200 only once the row is committed, 503
with Retry-After when it could not be, the same problems as the routed API elsewhere, and
concurrent callbacks sharing transactions.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gateway import Gateway, running_gateway
from smsrelay.api.dlr_intake import DeliveryReportIntake, dlr_token
from smsrelay.store.delivery_reports import count_callbacks


async def sandbox_callback(gw: Gateway) -> str:
    response = await gw.client.get("/v1/connectors/sandbox")
    assert response.status_code == 200, response.text
    return str(response.json()["callback_url"])


async def stored_callbacks(gw: Gateway) -> list[dict[str, Any]]:
    """The sandbox connector's stored callbacks, as the mapping assistant lists them."""
    response = await gw.client.get("/v1/connectors/sandbox/delivery-reports")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def intake_of(gw: Gateway) -> DeliveryReportIntake:
    intake = gw.runtime.extras["delivery_report_intake"]
    assert isinstance(intake, DeliveryReportIntake)
    return intake


@pytest.mark.parametrize(
    ("path", "root_path", "token"),
    [
        ("/dlr/abc", "", "abc"),
        ("/gateway/dlr/abc", "/gateway", "abc"),
        ("/dlr/", "", None),
        ("/dlr/a/b", "", None),
        ("/dlrx/abc", "", None),
        ("/v1/messages", "", None),
    ],
)
def test_dlr_token_is_read_from_the_path_under_the_root_path(
    path: str, root_path: str, token: str | None
) -> None:
    assert dlr_token({"type": "http", "path": path, "root_path": root_path}) == token


async def test_a_callback_is_stored_verbatim_with_credentials_masked(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        url = await sandbox_callback(gw)
        answer = await gw.client.post(
            url + "?batch=7",
            content=b'{"id": "m1", "status": "delivered"}',
            headers={
                "Content-Type": "application/json",
                "Authorization": "Bearer provider-secret",
                "X-Request-Signature": "abc",
                "X-Provider": "acme",
            },
        )

        assert answer.status_code == 200
        assert answer.json() == {"status": "received"}
        assert answer.headers["content-type"] == "application/json"
        (stored,) = await stored_callbacks(gw)
        assert stored["url"] == url + "?batch=7"
        assert stored["method"] == "POST"
        assert stored["body"] == '{"id": "m1", "status": "delivered"}'
        assert stored["content_type"] == "application/json"
        assert stored["headers"]["x-provider"] == "acme"
        assert "provider-secret" not in str(stored["headers"])
        assert stored["headers"]["x-request-signature"] != "abc"


async def test_concurrent_callbacks_share_transactions_and_none_is_lost(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        url = await sandbox_callback(gw)
        answers = await asyncio.gather(
            *(gw.client.post(url, json={"id": f"m{n}", "status": "delivered"}) for n in range(60))
        )

        assert [a.status_code for a in answers] == [200] * 60
        assert await count_callbacks(gw.runtime.database) == 60
        writer = intake_of(gw).writer
        assert writer.stored == 60
        assert writer.flushes < 60


async def test_a_callback_that_cannot_be_stored_is_503_and_stored_when_sent_again(
    tmp_path: Path,
) -> None:
    # SQLite only: the table is renamed away underneath the running server.
    async with running_gateway(f"sqlite:///{tmp_path / 'intake.db'}", tmp_path) as gw:
        url = await sandbox_callback(gw)
        report = {"id": "m1", "status": "delivered"}
        assert (await gw.client.post(url, json=report)).status_code == 200
        async with gw.runtime.database.transaction() as conn:
            await conn.execute(text("ALTER TABLE delivery_reports RENAME TO dr_away"))

        refused = await gw.client.post(url, json=report)

        async with gw.runtime.database.transaction() as conn:
            await conn.execute(text("ALTER TABLE dr_away RENAME TO delivery_reports"))
        retried = await gw.client.post(url, json=report)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/problem+json"
        assert "send it again" in refused.json()["detail"]
        assert retried.status_code == 200
        assert await count_callbacks(gw.runtime.database) == 2


async def test_other_methods_and_paths_are_answered_by_the_api_as_before(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        url = await sandbox_callback(gw)

        put = await gw.client.put(url, json={})
        nested = await gw.client.post(url + "/more", json={})
        unknown = await gw.client.post("/dlr/not-a-token", json={})

        assert put.status_code == 405
        assert nested.status_code == 404
        assert unknown.status_code == 404
        assert unknown.json()["instance"] == "/dlr/not-a-token"
        assert await count_callbacks(gw.runtime.database) == 0
