"""Delivery reports over HTTP: `/dlr/{token}` intake and the mapping assistant (SPEC §4).

Intake (`router`, no API key; the unguessable token is the credential) lives in
`api.dlr_intake`: the app serves it with `DeliveryReportEndpoint` in front of FastAPI's
routing; the route here documents it and runs the same `take_callback` when an app is
built without that endpoint.

The mapping assistant (`mapping_router`, API key required) lists a connector's recent raw
callbacks with every field they hold, and proposes `delivery` paths from a sample.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from smsrelay.api.connectors import load_connector
from smsrelay.api.dlr_intake import (
    CONNECTOR_CACHE_SECONDS,
    DeliveryReportIntake,
    delivery_report_intake,
    read_capped_body,
    redact_headers,
    take_callback,
)
from smsrelay.connectors.definition import Delivery
from smsrelay.connectors.delivery import (
    decode_callback,
    list_fields,
    parse_delivery_callback,
    suggest_delivery_mapping,
)
from smsrelay.connectors.errors import CallbackError
from smsrelay.connectors.exchange import InboundCallback
from smsrelay.http_common import Problem, get_runtime, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.store.delivery_reports import (
    CallbackState,
    StoredCallback,
    get_callback,
    list_callbacks,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["delivery reports"])
mapping_router = APIRouter(
    prefix="/v1/connectors",
    tags=["delivery reports"],
    dependencies=[Depends(require_api_key)],
)


@router.api_route(
    "/dlr/{token}",
    methods=["GET", "POST"],
    summary="Receive a delivery report",
    responses={
        200: {"description": "Stored; it is mapped to its message shortly"},
        401: {"description": "The callback failed the connector's delivery.verify check"},
        404: {"description": "No connector has this token"},
        413: {"description": "The body is over the size cap"},
        503: {"description": "Not stored (the database failed); send it again"},
    },
)
async def receive_delivery_report(token: str, request: Request) -> JSONResponse:
    """Store a provider's delivery-report callback and answer 200 at once.

    The token is the connector's unguessable `callback_url` token; no API key is needed.
    """
    await take_callback(get_runtime(request), token, request.scope, request.receive)
    return JSONResponse({"status": "received"})


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
