"""CleverTap's "Other (Generic)" SMS provider, answered by smsrelay.

A CleverTap user adds a generic provider whose HTTP endpoint is one of ours and whose JSON
payload names CleverTap's replacements:

    POST /api/v1/clevertap/messages
        {"source": "TXTSMS", "destination": "$$To", "text": "$$Body", "mid": "$$MessageID"}
    POST /api/v1/clevertap/messages/batch      (batching on, key name `msgs`)
        {"source": "TXTSMS", "msgs": [{"destination": "$$To", "text": "$$Body",
                                        "mid": "$$MessageID"}]}

In a batch, keys outside `msgs` are CleverTap's "global" pairs and apply to every item (an
item's own value wins). `mid` is CleverTap's message id: it is kept as the message param
`mid` and comes back as `meta` in the delivery report (webhook format `clevertap`, see
`compat.webhook_formats`). The answer maps our ids to the `mid`s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from smsrelay.compat.inbound import (
    InboundRefused,
    pick_sender,
    platform_number,
    read_fields,
    read_json_body,
    text_fields,
)
from smsrelay.compat.webhook_formats import MID_PARAM
from smsrelay.connectors.errors import FieldError
from smsrelay.dispatch.intake import (
    MAX_BODY_CHARS,
    IntakeRefused,
    MessageIntake,
    MessageRequest,
    prepare_all,
)
from smsrelay.http_common import Problem, get_runtime, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.store.api_keys import ApiKey
from smsrelay.store.errors import IdempotencyConflict
from smsrelay.store.idempotency import IdempotencyRecord
from smsrelay.store.messages import NewMessage, insert_messages
from smsrelay.store.senders import SENDER_TYPES, list_senders
from smsrelay.store.webhooks import get_webhook

PREFIX = "/api/v1/clevertap"
BATCH_KEY = "msgs"
MAX_BATCH = 1000  # CleverTap: "A single batch can have a maximum of 1,000 records."
MAX_SINGLE_BYTES = 64 * 1024
MAX_BATCH_BYTES = 8 * 1024 * 1024

# The fields of one message, with the longest value accepted.
CLEVERTAP_FIELDS: dict[str, int] = {
    "source": 64,
    "destination": 40,
    "text": MAX_BODY_CHARS,
    "mid": 255,
    "encoding": 16,
    "template_id": 128,
    "campaign_id": 128,
    "entity_id": 128,
    "type": 16,
    "webhook_id": 64,
}
LIST_FIELDS = ("template_variables",)
ENCODINGS = ("AUTO", "GSM7", "UCS2", "UNICODE", "TEXT", "UTF8")
_FIELD_NAMES = {"to": "destination", "body": "text", "sender": "source"}


@dataclass(frozen=True, slots=True)
class CleverTapMessage:
    """One message of a CleverTap request, read and checked (sender not chosen yet)."""

    destination: str
    text: str | None
    source: str | None
    mid: str | None
    kind: str = "transactional"
    template_id: str | None = None
    template_variables: tuple[str, ...] = ()
    campaign_id: str | None = None
    entity_id: str | None = None
    webhook_id: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    def message_request(self, sender_name: str | None, default_region: str = "") -> MessageRequest:
        """The request for `MessageIntake`, routed to `sender_name` (None: the default)."""
        return MessageRequest(
            to=platform_number(self.destination, default_region),
            body=self.text,
            template_id=self.template_id,
            template_variables=self.template_variables,
            sender=sender_name,
            type=self.kind,
            params=dict(self.params),
            campaign_id=self.campaign_id,
            entity_id=self.entity_id,
            webhook_id=self.webhook_id,
        )


def _template_variables(raw: Any, path: str, errors: list[FieldError]) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(","))
    if isinstance(raw, list) and all(isinstance(v, str | int | float) for v in raw):
        return tuple(str(v) for v in raw)
    errors.append(FieldError(path, "must be a list of texts (or one comma-separated text)"))
    return ()


def parse_clevertap_message(fields: Mapping[str, Any], *, prefix: str = "") -> CleverTapMessage:
    """Read one message's fields; raise InboundRefused (422) listing every problem."""
    scalars = {k: v for k, v in fields.items() if k not in LIST_FIELDS}
    values, errors = text_fields(scalars, CLEVERTAP_FIELDS, prefix=prefix)
    variables = _template_variables(
        fields.get("template_variables"), f"{prefix}template_variables", errors
    )
    for name, longest in CLEVERTAP_FIELDS.items():
        if len(values.get(name, "")) > longest:
            errors.append(FieldError(prefix + name, f"must be at most {longest} characters"))
    if "destination" not in values:
        errors.append(FieldError(prefix + "destination", "is required: set it to $$To"))
    if "text" not in values and "template_id" not in values:
        errors.append(FieldError(prefix + "text", "is required: set it to $$Body"))
    encoding = values.get("encoding", "AUTO").upper()
    if encoding not in ENCODINGS:
        errors.append(FieldError(prefix + "encoding", f"must be one of {', '.join(ENCODINGS)}"))
    kind = values.get("type", "transactional").lower()
    if kind not in SENDER_TYPES:
        errors.append(FieldError(prefix + "type", f"must be one of {', '.join(SENDER_TYPES)}"))
    if errors:
        raise InboundRefused(422, "the CleverTap message is invalid; see errors", errors)
    params = {"encoding": encoding} if "encoding" in values else {}
    if "mid" in values:
        params[MID_PARAM] = values["mid"]
    return CleverTapMessage(
        destination=values["destination"],
        text=values.get("text"),
        source=values.get("source"),
        mid=values.get("mid"),
        kind=kind,
        template_id=values.get("template_id"),
        template_variables=variables,
        campaign_id=values.get("campaign_id"),
        entity_id=values.get("entity_id"),
        webhook_id=values.get("webhook_id"),
        params=params,
    )


