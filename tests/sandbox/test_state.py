"""The state API: messages newest first with their raw request, phones, deletion, bounds."""

from __future__ import annotations

import aiohttp

from smsrelay.sandbox.testing import RunningSandbox, running_sandbox

from .conftest import FAST


async def send(client: aiohttp.ClientSession, base_url: str, to: str, body: str) -> str:
    doc = {"to": to, "from": "TXTSMS", "body": body}
    async with client.post(
        f"{base_url}/api/messages", json=doc, headers={"X-Trace": "t-1"}
    ) as answer:
        assert answer.status == 200
        provider_id: str = (await answer.json())["id"]
        return provider_id


async def test_messages_are_listed_newest_first_with_the_raw_request(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    first = await send(client, sbx.base_url, "+15005550006", "first")
    second = await send(client, sbx.base_url, "+15005550007", "second")
    async with client.get(f"{sbx.base_url}/api/messages") as answer:
        doc = await answer.json()
    assert [m["id"] for m in doc["messages"]] == [second, first]
    assert doc["total"] == 2
    request = doc["messages"][1]["request"]
    assert (request["method"], request["path"]) == ("POST", "/api/messages")
    assert request["headers"]["x-trace"] == "t-1"
    assert '"body": "first"' in request["body"]


async def test_messages_can_be_filtered_by_number_and_limited(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    for body in ("a", "b", "c"):
        await send(client, sbx.base_url, "+15005550006", body)
    await send(client, sbx.base_url, "+15005550007", "other")
    params = {"to": "+15005550006", "limit": "2"}
    async with client.get(f"{sbx.base_url}/api/messages", params=params) as answer:
        doc = await answer.json()
    assert [m["body"] for m in doc["messages"]] == ["c", "b"]
    # An unencoded "+" arrives as a space; the number is still found.
    async with client.get(f"{sbx.base_url}/api/messages?to=+15005550007") as answer:
        assert [m["body"] for m in (await answer.json())["messages"]] == ["other"]


async def test_one_message_by_id_and_404_for_an_unknown_one(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    provider_id = await send(client, sbx.base_url, "+15005550006", "hello")
    async with client.get(f"{sbx.base_url}/api/messages/{provider_id}") as answer:
        doc = await answer.json()
    assert (doc["id"], doc["body"], doc["from"], doc["encoding"]) == (
        provider_id,
        "hello",
        "TXTSMS",
        "gsm7",
    )
    assert doc["history"][0]["status"] == "accepted"
    async with client.get(f"{sbx.base_url}/api/messages/nope") as answer:
        assert answer.status == 404


async def test_phones_are_counted(sbx: RunningSandbox, client: aiohttp.ClientSession) -> None:
    await send(client, sbx.base_url, "+15005550006", "a")
    await send(client, sbx.base_url, "+15005550006", "b")
    await send(client, sbx.base_url, "+15005550007", "c")
    async with client.get(f"{sbx.base_url}/api/phones") as answer:
        phones = (await answer.json())["phones"]
    assert [(p["number"], p["messages"]) for p in phones] == [
        ("+15005550007", 1),
        ("+15005550006", 2),
    ]


async def test_delete_forgets_every_message(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    await send(client, sbx.base_url, "+15005550006", "a")
    async with client.delete(f"{sbx.base_url}/api/messages") as answer:
        assert (await answer.json()) == {"deleted": 1}
    async with client.get(f"{sbx.base_url}/api/messages") as answer:
        assert (await answer.json())["messages"] == []
    async with client.get(f"{sbx.base_url}/api/phones") as answer:
        assert (await answer.json())["phones"] == []


async def test_only_the_newest_messages_are_kept(client: aiohttp.ClientSession) -> None:
    async with running_sandbox(FAST.model_copy(update={"max_messages": 3})) as sbx:
        for i in range(5):
            await send(client, sbx.base_url, f"+1500555000{5 + i % 2}", f"m{i}")
        async with client.get(f"{sbx.base_url}/api/messages") as answer:
            doc = await answer.json()
        async with client.get(f"{sbx.base_url}/api/phones") as answer:
            phones = (await answer.json())["phones"]
    assert [m["body"] for m in doc["messages"]] == ["m4", "m3", "m2"]
    assert doc["total"] == 3
    assert sorted((p["number"], p["messages"]) for p in phones) == [
        ("+15005550005", 2),
        ("+15005550006", 1),
    ]


async def test_refused_requests_are_kept_with_their_answer(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    for to in ("+15005550400", "+15005550500"):
        async with client.post(f"{sbx.base_url}/api/messages", json={"to": to, "body": "x"}):
            pass
    rejected, failed = reversed(sbx.sandbox.messages())
    assert (rejected.status, rejected.http_status, rejected.reason) == (
        "rejected",
        400,
        "invalid destination",
    )
    assert (failed.status, failed.http_status) == ("error", 500)


async def test_the_outcome_table_is_served(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{sbx.base_url}/api/outcomes") as answer:
        outcomes = (await answer.json())["outcomes"]
    endings = [o["ending"] for o in outcomes]
    assert {"0001", "0002", "0003", "0009", "0400", "0500", "0429", "0408", "0777"} <= set(endings)
    assert endings[-1] is None  # "anything else" comes last
