"""Delivery reports over HTTP: `/dlr/{token}` intake and the mapping assistant (SPEC §4).

Intake (`router`, no API key; the unguessable token is the credential):

    token -> connector (cached CONNECTOR_CACHE_SECONDS) -> body under the cap (413)
      -> delivery.verify (401) -> stored durably, group-committed -> 200 {"status": "received"}

Nothing is parsed before answering: providers get their 200 as soon as the raw callback is
committed, also for reports that will match no message, so they stop retrying. The
delivery mapper (`dispatch.delivery_mapper`) reads it from there.

The connector found for a token is cached for a few seconds so a burst of callbacks does
not cost a lookup each: a rotated token keeps working, and a changed `delivery.verify`
or secret takes effect, at most CONNECTOR_CACHE_SECONDS later (in each serving process).

The mapping assistant (`mapping_router`, API key required) lists a connector's recent raw
callbacks with every field they hold, and proposes `delivery` paths from a sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import ClientDisconnect

from smsrelay.api.auth import get_runtime, require_api_key
from smsrelay.api.connectors import load_connector
from smsrelay.api.problems import Problem
from smsrelay.connectors.callback_verification import verify_callback
from smsrelay.connectors.definition import (
    ConnectorDefinition,
    Delivery,
    VerifyHeader,
    VerifyHmac,
)
from smsrelay.connectors.delivery import (
    decode_callback,
    list_fields,
    parse_delivery_callback,
    suggest_delivery_mapping,
)
from smsrelay.connectors.errors import CallbackError
from smsrelay.connectors.exchange import InboundCallback
from smsrelay.connectors.redaction import MASK
from smsrelay.runtime import Runtime
from smsrelay.store.connectors import StoredConnector, get_connector_by_dlr_token
from smsrelay.store.delivery_reports import (
    CallbackNotStored,
    CallbackState,
    CallbackWriter,
    NewCallback,
    StoredCallback,
    get_callback,
    list_callbacks,
)
from smsrelay.store.timestamps import utc_now

log = logging.getLogger(__name__)

router = APIRouter(tags=["delivery reports"])
mapping_router = APIRouter(
    prefix="/v1/connectors",
    tags=["delivery reports"],
    dependencies=[Depends(require_api_key)],
)

CONNECTOR_CACHE_SECONDS = 5.0
_CACHE_SIZE = 4096
RECEIVED = {"status": "received"}

# Header values never stored: credentials, and anything named like a signature or token.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "apikey"}
)
_SECRET_HEADER_WORDS = ("signature", "token", "secret", "password")


# ---------------------------------------------------------------- intake


class DeliveryReportIntake:
    """The live parts of DLR intake in one process: the group-commit writer, the token cache."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.writer = CallbackWriter(runtime.database, on_stored=self._stored)
        self._connectors: OrderedDict[str, tuple[float, StoredConnector | None]] = OrderedDict()
        self._lookups: dict[str, asyncio.Future[StoredConnector | None]] = {}

    def _stored(self) -> None:
        mapper = self.runtime.extras.get("delivery_mapper")
        if mapper is not None:
            mapper.notify()

    async def connector_for(self, token: str) -> StoredConnector | None:
        """The connector owning this DLR token (None if none), cached briefly.

        Concurrent requests for a token not in the cache share one lookup: a burst of
        callbacks must not take a database connection each.
        """
        cached = self._connectors.get(token)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        lookup = self._lookups.get(token)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(token))
            self._lookups[token] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(token, None))
        # Shielded: one caller going away must not cancel the lookup the others wait for.
        return await asyncio.shield(lookup)

    async def _look_up(self, token: str) -> StoredConnector | None:
        connector = await get_connector_by_dlr_token(
            self.runtime.database, self.runtime.secret_box, token
        )
        # Unknown tokens are cached too: a scanner's guesses do not each cost a query.
        self._connectors[token] = (time.monotonic() + CONNECTOR_CACHE_SECONDS, connector)
        self._connectors.move_to_end(token)
        while len(self._connectors) > _CACHE_SIZE:
            self._connectors.popitem(last=False)
        return connector


