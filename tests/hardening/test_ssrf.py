"""Outbound requests never reach refused targets: connector sends, OAuth token requests, webhooks.

tests/dispatch/test_transport.py proves the guard on the transport alone. Here the same
target classes go through a real server, end to end, the way a user would configure them:
a connector URL, an OAuth2 `token_url`, a webhook URL. Each refused one must end with a
clear reason naming the address and its class, and the local server standing at that
address must have seen nothing. Refused targets outside 127.0.0.1/::1 (10.0.0.1,
169.254.169.254) are refused before any packet: the guard checks IP literals before it
connects.

Only the name `allowed.test` is allow-listed; a test resolver maps it to 127.0.0.1, so the
"allowed" cases reach the local recorder through an allow-listed name.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from gateway import Gateway, running_gateway
from hardening.servers import Recorder, recording_server
from smsrelay.dispatch.transport import AiohttpTransport

ALLOWED = "allowed.test"
FINAL_OR_HELD = {"sent", "delivered", "failed", "dispatch_error"}


class NameMapResolver(AbstractResolver):
    """Resolves the names in `names` to fixed addresses; every other name as the system does."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.system = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.names.get(host)
        if address is None:
            return await self.system.resolve(host, port, family)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        await self.system.close()


def guarded_transport() -> AiohttpTransport:
    return AiohttpTransport(
        allow_hosts=(ALLOWED,), resolver=NameMapResolver({ALLOWED: "127.0.0.1"})
    )


def refused_targets(port: int) -> dict[str, tuple[str, list[str]]]:
    """Case name -> (base URL, words the refusal must contain)."""
    return {
        "loopback": (f"http://127.0.0.1:{port}", ["127.0.0.1 is a loopback address"]),
        "loopback6": (f"http://[::1]:{port}", ["::1 is a loopback address"]),
        "mapped": (f"http://[::ffff:127.0.0.1]:{port}", ["127.0.0.1", "loopback"]),
        "private": ("http://10.0.0.1:9", ["10.0.0.1 is a private address"]),
        "metadata": ("http://169.254.169.254", ["169.254.169.254 is a cloud metadata address"]),
        "name": (f"http://localhost:{port}", ["localhost -> 127.0.0.1 is a loopback address"]),
        "redirect": (f"http://{ALLOWED}:{port}/bounce", ["127.0.0.1 is a loopback address"]),
    }


async def provider_answers(request: web.Request) -> web.StreamResponse:
    """The recorder as a provider: tokens, sends, webhooks; /bounce/… redirects to loopback."""
    if request.path.startswith("/bounce"):
        port = request.url.port
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{port}/stolen{request.path}")
    if request.path.endswith("/token"):
        return web.json_response({"access_token": "tok-123", "expires_in": 3600})
    return web.json_response({"status": "accepted", "id": f"prov{request.path}"})


def connector(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "request": {
            "url": url,
            "body": {"json": {"to": "{{to}}", "text": "{{body}}", "ref": "{{message_id}}"}},
            "timeout_seconds": 5,
        },
        "response": {"message_id": "$.id"},
        "retry": {"max_attempts": 2, "initial_seconds": 0.05, "max_seconds": 0.1},
        **extra,
    }


async def send_through(gw: Gateway, document: dict[str, Any]) -> str:
    """Save the connector and a sender on it, queue one message; return its id."""
    name = document["name"]
    response = await gw.client.put(f"/v1/connectors/{name}", json=document)
    assert response.status_code == 200, response.text
    response = await gw.client.post(
        "/v1/senders", json={"name": name, "connector": name, "sender_id": "GUARD"}
    )
    assert response.status_code == 201, response.text
    response = await gw.client.post(
        "/v1/messages", json={"to": "+15005550006", "body": "hi", "sender": name}
    )
    assert response.status_code == 202, response.text
    message_id: str = response.json()["id"]
    return message_id


def paths_seen(recorder: Recorder) -> set[str]:
    return {hit.path for hit in recorder.seen}


async def test_connector_sends_to_refused_targets_fail_clearly_and_send_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with (
        recording_server(provider_answers) as recorder,
        running_gateway(sqlite_url, tmp_path, transport=guarded_transport()) as gw,
    ):
        targets = refused_targets(recorder.port)
        sent = {
            case: await send_through(gw, connector(f"to-{case}", f"{base}/send/{case}"))
            for case, (base, _) in targets.items()
        }
        allowed = await send_through(
            gw, connector("to-allowed", f"http://{ALLOWED}:{recorder.port}/send/allowed")
        )
        for case, (_, words) in targets.items():
            message = await gw.wait_for_status(sent[case], FINAL_OR_HELD)
            assert message["status"] == "failed", (case, message)
            reason = message["failure_reason"]
            assert reason.startswith("blocked_address: "), (case, reason)
            assert "SMSRELAY_ALLOW_HOSTS" in reason
            for word in words:
                assert word in reason, (case, reason)
            assert message["attempts"] == 1, "a refused target is not retried"
        message = await gw.wait_for_status(allowed, {"sent", "delivered"})
        assert message["provider_ids"] == ["prov/send/allowed"]
    assert recorder.ipv6, "the recorder listens on ::1 too, so a leak there would show"
    # The redirect's first hop went to the allowed name; nothing reached any refused target.
    assert paths_seen(recorder) == {"/send/allowed", "/bounce/send/redirect"}


