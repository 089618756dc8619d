"""CleverTap's generic SMS provider against a real server, with CleverTap's own payloads.

The payloads are those of CleverTap's "Generic SMS" guide with `$$To`, `$$Body` and
`$$MessageID` (substituted, as CleverTap sends them), unbatched and batched under `msgs`.
Delivery reports come back to a local receiver in CleverTap's callback format, with the
`mid` as `meta` and failures mapped to codes 900-920. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compat.receiver import Receiver, receiving
from gateway import Gateway, running_gateway

SINGLE = "/api/v1/clevertap/messages"
BATCH = "/api/v1/clevertap/messages/batch"
MID = "9999999999.1200000000.1654002362.20220531.0.wzrk_default.-1."


async def _clevertap_webhook(gw: Gateway, rx: Receiver) -> str:
    response = await gw.client.post(
        "/v1/webhooks",
        json={
            "url": rx.url,
            "format": "clevertap",
            "events": ["delivered", "undelivered", "failed"],
        },
    )
    assert response.status_code == 201, response.text
    webhook_id: str = response.json()["id"]
    return webhook_id


def _data(posts: list[Any], event: str) -> list[dict[str, Any]]:
    return [
        item
        for post in posts
        for entry in post.json()
        if entry["event"] == event
        for item in entry["data"]
    ]


async def test_clevertap_message_is_sent_and_reported_with_its_mid(
    database_url: str, tmp_path: Path
) -> None:
    async with receiving() as rx, running_gateway(database_url, tmp_path) as gw:
        webhook_id = await _clevertap_webhook(gw, rx)
        payload = {
            "source": "SMSRLY",
            "destination": "+15005550006",  # $$To
            "text": "Hello from CleverTap",  # $$Body
            "mid": MID,  # $$MessageID
            "encoding": "AUTO",
            "webhook_id": webhook_id,
        }
        response = await gw.client.post(SINGLE, json=payload)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["status"] == "success" and answer["mid"] == MID
        posts = await rx.wait_for(1)
        [delivered] = _data(posts, "delivered")
        assert delivered["meta"] == MID
        assert delivered["description"] == "Delivered to handset"
        assert isinstance(delivered["ts"], int) and len(str(delivered["ts"])) == 10
        message = (await gw.client.get(f"/v1/messages/{answer['id']}")).json()
        assert message["params"]["mid"] == MID and message["status"] == "delivered"


async def test_clevertap_batch_maps_ids_to_mids_and_reports_failures_with_codes(
    database_url: str, tmp_path: Path
) -> None:
    async with receiving() as rx, running_gateway(database_url, tmp_path) as gw:
        webhook_id = await _clevertap_webhook(gw, rx)
        payload = {
            "source": "SMSRLY",  # a global pair: applies to every record
            "webhook_id": webhook_id,
            "msgs": [
                {"destination": "15005550006", "text": "ok", "mid": "m-delivered"},
                {"destination": "15005550001", "text": "ok", "mid": "m-absent"},
                {"destination": "15005550009", "text": "ok", "mid": "m-blacklisted"},
                {"destination": "not a number", "text": "ok", "mid": "m-bad"},
            ],
        }
        response = await gw.client.post(BATCH, json=payload)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["status"] == "partial"
        assert [(a["index"], a["mid"]) for a in answer["accepted"]] == [
            (0, "m-delivered"),
            (1, "m-absent"),
            (2, "m-blacklisted"),
        ]
        [rejected] = answer["rejected"]
        assert rejected["mid"] == "m-bad"
        assert rejected["errors"][0]["path"] == "msgs[3].destination"
        posts = await rx.wait_for(1)
        while len(_data(posts, "delivered")) + len(_data(posts, "failed")) < 3:
            posts = await rx.wait_for(len(rx.accepted()) + 1)
        assert [d["meta"] for d in _data(posts, "delivered")] == ["m-delivered"]
        failed = {d["meta"]: (d["code"], d["description"]) for d in _data(posts, "failed")}
        assert failed == {
            "m-absent": ("905", "Failed subscriber error"),
            "m-blacklisted": ("903", "Failed rejected blacklist"),
        }


async def test_clevertap_bad_requests_get_clear_problems(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        response = await gw.client.post(SINGLE, json={"text": "x", "mid": "m"})
        assert response.status_code == 422
        assert response.json()["errors"][0]["path"] == "destination"
        empty = await gw.client.post(BATCH, json={"msgs": []})
        assert empty.status_code == 422
        all_bad = await gw.client.post(BATCH, json={"msgs": [{"destination": "1", "mid": "a"}]})
        assert all_bad.status_code == 422
        assert all_bad.json()["status"] == "fail"
        assert all_bad.json()["rejected"][0]["mid"] == "a"
        assert (await gw.client.get("/v1/messages")).json()["data"] == []


async def test_clevertap_key_value_pairs_are_accepted_too(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        form = {"destination": "15005550006", "text": "kv", "mid": "m-kv"}
        response = await gw.client.post(SINGLE, data=form)
        assert response.status_code == 200, response.text
        message = await gw.wait_for_status(response.json()["id"], {"sent", "delivered"})
        assert message["params"] == {"mid": "m-kv"} and message["to"] == "+15005550006"


async def test_a_repeated_mid_queues_one_message_and_gets_the_first_answer_again(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        payload = {"source": "SMSRLY", "destination": "+15005550006", "text": "Once", "mid": MID}
        first = await gw.client.post(SINGLE, json=payload)
        assert first.status_code == 200, first.text
        # CleverTap retrying after a timeout: the same request, the same answer, nothing new.
        again = await gw.client.post(SINGLE, json=payload)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replay"] == "true"
        # The same mid naming another message is refused, not silently dropped.
        changed = await gw.client.post(SINGLE, json={**payload, "text": "Twice"})
        assert changed.status_code == 409, changed.text
        assert MID in changed.json()["detail"]
        # Messages without a mid are never deduplicated.
        plain = {"source": "SMSRLY", "destination": "+15005550006", "text": "no mid"}
        ids = {(await gw.client.post(SINGLE, json=plain)).json()["id"] for _ in range(2)}
        assert len(ids) == 2
        await gw.wait_for_status(first.json()["id"], "delivered")
        listed = (await gw.client.get("/v1/messages", params={"to": "+15005550006"})).json()
        bodies = sorted(m["body"] for m in listed["data"])
        assert bodies == ["Once", "no mid", "no mid"]


async def test_a_repeated_batch_of_mids_queues_once_and_gets_the_first_answer_again(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        records = [
            {"destination": "+15005550006", "text": "one", "mid": "b-1"},
            {"destination": "not a number", "text": "bad", "mid": "b-2"},
            {"destination": "+15005550006", "text": "three", "mid": "b-3"},
        ]
        payload = {"source": "SMSRLY", "msgs": records}
        first = await gw.client.post(BATCH, json=payload)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "partial"
        again = await gw.client.post(BATCH, json=payload)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replay"] == "true"
        # The same mids carrying other messages are refused, not silently dropped.
        changed = {"source": "SMSRLY", "msgs": [{**records[0], "text": "other"}, *records[1:]]}
        refused = await gw.client.post(BATCH, json=changed)
        assert refused.status_code == 409, refused.text
        # A batch with a record without a mid is never deduplicated.
        plain = {"msgs": [{"destination": "+15005550006", "text": "no mid"}]}
        ids = {
            (await gw.client.post(BATCH, json=plain)).json()["accepted"][0]["id"] for _ in range(2)
        }
        assert len(ids) == 2
        listed = (await gw.client.get("/v1/messages", params={"to": "+15005550006"})).json()
        assert sorted(m["body"] for m in listed["data"]) == ["no mid", "no mid", "one", "three"]
