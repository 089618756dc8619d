"""MoEngage's custom SMS connector, answered by smsrelay: `POST /api/v2/sms/moengage/send`.

A MoEngage user points a custom connector ("Custom service provider") at this endpoint and
types the request in MoEngage's form, as JSON or as a form:

    sender=TXTSMS  to=Moesms_destination  message=Moesms_message  service=T
    (optional) entity_id, template_id, webhook_id, time, type, flash, custom, port

MoEngage replaces `Moesms_*` with the recipient and the text. The request is read here into
a `MessageRequest` and judged by `MessageIntake` like any other message; the inbound
`sender` (a sender name or sender ID) and `service` (T transactional, P promotional) choose
the smsrelay sender, hence the connector. The answer carries our message id for MoEngage's
"unique ID" mapping; the delivery report goes later to the webhook named by `webhook_id`
(format `moengage`, see `compat.webhook_formats`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from smsrelay.compat.inbound import (
    InboundRefused,
    pick_sender,
    platform_number,
    read_fields,
    text_fields,
)
from smsrelay.connectors.errors import FieldError
from smsrelay.dispatch.intake import MAX_BODY_CHARS, IntakeRefused, MessageIntake, MessageRequest
from smsrelay.http_common import Problem, get_runtime, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.store.api_keys import ApiKey
from smsrelay.store.messages import insert_messages
from smsrelay.store.senders import list_senders
from smsrelay.store.webhooks import get_webhook

log = logging.getLogger(__name__)

SEND_PATH = "/api/v2/sms/moengage/send"
MAX_REQUEST_BYTES = 64 * 1024
DEFAULT_TIMEZONE = "UTC"
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M")

# The fields of MoEngage's custom connector request, with the longest value accepted.
MOENGAGE_FIELDS: dict[str, int] = {
    "sender": 64,
    "to": 40,
    "message": MAX_BODY_CHARS,
    "service": 16,
    "entity_id": 128,
    "template_id": 128,
    "webhook_id": 64,
    "time": 32,
    "type": 1,
    "flash": 1,
    "custom": 255,
    "port": 5,
    "campaign_id": 128,
}
SERVICES = {"T": "transactional", "P": "promotional"}
MESSAGE_TYPES = ("U", "N", "A")  # unicode, normal, auto-detect
# MoEngage's optional delivery settings, kept as message params for a connector to forward.
KEPT_AS_PARAMS = ("type", "flash", "port", "custom")
# Intake names a field by its native name; MoEngage's user typed another one.
_FIELD_NAMES = {"body": "message", "send_at": "time"}


@dataclass(frozen=True, slots=True)
class MoEngageSend:
    """One MoEngage custom-connector request, read and checked (sender not chosen yet)."""

    to: str
    message: str | None
    sender: str | None
    kind: str
    template_id: str | None = None
    entity_id: str | None = None
    webhook_id: str | None = None
    campaign_id: str | None = None
    send_at: datetime | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    def message_request(self, sender_name: str | None, default_region: str = "") -> MessageRequest:
        """The request for `MessageIntake`, routed to `sender_name` (None: the default)."""
        return MessageRequest(
            to=platform_number(self.to, default_region),
            body=self.message,
            template_id=self.template_id,
            sender=sender_name,
            type=self.kind,
            params=dict(self.params),
            campaign_id=self.campaign_id,
            entity_id=self.entity_id,
            send_at=self.send_at,
            webhook_id=self.webhook_id,
        )


def parse_moengage_time(text: str, zone: tzinfo) -> datetime:
    """MoEngage's `time` (yyyy-mm-dd hh:mm:ss, in the configured zone) as an aware datetime."""
    for pattern in TIME_FORMATS:
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=zone)
        except ValueError:
            continue
    raise ValueError(f"use yyyy-mm-dd hh:mm:ss, e.g. 2026-12-01 09:30:00 (got {text!r})")


def parse_moengage_send(fields: Mapping[str, Any], *, zone: tzinfo) -> MoEngageSend:
    """Read a MoEngage request's fields; raise InboundRefused (422) listing every problem."""
    values, errors = text_fields(fields, MOENGAGE_FIELDS)
    for name, longest in MOENGAGE_FIELDS.items():
        if len(values.get(name, "")) > longest:
            errors.append(FieldError(name, f"must be at most {longest} characters"))
    if "to" not in values:
        errors.append(FieldError("to", "is required: map it to Moesms_destination"))
    if "message" not in values and "template_id" not in values:
        errors.append(FieldError("message", "is required: map it to Moesms_message"))
    service = values.get("service", "T")
    kind = SERVICES.get(service.upper()) or (
        service.lower() if service.lower() in SERVICES.values() else None
    )
    if kind is None:
        errors.append(
            FieldError("service", f"must be T (transactional) or P (promotional), not {service!r}")
        )
    if values.get("type", "A").upper() not in MESSAGE_TYPES:
        errors.append(FieldError("type", "must be U (unicode), N (normal) or A (auto-detect)"))
    if values.get("flash", "0") not in ("0", "1"):
        errors.append(FieldError("flash", "must be 0 or 1"))
    port = values.get("port")
    if port is not None and not (port.isdigit() and int(port) <= 65535):
        errors.append(FieldError("port", "must be a port number from 0 to 65535"))
    send_at = None
    if "time" in values:
        try:
            send_at = parse_moengage_time(values["time"], zone)
        except ValueError as exc:
            errors.append(FieldError("time", str(exc)))
    if errors:
        raise InboundRefused(422, "the MoEngage request is invalid; see errors", errors)
    params = {name: values[name] for name in KEPT_AS_PARAMS if name in values}
    if "type" in params:
        params["type"] = params["type"].upper()
    return MoEngageSend(
        to=values["to"],
        message=values.get("message"),
        sender=values.get("sender"),
        kind=kind or "transactional",
        template_id=values.get("template_id"),
        entity_id=values.get("entity_id"),
        webhook_id=values.get("webhook_id"),
        campaign_id=values.get("campaign_id"),
        send_at=send_at,
        params=params,
    )