async def test_test_send_to_metadata_address_is_rejected_with_the_reason(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with running_gateway(sqlite_url, tmp_path, transport=guarded_transport()) as gw:
        document = connector("meta", "http://169.254.169.254/latest/meta-data/iam")
        assert (await gw.client.put("/v1/connectors/meta", json=document)).status_code == 200
        preview = await gw.client.post(
            "/v1/connectors/meta/preview", json={"to": "+15005550006", "body": "x"}
        )
        assert preview.status_code == 200, "a preview renders; it never sends"
        trace = await gw.client.post(
            "/v1/connectors/meta/test", json={"to": "+15005550006", "body": "x"}
        )
    assert trace.status_code == 200, trace.text
    answer = trace.json()
    assert answer["verdict"] == "rejected"
    assert "169.254.169.254 is a cloud metadata address" in answer["error"]
    assert answer["response"] is None


async def test_oauth_token_requests_to_refused_targets_hold_messages_and_send_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with (
        recording_server(provider_answers) as recorder,
        running_gateway(sqlite_url, tmp_path, transport=guarded_transport()) as gw,
    ):
        provider = f"http://{ALLOWED}:{recorder.port}"
        targets = refused_targets(recorder.port)
        held = {}
        for case, (base, _) in targets.items():
            auth = {
                "type": "oauth2",
                "token_url": f"{base}/oauth/{case}/token",
                "client_id": "smsrelay",
                "client_secret": "{{secret.client_secret}}",
            }
            document = connector(f"oauth-{case}", f"{provider}/send/oauth-{case}")
            document["request"]["auth"] = auth
            document["secrets"] = {"client_secret": "cs-not-for-strangers"}
            held[case] = await send_through(gw, document)
        good = connector("oauth-ok", f"{provider}/send/oauth-ok")
        good["request"]["auth"] = {
            "type": "oauth2",
            "token_url": f"{provider}/oauth/ok/token",
            "client_id": "smsrelay",
            "client_secret": "{{secret.client_secret}}",
        }
        good["secrets"] = {"client_secret": "cs-for-the-provider"}
        allowed = await send_through(gw, good)
        for case, (_, words) in targets.items():
            message = await gw.wait_for_status(held[case], FINAL_OR_HELD)
            assert message["status"] == "dispatch_error", (case, message)
            reason = message["failure_reason"]
            assert reason.startswith("credentials_failing: "), (case, reason)
            assert "blocked_address: " in reason
            for word in words:
                assert word in reason, (case, reason)
        await gw.wait_for_status(allowed, {"sent", "delivered"})
    seen = paths_seen(recorder)
    # The allowed token endpoint and provider were used; of the refused ones only the
    # allow-listed first hop of the redirect was reached, and no send went out for them.
    assert seen == {"/oauth/ok/token", "/send/oauth-ok", "/bounce/oauth/redirect/token"}
    bearer = [h.headers.get("Authorization") for h in recorder.seen if h.path == "/send/oauth-ok"]
    assert bearer == ["Bearer tok-123"]


async def test_webhooks_to_refused_targets_fail_at_once_and_post_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with (
        recording_server(provider_answers) as recorder,
        running_gateway(sqlite_url, tmp_path, transport=guarded_transport()) as gw,
    ):
        targets = refused_targets(recorder.port)
        hooks: dict[str, str] = {}
        for case, (base, _) in [
            *targets.items(),
            ("allowed", (f"http://{ALLOWED}:{recorder.port}", [])),
        ]:
            response = await gw.client.post(
                "/v1/webhooks", json={"url": f"{base}/hook/{case}", "events": ["*"]}
            )
            assert response.status_code == 201, response.text
            hooks[case] = response.json()["id"]
        # Any status event goes to every webhook: one message through an allowed connector.
        await send_through(gw, connector("hooked", f"http://{ALLOWED}:{recorder.port}/send/x"))
        views = await wait_for_webhook_tries(gw, hooks)
    for case, (_, words) in targets.items():
        tries = [t for d in views[case]["deliveries"] for t in d["tries"]]
        assert all(d["state"] == "failed" for d in views[case]["deliveries"]), (case, views[case])
        for attempt in tries:
            assert attempt["status_code"] is None
            assert "blocked_address: " in attempt["error"], (case, attempt)
            for word in words:
                assert word in attempt["error"], (case, attempt)
    assert all(d["state"] == "delivered" for d in views["allowed"]["deliveries"])
    hook_paths = {p for p in paths_seen(recorder) if "/hook/" in p}
    assert hook_paths == {"/hook/allowed", "/bounce/hook/redirect"}


async def wait_for_webhook_tries(gw: Gateway, hooks: dict[str, str]) -> dict[str, Any]:
    """Each webhook's view once every one of them has a finished delivery."""
    views: dict[str, Any] = {}
    async with asyncio.timeout(20):
        while True:
            for case, hook_id in hooks.items():
                response = await gw.client.get(f"/v1/webhooks/{hook_id}")
                assert response.status_code == 200, response.text
                views[case] = response.json()
            if all(
                v["deliveries"]
                and all(d["state"] in ("failed", "delivered") for d in v["deliveries"])
                for v in views.values()
            ):
                return views
            await asyncio.sleep(0.1)
