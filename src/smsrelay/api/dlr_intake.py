"""DLR intake, `/dlr/{token}`: the busiest path of the gateway, answered at the ASGI level.

    token -> connector (cached CONNECTOR_CACHE_SECONDS) -> body under the cap (413)
      -> delivery.verify (401) -> stored durably, group-committed -> 200 {"status": "received"}

Nothing is parsed before answering: providers get their 200 as soon as the raw callback is
committed (`CallbackWriter`: concurrent callbacks share one transaction), also for reports
that will match no message, so they stop retrying; a callback that could not be stored is
answered 503 so the provider sends it again. The delivery mapper
(`dispatch.delivery_mapper`) reads it from the database and maps it.

`DeliveryReportEndpoint` serves these requests in front of FastAPI's routing, dependency
solving and request objects, which cost more than everything else a callback needs (the
route in `api.delivery_reports` documents the endpoint and runs the same `take_callback`
when the app is built without it). Refusals are the same RFC 9457 problems as elsewhere.

The connector found for a token is cached for a few seconds so a burst of callbacks does
not cost a lookup each: a rotated token keeps working, and a changed `delivery.verify`
or secret takes effect, at most CONNECTOR_CACHE_SECONDS later (in each serving process).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smsrelay.api.problems import database_problem
from smsrelay.connectors.callback_verification import verify_callback
from smsrelay.connectors.definition import ConnectorDefinition, VerifyHeader, VerifyHmac, VerifyNone
from smsrelay.connectors.exchange import InboundCallback
from smsrelay.connectors.redaction import MASK
from smsrelay.http_common import Problem
from smsrelay.metrics import DELIVERY_REPORTS
from smsrelay.runtime import Runtime
from smsrelay.store.connectors import StoredConnector, get_connector_by_dlr_token
from smsrelay.store.delivery_reports import CallbackNotStored, CallbackWriter, NewCallback
from smsrelay.store.timestamps import utc_now

DLR_PATH = "/dlr/"
CONNECTOR_CACHE_SECONDS = 5.0
_CACHE_SIZE = 4096
_EXTRAS_KEY = "delivery_report_intake"
# Header names whose masking is remembered per connector (any client may invent names).
_MASKED_NAMES = 256

# Header values never stored: credentials, and anything named like a signature or token.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "apikey"}
)
_SECRET_HEADER_WORDS = ("signature", "token", "secret", "password")

# The 200 answer, as JSONResponse({"status": "received"}) renders it, built once.
RECEIVED_BODY = b'{"status":"received"}'
_RECEIVED_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-length", str(len(RECEIVED_BODY)).encode()),
        (b"content-type", b"application/json"),
    ],
}
_RECEIVED_BODY: Message = {"type": "http.response.body", "body": RECEIVED_BODY}


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """A connector as intake needs it: what to verify and which header values to hide."""

    connector: StoredConnector
    callback_url: str  # the URL the provider was given (Runtime.callback_url)
    hidden_headers: frozenset[str]
    verifies: bool  # False when `delivery.verify` is none: no InboundCallback is built
    # Header name -> masked?, decided once per name (providers send the same few headers).
    _masked: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def redact(self, headers: dict[str, str]) -> dict[str, str]:
        """Headers as stored: credentials, signatures and the verify header's value masked."""
        masked = self._masked
        stored: dict[str, str] = {}
        for name, value in headers.items():
            hide = masked.get(name)
            if hide is None:
                hide = _hidden(name, self.hidden_headers)
                if len(masked) < _MASKED_NAMES:
                    masked[name] = hide
            stored[name] = MASK if hide else value
        return stored


def _callback_target(connector: StoredConnector, callback_url: str) -> CallbackTarget:
    delivery = connector.definition.delivery
    verifies = delivery is not None and not isinstance(delivery.verify, VerifyNone)
    hidden = header_names_to_hide(connector.definition)
    return CallbackTarget(connector, callback_url, hidden, verifies)


class DeliveryReportIntake:
    """The live parts of DLR intake in one process: the group-commit writer, the token cache."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.writer = CallbackWriter(runtime.database, on_stored=self._stored)
        self._targets: OrderedDict[str, tuple[float, CallbackTarget | None]] = OrderedDict()
        self._lookups: dict[str, asyncio.Future[CallbackTarget | None]] = {}

    def _stored(self) -> None:
        mapper = self.runtime.extras.get("delivery_mapper")
        if mapper is not None:
            mapper.notify()

    async def connector_for(self, token: str) -> StoredConnector | None:
        """The connector owning this DLR token (None if none), cached briefly."""
        target = await self.target_for(token)
        return target.connector if target is not None else None

    async def target_for(self, token: str) -> CallbackTarget | None:
        """The connector owning this DLR token, prepared for intake (None if none), cached.

        Concurrent requests for a token not in the cache share one lookup: a burst of
        callbacks must not take a database connection each.
        """
        cached = self._targets.get(token)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        lookup = self._lookups.get(token)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(token))
            self._lookups[token] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(token, None))
        # Shielded: one caller going away must not cancel the lookup the others wait for.
        return await asyncio.shield(lookup)

    async def _look_up(self, token: str) -> CallbackTarget | None:
        connector = await get_connector_by_dlr_token(
            self.runtime.database, self.runtime.secret_box, token
        )
        target = (
            _callback_target(connector, self.runtime.callback_url(token))
            if connector is not None
            else None
        )
        # Unknown tokens are cached too: a scanner's guesses do not each cost a query.
        self._targets[token] = (time.monotonic() + CONNECTOR_CACHE_SECONDS, target)
        self._targets.move_to_end(token)
        while len(self._targets) > _CACHE_SIZE:
            self._targets.popitem(last=False)
        return target

    async def aclose(self) -> None:
        """Commit the callbacks still waiting for their transaction (at shutdown)."""
        await self.writer.aclose()


def delivery_report_intake(runtime: Runtime) -> DeliveryReportIntake:
    """This process's DLR intake, made on first use."""
    intake = runtime.extras.get(_EXTRAS_KEY)
    if intake is None:
        intake = DeliveryReportIntake(runtime)
        runtime.extras[_EXTRAS_KEY] = intake
    assert isinstance(intake, DeliveryReportIntake)
    return intake


