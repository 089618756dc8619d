"""Inbound protection on a real server: rate limit per API key, body caps, strict JSON, DLR checks.

The body cap and the strict-JSON rules are checked on every operation the OpenAPI document
lists (and on the DLR intake, the dashboard and the sandbox), so an endpoint added later is
covered without a new test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import Gateway, running_gateway
from smsrelay.store.api_keys import create_api_key

PROBLEM = "application/problem+json"
BODY_CAP = 4096
BATCH_CAP = 16384


def operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path with parameters filled in, operation) for every documented operation."""
    found = []
    for path, methods in openapi["paths"].items():
        concrete = path
        for name in [p.strip("{}") for p in path.split("/") if p.startswith("{")]:
            concrete = concrete.replace("{" + name + "}", "x")
        for method, operation in methods.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), concrete, operation))
    return found


def json_only(operation: dict[str, Any]) -> bool:
    content = operation.get("requestBody", {}).get("content", {})
    return list(content) == ["application/json"]


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.text[:500])
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["detail"]
    return problem


@pytest.fixture
async def gateway(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(
        sqlite_url,
        tmp_path,
        api_max_body_bytes=BODY_CAP,
        api_max_batch_body_bytes=BATCH_CAP,
        dlr_max_bytes=BODY_CAP,
        api_rate_limit_per_second=1000.0,
    ) as gw:
        yield gw


# ---------------------------------------------------------------- rate limit


async def test_each_api_key_has_its_own_bucket_and_429_says_when_to_retry(
    sqlite_url: str, tmp_path: Path
) -> None:
    # One token per 4 s: the six requests below (~50 ms each when idle) must come within
    # one token's time. At 1/s a fresh-clone CI run under load once took longer and got
    # its sixth answer from a refilled token.
    async with running_gateway(
        sqlite_url, tmp_path, api_rate_limit_per_second=0.25, api_rate_limit_burst=5
    ) as gw:
        answers = [(await gw.client.get("/v1/senders")).status_code for _ in range(5)]
        assert answers == [200] * 5
        limited = await gw.client.get("/v1/senders")
        problem = assert_problem(limited, 429)
        assert int(limited.headers["Retry-After"]) >= 1
        assert 0 < problem["retry_after_seconds"] <= 4.0
        assert "SMSRELAY_API_RATE_LIMIT_PER_SECOND" in problem["detail"]
        # Another key is not held up by the first one's burst.
        _, other = await create_api_key(gw.runtime.database, "other")
        headers = {"Authorization": f"Bearer {other}"}
        assert (await gw.client.get("/v1/senders", headers=headers)).status_code == 200
        # Tokens come back at the configured rate.
        await asyncio.sleep(problem["retry_after_seconds"] + 0.05)
        assert (await gw.client.get("/v1/senders")).status_code == 200
        # Unknown keys are refused, and leave no bucket behind to be limited by.
        wrong = {"Authorization": "Bearer not-a-key"}
        refused = [
            (await gw.client.get("/v1/senders", headers=wrong)).status_code for _ in range(8)
        ]
        assert refused == [401] * 8


# ---------------------------------------------------------------- body size caps


async def test_every_endpoint_refuses_a_body_over_the_cap_with_413(gateway: Gateway) -> None:
    openapi = (await gateway.client.get("/openapi.json")).json()
    oversize = json.dumps({"padding": "x" * BATCH_CAP}).encode()
    checked = 0
    for method, path, _ in operations(openapi):
        if path.startswith("/dlr/"):
            continue  # its own cap, after the token: test_dlr_intake_caps_its_body_too
        response = await gateway.client.request(
            method, path, content=oversize, headers={"Content-Type": "application/json"}
        )
        problem = assert_problem(response, 413)
        assert "bytes" in problem["detail"]
        checked += 1
    assert checked >= 30, "every documented operation"
    for path in ("/ui/login", "/sandbox/api/messages"):
        response = await gateway.client.post(path, content=oversize)
        assert response.status_code == 413, (path, response.text[:300])


async def test_a_chunked_body_is_cut_off_at_the_cap(gateway: Gateway) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"to": "+15005550006", "body": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    response = await gateway.client.post(
        "/v1/messages", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


async def test_batch_endpoints_take_the_larger_cap(gateway: Gateway) -> None:
    messages = [{"to": "+15005550006", "body": f"m{n} " + "y" * 60} for n in range(100)]
    body = json.dumps({"messages": messages}).encode()
    assert BODY_CAP < len(body) < BATCH_CAP
    response = await gateway.client.post(
        "/v1/messages/batch", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text[:500]
    assert len(response.json()["accepted"]) == 100
    single = await gateway.client.post(
        "/v1/messages", content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(single, 413)


async def test_dlr_intake_caps_its_body_too(gateway: Gateway) -> None:
    view = (await gateway.client.get("/v1/connectors/sandbox")).json()
    path = httpx.URL(view["callback_url"]).path
    response = await gateway.client.post(path, content=b"x" * (BODY_CAP + 1))
    problem = assert_problem(response, 413)
    assert "SMSRELAY_DLR_MAX_BYTES" in problem["detail"]


# ---------------------------------------------------------------- strict JSON


async def test_json_endpoints_refuse_other_content_types_with_415(gateway: Gateway) -> None:
    openapi = (await gateway.client.get("/openapi.json")).json()
    checked = 0
    for method, path, operation in operations(openapi):
        if not json_only(operation):
            continue
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            response = await gateway.client.request(
                method, path, content=b'{"to": "+15005550006"}', headers=headers
            )
            problem = assert_problem(response, 415)
            assert "application/json" in problem["detail"]
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"to": "+15005550006",\n "body": "hi",}', ["line 2 column 15", "character 37"]),
        (b'{"to": "+15005550006", "body": NaN}', ["NaN is not a JSON number"]),
        (b'{"to": 1, "body": -Infinity}', ["-Infinity is not a JSON number"]),
        (b'{"to": "+15005550006", "to": "+15005550007"}', ["'to' appears twice"]),
        (b'{"to": "\xff"}', ["not valid UTF-8", "byte 8"]),
        (b"[" * 3000, ["nested too deeply"]),
    ],
)
async def test_json_that_is_not_strict_json_is_422_saying_where(
    gateway: Gateway, body: bytes, words: list[str]
) -> None:
    openapi = (await gateway.client.get("/openapi.json")).json()
    targets = [(m, p) for m, p, op in operations(openapi) if json_only(op)]
    assert ("POST", "/v1/messages") in targets
    for method, path in targets:
        response = await gateway.client.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
        problem = assert_problem(response, 422)
        assert problem["errors"][0]["path"] == "body"
        for word in words:
            assert word in problem["detail"], (path, problem)


async def test_routes_taking_json_or_forms_refuse_bad_json_too(gateway: Gateway) -> None:
    openapi = (await gateway.client.get("/openapi.json")).json()
    targets = [
        (method, path)
        for method, path, operation in operations(openapi)
        if "application/json" in operation.get("requestBody", {}).get("content", {})
        and not json_only(operation)
    ]
    assert ("POST", "/api/v2/sms/moengage/send") in targets
    for method, path in targets:
        for headers in ({"Content-Type": "application/json"}, {}):
            response = await gateway.client.request(
                method, path, content=b"[" * 3000, headers=headers
            )
            problem = assert_problem(response, 422)
            assert "nested too deeply" in problem["detail"], (path, problem)


async def test_strict_json_still_accepts_json_with_a_charset_and_vendor_types(
    gateway: Gateway,
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await gateway.client.post(
            "/v1/messages",
            content=b'{"to": "+15005550006", "body": "hi \\u00e9"}',
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 202, response.text


# ---------------------------------------------------------------- DLR verification


def verifying_connector(name: str, verify: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "request": {
            "url": "http://127.0.0.1:9/send",
            "body": {"json": {"to": "{{to}}", "t": "{{body}}"}},
        },
        "response": {"message_id": "$.id"},
        "delivery": {"message_id": "$.id", "status": "$.status", "verify": verify},
        "secrets": {
            "dlr_password": "dlr-pass-1",
            "dlr_token": "hdr-tok-2",
            "dlr_key": "hmac-key-3",
        },
    }


async def test_each_dlr_verification_refuses_a_wrong_callback_with_401(
    gateway: Gateway,
) -> None:
    body = b'{"id": "p-1", "status": "delivered"}'
    good_mac = hmac.new(b"hmac-key-3", body, hashlib.sha256).hexdigest()
    cases = {
        "v-basic": (
            {"type": "basic", "username": "provider", "password": "{{secret.dlr_password}}"},
            {"Authorization": "Basic " + base64.b64encode(b"provider:dlr-pass-1").decode()},
            {"Authorization": "Basic " + base64.b64encode(b"provider:guess").decode()},
        ),
        "v-header": (
            {"type": "header", "name": "X-Dlr-Token", "value": "{{secret.dlr_token}}"},
            {"X-Dlr-Token": "hdr-tok-2"},
            {"X-Dlr-Token": "hdr-tok-3"},
        ),
        "v-hmac": (
            {"type": "hmac", "header": "X-Signature", "secret": "{{secret.dlr_key}}"},
            {"X-Signature": good_mac},
            {"X-Signature": hmac.new(b"other", body, hashlib.sha256).hexdigest()},
        ),
    }
    for name, (verify, good, bad) in cases.items():
        saved = await gateway.client.put(
            f"/v1/connectors/{name}", json=verifying_connector(name, verify)
        )
        assert saved.status_code == 200, saved.text
        path = httpx.URL(saved.json()["callback_url"]).path
        headers = {"Content-Type": "application/json"}
        refused = await gateway.client.post(path, content=body, headers={**headers, **bad})
        problem = assert_problem(refused, 401)
        assert "verification" in problem["detail"]
        missing = await gateway.client.post(path, content=body, headers=headers)
        assert_problem(missing, 401)
        accepted = await gateway.client.post(path, content=body, headers={**headers, **good})
        assert accepted.status_code == 200, (name, accepted.text)
        stored = await gateway.client.get(f"/v1/connectors/{name}/delivery-reports")
        assert len(stored.json()["data"]) == 1, "only the verified callback is stored"