def batch_items(document: Any) -> list[Any]:
    """The messages of a batch body, each with the batch's global fields under its own.

    An item that is not an object is returned as it is, for the caller to reject alone.
    """
    if not isinstance(document, dict):
        raise InboundRefused(
            422, "the body must be an object", [FieldError("body", "not an object")]
        )
    items = document.get(BATCH_KEY)
    if not isinstance(items, list) or not items:
        raise InboundRefused(
            422,
            f"the batch needs a non-empty list `{BATCH_KEY}` (CleverTap: batching key name)",
            [FieldError(BATCH_KEY, "must be a non-empty list of messages")],
        )
    if len(items) > MAX_BATCH:
        raise InboundRefused(
            422,
            f"a batch holds at most {MAX_BATCH} messages",
            [FieldError(BATCH_KEY, f"has {len(items)} messages; at most {MAX_BATCH}")],
        )
    shared = {k: v for k, v in document.items() if k != BATCH_KEY}
    return [{**shared, **item} if isinstance(item, dict) else item for item in items]


def _renamed(errors: Sequence[FieldError], prefix: str = "") -> list[FieldError]:
    return [FieldError(prefix + _FIELD_NAMES.get(e.path, e.path), e.message) for e in errors]


def _error_list(errors: Sequence[FieldError]) -> list[dict[str, str]]:
    return [{"path": e.path, "message": e.message} for e in errors]


async def _check_webhooks(runtime: Runtime, ids: set[str]) -> set[str]:
    """The webhook ids among `ids` that do not exist."""
    return {wid for wid in ids if await get_webhook(runtime.database, wid) is None}


def _unknown_webhook(webhook_id: str) -> str:
    return (
        f"no webhook {webhook_id!r}; create one with format clevertap and CleverTap's "
        "callback URL (POST /v1/webhooks)"
    )


# Idempotency keys of CleverTap mids (the native API's Idempotency-Key is at most 255).
MID_KEY_PREFIX = "clevertap-mid:"
# ... and of batches, by the sha256 of their list of mids.
BATCH_KEY_PREFIX = "clevertap-batch:"
MAX_IDEMPOTENCY_KEY = 255

router = APIRouter(prefix=PREFIX, tags=["clevertap"])

_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["destination"],
    "properties": {
        "source": {"type": "string", "description": "Sender name or sender ID."},
        "destination": {"type": "string", "description": "$$To"},
        "text": {"type": "string", "description": "$$Body"},
        "mid": {"type": "string", "description": "$$MessageID (comes back as `meta`)."},
        "encoding": {"type": "string", "enum": list(ENCODINGS)},
        "template_id": {"type": "string", "description": "$$TemplateID"},
        "template_variables": {"type": "array", "items": {"type": "string"}},
        "campaign_id": {"type": "string", "description": "$$CampaignID"},
        "entity_id": {"type": "string"},
        "type": {"type": "string", "enum": list(SENDER_TYPES)},
        "webhook_id": {"type": "string", "description": "smsrelay webhook for the reports."},
    },
}


