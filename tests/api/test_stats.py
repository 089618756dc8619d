"""`GET /v1/stats` and `smsrelay stats` over messages really sent through the sandbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from api.test_webhooks import send
from gateway import Gateway, running_gateway
from smsrelay.cli import app as cli_app
from smsrelay.cli import stats_table
from smsrelay.sandbox import sandbox_connector_yaml


async def second_connector(gw: Gateway, name: str, sender: str) -> None:
    """Another connector on the same sandbox, with a sender of its own."""
    document: dict[str, Any] = yaml.safe_load(sandbox_connector_yaml(gw.base_url + "/sandbox"))
    document["name"] = name
    response = await gw.client.put(f"/v1/connectors/{name}", json=document)
    assert response.status_code == 200, response.text
    response = await gw.client.post(
        "/v1/senders", json={"name": sender, "connector": name, "sender_id": "ALERTS"}
    )
    assert response.status_code == 201, response.text


async def stats(gw: Gateway, **query: str) -> dict[str, Any]:
    response = await gw.client.get("/v1/stats", params=query)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def figures(group: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return (
        group["total"],
        group["sent"],
        group["delivered"],
        group["undelivered"],
        group["failed"],
    )


def by_key(answer: dict[str, Any]) -> dict[str | None, tuple[int, int, int, int, int]]:
    return {g["key"]: figures(g) for g in answer["groups"]}


async def test_stats_match_the_messages_sent_by_connector_sender_campaign_and_day(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        await second_connector(gw, "backup", "alerts")
        sent = [
            (await send(gw, "+15005550006", campaign_id="spring"), "delivered"),
            (await send(gw, "+15005550001", campaign_id="spring"), "undelivered"),
            (await send(gw, "+15005550400", campaign_id="summer"), "failed"),
            (await send(gw, "+15005551006", sender="alerts"), "delivered"),
            (await send(gw, "+15005560400", sender="alerts"), "failed"),
        ]
        finals = [await gw.wait_for_status(m, status) for m, status in sent]

        answer = await stats(gw)
        totals = answer["totals"]
        assert figures(totals) == (5, 3, 2, 1, 2)
        assert totals["attempted"] == 5 and totals["queued"] == 0
        assert totals["delivery_rate"] == round(2 / 3, 4)
        assert (
            "delivered / (delivered + undelivered + unconfirmed)"
            in (answer["definitions"]["delivery_rate"])
        )
        reasons = {r["reason"]: r["count"] for r in totals["top_failure_reasons"]}
        assert reasons["absent_subscriber"] == 1
        assert sum(reasons.values()) == 3
        assert "groups" not in answer

        assert by_key(await stats(gw, group_by="connector")) == {
            "sandbox": (3, 2, 1, 1, 1),
            "backup": (2, 1, 1, 0, 1),
        }
        assert by_key(await stats(gw, group_by="sender")) == {
            "sandbox-trans": (3, 2, 1, 1, 1),
            "alerts": (2, 1, 1, 0, 1),
        }
        assert by_key(await stats(gw, group_by="campaign")) == {
            None: (2, 1, 1, 0, 1),
            "spring": (2, 2, 1, 1, 0),
            "summer": (1, 0, 0, 0, 1),
        }
        days = sorted({m["created_at"][:10] for m in finals})
        by_day = await stats(gw, group_by="day")
        assert [g["key"] for g in by_day["groups"]] == days
        assert sum(g["total"] for g in by_day["groups"]) == 5

        assert figures((await stats(gw, connector="backup"))["totals"]) == (2, 1, 1, 0, 1)
        assert (await stats(gw, campaign_id="spring"))["totals"]["delivery_rate"] == 0.5
        assert (await stats(gw, **{"from": "2999-01-01T00:00:00Z"}))["totals"]["total"] == 0
        assert (await stats(gw, to="2000-01-01"))["totals"]["delivery_rate"] is None

        # The command line prints the same figures as a table.
        runner = CliRunner()
        result = await asyncio.to_thread(
            runner.invoke,
            cli_app,
            ["stats", "--group-by", "connector", "--server", gw.base_url, "--api-key", gw.api_key],
        )
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0].split() == [
            "connector",
            "total",
            "sent",
            "delivered",
            "undeliv.",
            "unconf.",
            "failed",
            "queued",
            "rate",
        ]
        assert lines[2].split() == ["sandbox", "3", "2", "1", "1", "0", "1", "0", "50.0%"]
        assert lines[4].split() == ["total", "5", "3", "2", "1", "0", "2", "0", "66.7%"]
        assert "top failure reasons:" in result.output


async def test_bad_stats_queries_are_refused(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        wrong_group = await gw.client.get("/v1/stats", params={"group_by": "weather"})
        assert wrong_group.status_code == 422
        assert wrong_group.json()["errors"][0]["path"] == "query.group_by"
        backwards = await gw.client.get(
            "/v1/stats", params={"from": "2024-06-02", "to": "2024-06-01"}
        )
        assert backwards.status_code == 422
        assert backwards.json()["errors"][0]["path"] == "query.to"


def test_the_stats_table_shows_a_dash_without_a_rate() -> None:
    empty: dict[str, Any] = {
        "group_by": None,
        "totals": {
            "total": 0,
            "sent": 0,
            "delivered": 0,
            "undelivered": 0,
            "unconfirmed": 0,
            "failed": 0,
            "queued": 0,
            "delivery_rate": None,
            "top_failure_reasons": [],
        },
    }
    assert stats_table(empty).splitlines()[2].split() == ["total"] + ["0"] * 7 + ["-"]
