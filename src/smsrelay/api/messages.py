"""`/v1/messages`: queue single messages and batches, read them, cancel them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from smsrelay.api.schemas import MessageBatchIn, MessageIn
from smsrelay.connectors.errors import FieldError
from smsrelay.dispatch.intake import AskedMessage, IntakeRefused, MessageIntake, prepare_all
from smsrelay.http_common import Problem, get_runtime, not_found, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.store.api_keys import ApiKey
from smsrelay.store.errors import IdempotencyConflict
from smsrelay.store.idempotency import IdempotencyRecord
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.messages import (
    InvalidCursor,
    MessageRecord,
    NewMessage,
    cancel_message,
    get_message,
    insert_messages,
    list_messages,
)

router = APIRouter(prefix="/v1/messages", tags=["messages"])
_message_adapter = TypeAdapter(MessageIn)
_messages_adapter = TypeAdapter(list[MessageIn])


def _accepted_view(message: NewMessage, connector: str) -> dict[str, Any]:
    return {
        "id": message.id,
        "status": MessageStatus.QUEUED.value,
        "to": message.to,
        "sender": message.sender_name,
        "connector": connector,
        "segments": message.segments,
        "encoding": message.encoding,
        "send_at": message.send_at.isoformat() if message.send_at else None,
    }


def _validate_items(
    items: list[dict[str, object]],
) -> tuple[Sequence[int], list[AskedMessage], list[dict[str, Any]]]:
    """Each item as a MessageIn (by its index in the batch), and the rejections of the rest.

    A whole valid list is validated in one call; only a list with a bad item is gone
    through item by item, to reject each alone with its own errors.
    """
    try:
        return range(len(items)), list(_messages_adapter.validate_python(items)), []
    except ValidationError:
        pass
    positions: list[int] = []
    requests: list[AskedMessage] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        try:
            parsed = _message_adapter.validate_python(raw)
        except ValidationError as exc:
            problems = [
                {
                    "path": ".".join(str(p) for p in err["loc"]) or "",
                    "message": err["msg"].removeprefix("Value error, "),
                }
                for err in exc.errors()
            ]
            rejected.append({"index": index, "errors": problems})
            continue
        positions.append(index)
        requests.append(parsed)
    return positions, requests, rejected


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def message_view(record: MessageRecord, *, history: bool) -> dict[str, Any]:
    """A message as the API shows it (history only for the single-message view)."""
    view: dict[str, Any] = {
        "id": record.id,
        "status": record.status.value,
        "to": record.to,
        "body": record.body,
        "sender": record.sender_name,
        "sender_id": record.sender_id,
        "connector": record.connector_name,
        "template_id": record.template_id,
        "template_variables": list(record.template_variables),
        "params": dict(record.params),
        "campaign_id": record.campaign_id,
        "entity_id": record.entity_id,
        "webhook_id": record.webhook_id,
        "segments": record.segments,
        "encoding": record.encoding,
        "attempts": record.attempts,
        "provider_ids": list(record.provider_ids),
        "failure_reason": record.failure_reason,
        "send_at": _iso(record.send_at),
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
        "sent_at": _iso(record.sent_at),
        "final_at": _iso(record.final_at),
    }
    if history:
        queued = {
            "at": _iso(record.created_at),
            "kind": "status",
            "status": "queued",
            "detail": None,
        }
        view["history"] = [queued] + [
            {"at": _iso(e.at), "kind": e.kind, "status": e.status, "detail": e.detail}
            for e in record.events
        ]
    return view


def _request_hash(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _queue(
    runtime: Runtime,
    key: ApiKey,
    messages: list[NewMessage],
    answer: dict[str, Any],
    idempotency_key: str | None,
    payload: Callable[[], Any],
) -> JSONResponse:
    record = None
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= 255:
            raise Problem(
                422,
                "Idempotency-Key must be 1 to 255 characters",
                errors=[FieldError("header.Idempotency-Key", "must be 1 to 255 characters")],
            )
        record = IdempotencyRecord(
            api_key_id=key.id,
            key=idempotency_key,
            request_hash=_request_hash(payload()),
            status_code=202,
            response=answer,
        )
    try:
        replay = await insert_messages(runtime.database, messages, idempotency=record)
    except IdempotencyConflict as exc:
        raise Problem(409, str(exc)) from exc
    if replay is not None:
        return JSONResponse(
            replay.response, status_code=replay.status_code, headers={"Idempotent-Replay": "true"}
        )
    if messages:
        runtime.notify_dispatcher()
    return JSONResponse(answer, status_code=202)


@router.post("", status_code=202, responses={202: {"description": "Queued"}})
async def send_message(
    message: MessageIn,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
    key: ApiKey = Depends(require_api_key),
    runtime: Runtime = Depends(get_runtime),
) -> JSONResponse:
    """Queue one message; a repeated Idempotency-Key returns the first answer."""
    intake = MessageIntake(
        runtime.database, runtime.secret_box, default_region=runtime.settings.default_region
    )
    try:
        prepared = await intake.prepare(message)
    except IntakeRefused as exc:
        raise Problem(422, "the message was not accepted; see errors", errors=exc.errors) from exc
    answer = _accepted_view(prepared, await intake.connector_name(prepared.connector_id))
    return await _queue(
        runtime, key, [prepared], answer, idempotency_key, lambda: message.model_dump(mode="json")
    )


@router.post("/batch", status_code=202)
async def send_batch(
    batch: MessageBatchIn,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
    key: ApiKey = Depends(require_api_key),
    runtime: Runtime = Depends(get_runtime),
) -> JSONResponse:
    """Queue up to 10 000 messages; the answer lists accepted ids and per-index rejections."""
    positions, requests, rejected = _validate_items(batch.messages)
    intake = MessageIntake(
        runtime.database, runtime.secret_box, default_region=runtime.settings.default_region
    )
    accepted, refused = await prepare_all(intake, requests)
    for position, errors in refused:
        rejected.append(
            {
                "index": positions[position],
                "errors": [{"path": e.path, "message": e.message} for e in errors],
            }
        )
    rejected.sort(key=lambda r: int(r["index"]))
    answer = {
        "accepted": [
            {"index": positions[position], "id": m.id, "segments": m.segments}
            for position, m in accepted
        ],
        "rejected": rejected,
    }
    return await _queue(
        runtime,
        key,
        [m for _, m in accepted],
        answer,
        idempotency_key,
        # Only hashed with an Idempotency-Key: dumping 10 000 messages is not free.
        lambda: batch.model_dump(mode="json"),
    )


@router.get("/{message_id}")
async def show_message(
    message_id: str, _: ApiKey = Depends(require_api_key), runtime: Runtime = Depends(get_runtime)
) -> dict[str, Any]:
    """One message with its whole history (attempts, status changes, delivery reports)."""
    record = await get_message(runtime.database, message_id)
    if record is None:
        raise not_found("message", message_id)
    return message_view(record, history=True)


@router.get("")
async def list_all(
    status: list[MessageStatus] | None = Query(default=None),
    to: str | None = None,
    connector: str | None = None,
    campaign_id: str | None = None,
    sender: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: int = Query(default=50, ge=1, le=1000),
    _: ApiKey = Depends(require_api_key),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Messages, newest first, filtered; follow `next_cursor` for the next page."""
    try:
        records, next_cursor = await list_messages(
            runtime.database,
            status=[s.value for s in status] if status else None,
            to=to,
            connector=connector,
            campaign_id=campaign_id,
            sender=sender,
            created_after=created_after,
            created_before=created_before,
            cursor=cursor,
            limit=limit,
        )
    except InvalidCursor as exc:
        raise Problem(422, str(exc), errors=[FieldError("query.cursor", str(exc))]) from exc
    return {"data": [message_view(r, history=False) for r in records], "next_cursor": next_cursor}


@router.post("/{message_id}/cancel")
async def cancel(
    message_id: str, _: ApiKey = Depends(require_api_key), runtime: Runtime = Depends(get_runtime)
) -> dict[str, Any]:
    """Cancel a message that has not gone to the provider yet."""
    result = await cancel_message(runtime.database, message_id)
    if result.reason == "not_found":
        raise not_found("message", message_id)
    if not result.canceled:
        raise Problem(409, result.reason or "the message cannot be canceled")
    return {"id": message_id, "status": MessageStatus.CANCELED.value}
