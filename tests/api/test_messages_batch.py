"""`POST /v1/messages/batch`: each item judged alone, answered by index, stored as asked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import running_gateway
from smsrelay.store.messages import MESSAGE_ID_PATTERN, get_message

LONG_GSM = "[" + "x" * 159 + "]"  # 161 septets + 2 escapes: two parts

ITEMS: list[Any] = [
    {"to": "+4915112345678", "body": "Your code is 123456."},
    {"to": "not a number", "body": "x"},
    {"to": "+4915112345678"},
    {"to": "+4915112345678", "body": "x", "colour": "red"},
    {"to": "+4915112345678", "body": "y" * 4097},
    {"to": "+1", "body": "x"},
    {"to": "+4915112345679", "body": "Grüße 👋"},
    {
        "to": "+4915112345680",
        "body": "Hi {{name}}",
        "template_id": "tpl-1",
        "template_variables": ["a", "b"],
        "params": {"name": "Ada"},
        "campaign_id": "spring",
        "entity_id": "ent-9",
        "webhook_id": "wh-1",
        "send_at": "2999-01-01T09:00:00Z",
    },
    {"to": "+4915112345681", "body": "x", "send_at": "2999-01-01T09:00:00"},
    {"to": "+4915112345682", "body": "x", "type": "bulk"},
    {"to": "12", "body": "x", "sender": "nope"},
    {"to": 4915112345683, "body": "x"},
    {"to": "0049 151 1234 5684", "body": "x"},
    {"to": "+4915112345685", "body": LONG_GSM},
    {"to": "+4915112345686", "body": "x", "params": {"a": 1}},
    {"to": "+4915112345687", "body": "past", "send_at": "2001-01-01T00:00:00+02:00"},
]

NOT_A_NUMBER = "is not a phone number: use digits, optionally with +, spaces, - or ()"
NO_COUNTRY_CODE = (
    "missing country code: write +<country code><number> (e.g. +4915112345678) "
    "or set a default region"
)
REJECTED = [
    {"index": 1, "errors": [{"path": "to", "message": NOT_A_NUMBER}]},
    {"index": 2, "errors": [{"path": "", "message": "give body or template_id"}]},
    {"index": 3, "errors": [{"path": "colour", "message": "Extra inputs are not permitted"}]},
    {
        "index": 4,
        "errors": [{"path": "body", "message": "String should have at most 4096 characters"}],
    },
    {"index": 5, "errors": [{"path": "to", "message": NOT_A_NUMBER}]},
    {
        "index": 8,
        "errors": [{"path": "send_at", "message": "needs a time zone, e.g. 2026-12-01T09:00:00Z"}],
    },
    {
        "index": 9,
        "errors": [{"path": "type", "message": "Input should be 'transactional' or 'promotional'"}],
    },
    {
        "index": 10,
        "errors": [
            {"path": "to", "message": NO_COUNTRY_CODE},
            {"path": "sender", "message": "no sender named 'nope'"},
        ],
    },
    {"index": 11, "errors": [{"path": "to", "message": "Input should be a valid string"}]},
    {"index": 14, "errors": [{"path": "params.a", "message": "Input should be a valid string"}]},
]


async def test_a_mixed_batch_is_judged_item_by_item_and_stored_as_asked(
    database_url: str, tmp_path: Path
) -> None:
    # No dispatcher: the rows are read as intake stored them, before any claim changes them.
    async with running_gateway(database_url, tmp_path, dispatcher=False) as gw:
        hook = await gw.client.post("/v1/webhooks", json={"url": gw.base_url + "/nowhere"})
        assert hook.status_code == 201, hook.text
        items = [dict(item) if isinstance(item, dict) else item for item in ITEMS]
        items[7]["webhook_id"] = hook.json()["id"]
        items.append({"to": "+4915112345688", "body": "x", "webhook_id": "wh-missing"})
        response = await gw.client.post("/v1/messages/batch", json={"messages": items})
        assert response.status_code == 202, response.text
        answer = response.json()
        unknown_webhook = (
            "no webhook 'wh-missing': create it first (POST /v1/webhooks) or leave webhook_id out"
        )
        assert answer["rejected"] == [
            *REJECTED,
            {"index": 16, "errors": [{"path": "webhook_id", "message": unknown_webhook}]},
        ]
        accepted = answer["accepted"]
        assert [(a["index"], a["segments"]) for a in accepted] == [
            (0, 1),
            (6, 1),
            (7, 1),
            (12, 1),
            (13, 2),
            (15, 1),
        ]
        ids = [a["id"] for a in accepted]
        assert all(MESSAGE_ID_PATTERN.match(i) for i in ids)
        assert ids == sorted(set(ids))
        stored = {a["index"]: await get_message(gw.runtime.database, a["id"]) for a in accepted}

        plain = stored[0]
        assert plain is not None
        assert (plain.to, plain.body, plain.encoding, plain.segments) == (
            "+4915112345678",
            "Your code is 123456.",
            "gsm7",
            1,
        )
        assert plain.connector_name == "sandbox" and plain.sender_name is not None
        assert (plain.template_id, plain.template_variables, dict(plain.params)) == (None, (), {})
        assert plain.send_at is None and plain.created_at == plain.updated_at

        unicode = stored[6]
        assert unicode is not None and (unicode.encoding, unicode.segments) == ("ucs2", 1)

        full = stored[7]
        assert full is not None
        assert full.status.value == "queued"
        assert (full.template_id, full.template_variables) == ("tpl-1", ("a", "b"))
        assert dict(full.params) == {"name": "Ada"}
        assert (full.campaign_id, full.entity_id) == ("spring", "ent-9")
        assert full.webhook_id == hook.json()["id"]
        assert full.send_at == full.next_attempt_at == datetime(2999, 1, 1, 9, tzinfo=UTC)

        national = stored[12]
        assert national is not None and national.to == "+4915112345684"
        long_text = stored[13]
        assert long_text is not None and (long_text.encoding, long_text.segments) == ("gsm7", 2)
        past = stored[15]
        assert past is not None and past.send_at is None


async def test_the_batch_envelope_is_validated_as_a_whole(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        not_an_object = await gw.client.post(
            "/v1/messages/batch", json={"messages": [{"to": "+4915112345678", "body": "x"}, 7]}
        )
        assert not_an_object.status_code == 422
        assert not_an_object.json()["errors"] == [
            {"path": "body.messages[1]", "message": "Input should be a valid dictionary"}
        ]
        empty = await gw.client.post("/v1/messages/batch", json={"messages": []})
        assert empty.status_code == 422
        assert [e["path"] for e in empty.json()["errors"]] == ["body.messages"]
        listed = (await gw.client.get("/v1/messages")).json()["data"]
        assert listed == []


async def test_a_batch_of_only_rejections_queues_nothing(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        response = await gw.client.post(
            "/v1/messages/batch", json={"messages": [{"to": "nope", "body": "x"}]}
        )
        assert response.status_code == 202, response.text
        assert response.json() == {
            "accepted": [],
            "rejected": [{"index": 0, "errors": [{"path": "to", "message": NOT_A_NUMBER}]}],
        }
        assert (await gw.client.get("/v1/messages")).json()["data"] == []


async def test_a_repeated_idempotency_key_replays_the_batch_answer(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        batch = {
            "messages": [
                {"to": f"+49151123456{n:02d}", "body": f"n{n}", "send_at": "2999-01-01T00:00:00Z"}
                for n in range(30)
            ]
        }
        headers = {"Idempotency-Key": "batch-7"}
        first = await gw.client.post("/v1/messages/batch", json=batch, headers=headers)
        again = await gw.client.post("/v1/messages/batch", json=batch, headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.headers["Idempotent-Replay"] == "true"
        assert first.json() == again.json() and len(first.json()["accepted"]) == 30
        listed = (await gw.client.get("/v1/messages", params={"limit": 100})).json()["data"]
        assert len(listed) == 30