@router.post(
    "/messages",
    summary="Send one SMS the way CleverTap's generic provider asks",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _MESSAGE_SCHEMA},
                "application/x-www-form-urlencoded": {"schema": _MESSAGE_SCHEMA},
            },
        }
    },
)
async def clevertap_send(
    request: Request,
    key: ApiKey = Depends(require_api_key),
    runtime: Runtime = Depends(get_runtime),
) -> JSONResponse:
    """Queue one SMS from CleverTap; the answer carries our `id` beside CleverTap's `mid`.

    A request repeating a `mid` already queued (CleverTap retrying after a timeout) is
    answered with the first answer and queues nothing; the same `mid` with different
    content is refused with 409. `mid`s are remembered as idempotency keys are
    (SMSRELAY_IDEMPOTENCY_KEY_HOURS), per API key.
    """
    try:
        # JSON, or CleverTap's "key-value pair" parameters (a form).
        fields = await read_fields(request, max_bytes=MAX_SINGLE_BYTES)
        message = parse_clevertap_message(fields)
    except InboundRefused as exc:
        raise Problem(exc.status, exc.detail, errors=exc.errors) from exc
    if message.webhook_id and await _check_webhooks(runtime, {message.webhook_id}):
        raise Problem(
            422,
            "the CleverTap message is invalid; see errors",
            errors=[FieldError("webhook_id", _unknown_webhook(message.webhook_id))],
        )
    region = runtime.settings.default_region
    chosen = pick_sender(await list_senders(runtime.database), message.source, message.kind)
    # Webhooks were checked above, with CleverTap's own advice.
    intake = MessageIntake(
        runtime.database, runtime.secret_box, default_region=region, check_webhooks=False
    )
    try:
        prepared = await intake.prepare(
            message.message_request(chosen.name if chosen else None, region)
        )
    except IntakeRefused as exc:
        raise Problem(
            422, "the message was not accepted; see errors", errors=_renamed(exc.errors)
        ) from exc
    answer = {
        "status": "success",
        "id": prepared.id,
        "mid": message.mid,
        "to": prepared.to,
        "segments": prepared.segments,
        "encoding": prepared.encoding,
    }
    return await _queue_once(
        runtime,
        [prepared],
        _mid_record(key.id, message.mid, fields, answer),
        answer,
        conflict=f"mid {message.mid!r} was already queued with a different message",
    )


async def _queue_once(
    runtime: Runtime,
    prepared: list[NewMessage],
    record: IdempotencyRecord | None,
    answer: dict[str, Any],
    *,
    conflict: str,
) -> JSONResponse:
    """Queue the messages and answer; with `record`, a repeat gets the first answer again
    (`Idempotent-Replay: true`) and queues nothing, and a conflicting one a 409."""
    try:
        replay = await insert_messages(runtime.database, prepared, idempotency=record)
    except IdempotencyConflict as exc:
        raise Problem(
            409, f"{conflict}; a mid names one message (CleverTap's $$MessageID)"
        ) from exc
    if replay is not None:
        return JSONResponse(
            replay.response, status_code=replay.status_code, headers={"Idempotent-Replay": "true"}
        )
    runtime.notify_dispatcher()
    return JSONResponse(answer)


def _mid_record(
    api_key_id: int, mid: str | None, fields: Mapping[str, Any], answer: dict[str, Any]
) -> IdempotencyRecord | None:
    """The idempotency record that makes a CleverTap `mid` queue at most one message."""
    if not mid:
        return None
    key = MID_KEY_PREFIX + mid
    if len(key) > MAX_IDEMPOTENCY_KEY:
        key = MID_KEY_PREFIX + "sha256:" + hashlib.sha256(mid.encode()).hexdigest()
    return _record(api_key_id, key, fields, answer)