def moengage_timezone(runtime: Runtime) -> tzinfo:
    """The zone MoEngage's `time` is read in: setting `moengage_timezone` (default UTC)."""
    name = runtime.settings.moengage_timezone or DEFAULT_TIMEZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Problem(
            500,
            f"the moengage_timezone setting {name!r} is not a time zone (use e.g. Asia/Kolkata)",
        ) from exc


def _renamed(errors: list[FieldError]) -> list[FieldError]:
    return [FieldError(_FIELD_NAMES.get(e.path, e.path), e.message) for e in errors]


router = APIRouter(tags=["moengage"])

_FIELD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["to", "message"],
    "properties": {
        "sender": {"type": "string", "description": "Sender name or sender ID, e.g. TXTSMS."},
        "to": {"type": "string", "description": "Recipient (Moesms_destination)."},
        "message": {"type": "string", "description": "Text (Moesms_message)."},
        "service": {"type": "string", "enum": ["T", "P"], "default": "T"},
        "entity_id": {"type": "string"},
        "template_id": {"type": "string"},
        "webhook_id": {"type": "string", "description": "smsrelay webhook for the report."},
        "time": {"type": "string", "description": "yyyy-mm-dd hh:mm:ss (scheduled)."},
        "type": {"type": "string", "enum": ["U", "N", "A"]},
        "flash": {"type": "string", "enum": ["0", "1"]},
        "custom": {"type": "string"},
        "port": {"type": "string"},
        "campaign_id": {"type": "string", "description": "e.g. Moesms_campaignId."},
    },
}


@router.post(
    SEND_PATH,
    summary="Send one SMS the way MoEngage's custom connector asks",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _FIELD_SCHEMA},
                "application/x-www-form-urlencoded": {"schema": _FIELD_SCHEMA},
            },
        }
    },
    responses={
        200: {
            "description": "Queued; `message_id` is the unique id to map in MoEngage.",
            "content": {
                "application/json": {
                    "example": {
                        "status": "success",
                        "message_id": "01J0B4Q4Z7M9V2K8D3W6X5Y1TR",
                        "request_id": "01J0B4Q4Z7M9V2K8D3W6X5Y1TR",
                        "to": "+919812345678",
                        "segments": 1,
                    }
                }
            },
        }
    },
)
async def moengage_send(
    request: Request,
    _: ApiKey = Depends(require_api_key),
    runtime: Runtime = Depends(get_runtime),
) -> JSONResponse:
    """Queue one SMS from MoEngage; answer with its id (`message_id`) for delivery tracking."""
    zone = moengage_timezone(runtime)
    try:
        fields = await read_fields(request, max_bytes=MAX_REQUEST_BYTES)
        send = parse_moengage_send(fields, zone=zone)
    except InboundRefused as exc:
        raise Problem(exc.status, exc.detail, errors=exc.errors) from exc
    if send.webhook_id is not None and await get_webhook(runtime.database, send.webhook_id) is None:
        raise Problem(
            422,
            "the MoEngage request is invalid; see errors",
            errors=[
                FieldError(
                    "webhook_id",
                    f"no webhook {send.webhook_id!r}; create one with format moengage and "
                    "MoEngage's delivery-tracking URL (POST /v1/webhooks)",
                )
            ],
        )
    chosen = pick_sender(await list_senders(runtime.database), send.sender, send.kind)
    region = runtime.settings.default_region
    # The webhook was checked above, with MoEngage's own advice.
    intake = MessageIntake(
        runtime.database, runtime.secret_box, default_region=region, check_webhooks=False
    )
    try:
        message = await intake.prepare(
            send.message_request(chosen.name if chosen else None, region)
        )
    except IntakeRefused as exc:
        raise Problem(
            422, "the message was not accepted; see errors", errors=_renamed(exc.errors)
        ) from exc
    await insert_messages(runtime.database, [message])
    runtime.notify_dispatcher()
    return JSONResponse(
        {
            "status": "success",
            "message_id": message.id,
            "request_id": message.id,
            "to": message.to,
            "sender": message.sender_name,
            "sender_id": message.sender_id,
            "connector": await intake.connector_name(message.connector_id),
            "segments": message.segments,
            "encoding": message.encoding,
            "send_at": message.send_at.isoformat() if message.send_at else None,
        }
    )


__all__ = [
    "MOENGAGE_FIELDS",
    "SEND_PATH",
    "MoEngageSend",
    "moengage_timezone",
    "parse_moengage_send",
    "parse_moengage_time",
    "router",
]