async def close_delivery_report_intake(runtime: Runtime) -> None:
    """Flush this process's DLR intake, if it ever ran; call before closing the database."""
    intake = runtime.extras.pop(_EXTRAS_KEY, None)
    if isinstance(intake, DeliveryReportIntake):
        await intake.aclose()


# ---------------------------------------------------------------- reading the request


async def read_capped_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, or a 413 problem as soon as it is known to exceed `limit` bytes."""
    too_large = Problem(
        413, f"the delivery report is larger than {limit} bytes (SMSRELAY_DLR_MAX_BYTES)"
    )
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = value.strip()
            if declared.isdigit() and int(declared) > limit:
                raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # The provider gave up before sending it all; it will send it again.
            raise Problem(400, "the client disconnected before the body was complete")
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by (lower-case) name; a repeated header's values joined by ", "."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1")  # ASGI servers give lower-case names
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def header_names_to_hide(definition: ConnectorDefinition) -> frozenset[str]:
    """Lower-case names of the headers whose values are never stored for this connector."""
    names = set(_SECRET_HEADERS)
    verify = definition.delivery.verify if definition.delivery is not None else None
    if isinstance(verify, VerifyHeader):
        names.add(verify.name.lower())
    elif isinstance(verify, VerifyHmac):
        names.add(verify.header.lower())
    return frozenset(names)


def _hidden(name: str, hidden: frozenset[str]) -> bool:
    lowered = name.lower()
    return lowered in hidden or any(word in lowered for word in _SECRET_HEADER_WORDS)


def redact_headers(headers: dict[str, str], definition: ConnectorDefinition) -> dict[str, str]:
    """Headers as stored: credentials, signatures and the verify header's value masked."""
    hidden = header_names_to_hide(definition)
    return {name: MASK if _hidden(name, hidden) else value for name, value in headers.items()}


# ---------------------------------------------------------------- taking a callback


async def take_callback(runtime: Runtime, token: str, scope: Scope, receive: Receive) -> None:
    """Verify and durably store one callback; returns once it is committed.

    Raises Problem: 404 for an unknown token, 413 over the size cap, 401 when verification
    fails, 503 when the database could not store it (the provider should send it again).
    """
    intake = delivery_report_intake(runtime)
    try:
        target = await intake.target_for(token)
    except Exception as exc:
        problem = database_problem(exc)
        if problem is None:
            raise
        raise problem from exc
    if target is None:
        raise Problem(404, "no connector has this delivery-report URL")
    body = await read_capped_body(scope, receive, runtime.settings.dlr_max_bytes)
    query = scope.get("query_string", b"").decode("latin-1")
    # The URL the provider was given, not the one a proxy forwarded: URL-signing providers
    # (Twilio) sign exactly that.
    url = target.callback_url + (f"?{query}" if query else "")
    headers = request_headers(scope)
    content_type = headers.get("content-type")
    method: str = scope["method"]
    connector = target.connector
    delivery = connector.definition.delivery
    if target.verifies and delivery is not None:
        callback = InboundCallback(
            method=method,
            url=url,
            query=tuple(parse_qsl(query, keep_blank_values=True)),
            headers=headers,
            body=body,
            content_type=content_type,
        )
        verdict = verify_callback(delivery.verify, callback, connector.definition.secrets)
        if not verdict.ok:
            raise Problem(401, f"the delivery report failed verification: {verdict.reason}")
    try:
        await intake.writer.store(
            NewCallback(
                connector_id=connector.id,
                received_at=utc_now(),
                method=method,
                url=url,
                headers=target.redact(headers),
                body=body,
                content_type=content_type,
            )
        )
    except CallbackNotStored as exc:
        # Not stored, so not accepted: the provider's retry will bring it again.
        raise Problem(
            503,
            f"the delivery report could not be stored ({exc}); send it again",
            headers={"Retry-After": "1"},
        ) from exc
    DELIVERY_REPORTS.inc()


def dlr_token(scope: Scope) -> str | None:
    """The token of a `/dlr/{token}` request path (under the app's root path); else None."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        path = path[len(root) :]
    if not path.startswith(DLR_PATH):
        return None
    token = path[len(DLR_PATH) :]
    return token if token and "/" not in token else None


class DeliveryReportEndpoint:
    """ASGI middleware answering `GET`/`POST /dlr/{token}` itself; the rest goes to `app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = (
            dlr_token(scope)
            if scope["type"] == "http" and scope["method"] in ("POST", "GET")
            else None
        )
        if token is None:
            await self.app(scope, receive, send)
            return
        runtime: Runtime = scope["app"].state.runtime
        try:
            await take_callback(runtime, token, scope, receive)
        except Problem as problem:
            await problem.to_response(scope["path"])(scope, receive, send)
            return
        await send(_RECEIVED_START)
        await send(_RECEIVED_BODY)


__all__ = [
    "CONNECTOR_CACHE_SECONDS",
    "RECEIVED_BODY",
    "CallbackTarget",
    "DeliveryReportEndpoint",
    "DeliveryReportIntake",
    "close_delivery_report_intake",
    "delivery_report_intake",
    "dlr_token",
    "header_names_to_hide",
    "read_capped_body",
    "redact_headers",
    "request_headers",
    "take_callback",
]