def _record(api_key_id: int, key: str, request: Any, answer: dict[str, Any]) -> IdempotencyRecord:
    """The idempotency record of `key`: the request's hash (its canonical JSON) and answer."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return IdempotencyRecord(
        api_key_id=api_key_id,
        key=key,
        request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
        status_code=200,
        response=answer,
    )


@router.post(
    "/messages/batch",
    summary="Send a batch the way CleverTap's generic provider batches (key `msgs`)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": [BATCH_KEY],
                        "properties": {
                            BATCH_KEY: {
                                "type": "array",
                                "maxItems": MAX_BATCH,
                                "items": _MESSAGE_SCHEMA,
                            }
                        },
                        "additionalProperties": True,
                    }
                }
            },
        }
    },
)
async def clevertap_send_batch(
    request: Request,
    key: ApiKey = Depends(require_api_key),
    runtime: Runtime = Depends(get_runtime),
) -> JSONResponse:
    """Queue up to 1000 messages; each is accepted or rejected alone, by index and `mid`.

    A batch whose every record has a `mid`, repeating a batch of the same `mid`s already
    queued (CleverTap retrying after a timeout), is answered with the first answer and
    queues nothing; the same `mid`s with different content are refused with 409.
    """
    try:
        document = await read_json_body(request, max_bytes=MAX_BATCH_BYTES)
        items = batch_items(document)
    except InboundRefused as exc:
        raise Problem(exc.status, exc.detail, errors=exc.errors) from exc
    rejected: dict[int, dict[str, Any]] = {}
    parsed: list[tuple[int, CleverTapMessage]] = []
    for index, item in enumerate(items):
        prefix = f"{BATCH_KEY}[{index}]."
        if not isinstance(item, dict):
            rejected[index] = {
                "index": index,
                "mid": None,
                "errors": [{"path": f"{BATCH_KEY}[{index}]", "message": "must be an object"}],
            }
            continue
        try:
            parsed.append((index, parse_clevertap_message(item, prefix=prefix)))
        except InboundRefused as exc:
            mid = item.get("mid")
            rejected[index] = {
                "index": index,
                "mid": mid if isinstance(mid, str) else None,
                "errors": _error_list(exc.errors),
            }
    missing = await _check_webhooks(runtime, {m.webhook_id for _, m in parsed if m.webhook_id})
    region = runtime.settings.default_region
    senders = await list_senders(runtime.database)
    requests: list[tuple[int, CleverTapMessage, MessageRequest]] = []
    for index, message in parsed:
        if message.webhook_id in missing:
            rejected[index] = {
                "index": index,
                "mid": message.mid,
                "errors": _error_list(
                    [
                        FieldError(
                            f"{BATCH_KEY}[{index}].webhook_id",
                            _unknown_webhook(message.webhook_id or ""),
                        )
                    ]
                ),
            }
            continue
        chosen = pick_sender(senders, message.source, message.kind)
        requests.append(
            (index, message, message.message_request(chosen.name if chosen else None, region))
        )
    # Webhooks were checked above, with CleverTap's own advice.
    intake = MessageIntake(
        runtime.database, runtime.secret_box, default_region=region, check_webhooks=False
    )
    accepted, refused = await prepare_all(intake, [r for _, _, r in requests])
    for position, errors in refused:
        index, message = requests[position][0], requests[position][1]
        rejected[index] = {
            "index": index,
            "mid": message.mid,
            "errors": _error_list(_renamed(errors, f"{BATCH_KEY}[{index}].")),
        }
    accepted_view = [
        {
            "index": requests[position][0],
            "mid": requests[position][1].mid,
            "id": m.id,
            "segments": m.segments,
        }
        for position, m in accepted
    ]
    answer = {
        "status": "success" if not rejected else ("partial" if accepted else "fail"),
        "accepted": accepted_view,
        "rejected": [rejected[i] for i in sorted(rejected)],
    }
    if not accepted:
        # CleverTap counts a 2xx answer as sent: a batch with nothing queued must not be one.
        raise Problem(422, "no message of the batch was accepted; see rejected", extra=answer)
    return await _queue_once(
        runtime,
        [m for _, m in accepted],
        _batch_record(key.id, items, document, answer),
        answer,
        conflict="a batch of the same mids was already queued with different messages",
    )


def _batch_record(
    api_key_id: int, items: Sequence[Any], document: Any, answer: dict[str, Any]
) -> IdempotencyRecord | None:
    """The idempotency record that makes a repeated batch of `mid`s queue nothing new.

    Only for batches whose every record has a `mid`: without one, two equal batches may
    well be two sends. The key is the list of `mid`s; the request hash the whole document.
    """
    mids = [item.get("mid") if isinstance(item, dict) else None for item in items]
    if not mids or not all(isinstance(mid, str) and mid for mid in mids):
        return None
    listed = hashlib.sha256("\n".join(str(mid) for mid in mids).encode()).hexdigest()
    return _record(api_key_id, BATCH_KEY_PREFIX + listed, document, answer)


__all__ = [
    "CLEVERTAP_FIELDS",
    "MAX_BATCH",
    "MID_PARAM",
    "CleverTapMessage",
    "batch_items",
    "parse_clevertap_message",
    "router",
]