def delivery_report_intake(runtime: Runtime) -> DeliveryReportIntake:
    """This process's DLR intake, made on first use."""
    intake = runtime.extras.get("delivery_report_intake")
    if intake is None:
        intake = DeliveryReportIntake(runtime)
        runtime.extras["delivery_report_intake"] = intake
    assert isinstance(intake, DeliveryReportIntake)
    return intake


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 problem as soon as it is known to exceed `limit` bytes."""
    too_large = Problem(
        413, f"the delivery report is larger than {limit} bytes (SMSRELAY_DLR_MAX_BYTES)"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        # The provider gave up before sending it all; it will send it again.
        raise Problem(400, "the client disconnected before the body was complete") from None
    return b"".join(chunks)


def _header_names_to_hide(definition: ConnectorDefinition) -> set[str]:
    names = set(_SECRET_HEADERS)
    verify = definition.delivery.verify if definition.delivery is not None else None
    if isinstance(verify, VerifyHeader):
        names.add(verify.name.lower())
    elif isinstance(verify, VerifyHmac):
        names.add(verify.header.lower())
    return names


def redact_headers(headers: dict[str, str], definition: ConnectorDefinition) -> dict[str, str]:
    """Headers as stored: credentials, signatures and the verify header's value masked."""
    hidden = _header_names_to_hide(definition)
    return {
        name: MASK
        if name.lower() in hidden or any(word in name.lower() for word in _SECRET_HEADER_WORDS)
        else value
        for name, value in headers.items()
    }


def _request_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


@router.api_route(
    "/dlr/{token}",
    methods=["GET", "POST"],
    summary="Receive a delivery report",
    responses={
        200: {"description": "Stored; it is mapped to its message shortly"},
        401: {"description": "The callback failed the connector's delivery.verify check"},
        404: {"description": "No connector has this token"},
        413: {"description": "The body is over the size cap"},
    },
)
async def receive_delivery_report(token: str, request: Request) -> JSONResponse:
    """Store a provider's delivery-report callback and answer 200 at once.

    The token is the connector's unguessable `callback_url` token; no API key is needed.
    """
    runtime = get_runtime(request)
    intake = delivery_report_intake(runtime)
    connector = await intake.connector_for(token)
    if connector is None:
        raise Problem(404, "no connector has this delivery-report URL")
    body = await read_capped_body(request, runtime.settings.dlr_max_bytes)
    query = request.url.query
    # The URL the provider was given, not the one a proxy forwarded: URL-signing providers
    # (Twilio) sign exactly that.
    url = runtime.callback_url(token) + (f"?{query}" if query else "")
    headers = _request_headers(request)
    content_type = request.headers.get("content-type")
    definition = connector.definition
    if definition.delivery is not None:
        callback = InboundCallback(
            method=request.method,
            url=url,
            query=tuple(request.query_params.multi_items()),
            headers=headers,
            body=body,
            content_type=content_type,
        )
        verdict = verify_callback(definition.delivery.verify, callback, definition.secrets)
        if not verdict.ok:
            raise Problem(401, f"the delivery report failed verification: {verdict.reason}")
    try:
        await intake.writer.store(
            NewCallback(
                connector_id=connector.id,
                received_at=utc_now(),
                method=request.method,
                url=url,
                headers=redact_headers(headers, definition),
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
    return JSONResponse(RECEIVED)


# ---------------------------------------------------------------- mapping assistant


def _field_views(document: Any) -> list[dict[str, Any]]:
    return [{"path": path, "value": value} for path, value in list_fields(document)]


def _body_text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def callback_view(callback: StoredCallback, delivery: Delivery | None) -> dict[str, Any]:
    """A stored callback for the assistant: raw, and as the document the mapping reads."""
    view: dict[str, Any] = {
        "id": callback.id,
        "received_at": callback.received_at.isoformat(),
        "processed_at": callback.processed_at.isoformat() if callback.processed_at else None,
        "method": callback.method,
        "url": callback.url,
        "content_type": callback.content_type,
        "headers": dict(callback.headers),
        "state": callback.state.value,
        "error": callback.error,
        "report_count": callback.report_count,
        "body": _body_text(callback.body),
    }
    try:
        document = decode_callback(
            callback.as_inbound(), delivery.decode if delivery is not None else ()
        )
    except CallbackError as exc:
        view.update(document=None, fields=[], decode_error=str(exc))
    else:
        view.update(document=document, fields=_field_views(document), decode_error=None)
    return view


@mapping_router.get("/{name}/delivery-reports")
async def recent_delivery_reports(
    name: str,
    limit: int = Query(default=20, ge=1, le=200),
    state: CallbackState | None = Query(default=None),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """The connector's most recent raw callbacks, newest first, with the fields they hold."""
    connector = await load_connector(runtime, name)
    stored = await list_callbacks(runtime.database, connector.id, limit=limit, state=state)
    delivery = connector.definition.delivery
    return {
        "connector": connector.name,
        "callback_url": runtime.callback_url(connector.dlr_token),
        "data": [callback_view(callback, delivery) for callback in stored],
    }


class SampleCallback(BaseModel):
    """A stored callback by id, or a sample of one as a provider would send it."""

    model_config = ConfigDict(extra="forbid")

    callback_id: int | None = Field(
        default=None, description="A stored callback of this connector."
    )
    method: Literal["GET", "POST"] = "POST"
    content_type: str | None = Field(default=None, max_length=255)
    query: str | dict[str, str | list[str]] | None = Field(
        default=None, description="Query string, as text (a=1&b=2) or as an object."
    )
    body: str | dict[str, Any] | list[Any] | None = Field(
        default=None, description="The body as text; a JSON body may be given as JSON."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SampleCallback:
        given = self.body is not None or self.query is not None
        if self.callback_id is not None and given:
            raise ValueError("give callback_id or a sample (body, query), not both")
        if self.callback_id is None and not given:
            raise ValueError("give callback_id, or a sample callback's body or query")
        return self

    def as_inbound(self, url: str) -> InboundCallback:
        """The sample as a received callback at `url`."""
        if isinstance(self.query, dict):
            pairs = [
                (key, item)
                for key, value in self.query.items()
                for item in (value if isinstance(value, list) else [value])
            ]
            query = urlencode(pairs)
        else:
            query = (self.query or "").lstrip("?")
        content_type = self.content_type
        if isinstance(self.body, dict | list):
            body = json.dumps(self.body).encode()
            content_type = content_type or "application/json"
        else:
            body = (self.body or "").encode()
        return InboundCallback(
            method=self.method,
            url=url + (f"?{query}" if query else ""),
            query=tuple(parse_qsl(query, keep_blank_values=True)),
            headers={"Content-Type": content_type} if content_type else {},
            body=body,
            content_type=content_type,
        )


def _preview(suggestion: dict[str, Any], callback: InboundCallback) -> dict[str, Any]:
    """The reports the proposed mapping reads from the sample, or why it cannot yet."""
    try:
        spec = Delivery.model_validate(suggestion)
    except ValidationError as exc:
        missing = ", ".join(str(e["loc"][0]) for e in exc.errors() if e.get("loc"))
        return {"reports": None, "preview_error": f"the proposal is incomplete: {missing}"}
    try:
        reports = parse_delivery_callback(spec, callback)
    except CallbackError as exc:
        return {"reports": None, "preview_error": str(exc)}
    return {
        "reports": [
            {
                "message_id": r.key,
                "recipient": r.recipient,
                "status": r.raw_status,
                "outcome": r.outcome.value,
                "reason": r.reason,
                "error_code": r.error_code,
                "timestamp": r.timestamp,
            }
            for r in reports
        ],
        "preview_error": None,
    }


@mapping_router.post("/{name}/delivery-mapping/suggest")
async def suggest_mapping(
    name: str,
    sample: SampleCallback = Body(
        ...,
        examples=[
            {
                "method": "POST",
                "content_type": "application/x-www-form-urlencoded",
                "body": "MessageSid=SM123&MessageStatus=delivered&To=%2B15558675310",
            },
            {"callback_id": 42},
        ],
    ),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Propose `delivery` paths for a sample callback and list every field with its value."""
    connector = await load_connector(runtime, name)
    if sample.callback_id is not None:
        stored = await get_callback(runtime.database, sample.callback_id)
        if stored is None or stored.connector_id != connector.id:
            raise Problem(
                404, f"connector {name!r} has no stored delivery report {sample.callback_id}"
            )
        callback = stored.as_inbound()
        source: dict[str, Any] = {"callback_id": stored.id}
    else:
        callback = sample.as_inbound(runtime.callback_url(connector.dlr_token))
        source = {"sample": True}
    try:
        document = decode_callback(callback)
    except CallbackError as exc:
        raise Problem(422, f"the sample callback cannot be read: {exc}") from exc
    suggestion = suggest_delivery_mapping(document)
    decode = suggestion.get("decode") or []
    if decode:
        # On failure the document is shown as sent; the proposal's preview says what failed.
        with contextlib.suppress(CallbackError):
            document = decode_callback(callback, decode)
    return {
        "source": source,
        "method": callback.method,
        "content_type": callback.content_type,
        "document": document,
        "fields": _field_views(document),
        "suggestion": suggestion,
        **_preview(suggestion, callback),
    }


__all__ = [
    "CONNECTOR_CACHE_SECONDS",
    "DeliveryReportIntake",
    "callback_view",
    "delivery_report_intake",
    "mapping_router",
    "read_capped_body",
    "redact_headers",
    "router",
]
