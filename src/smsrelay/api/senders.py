"""`/v1/senders`: named sending identities, one default per type."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from smsrelay.api.schemas import SenderIn, SenderPatch
from smsrelay.connectors.errors import FieldError
from smsrelay.http_common import Problem, get_runtime, not_found, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.store.errors import ConnectorNotFound, SenderError
from smsrelay.store.senders import (
    Sender,
    create_sender,
    delete_sender,
    get_sender,
    list_senders,
    update_sender,
)

router = APIRouter(prefix="/v1/senders", tags=["senders"], dependencies=[Depends(require_api_key)])


def sender_view(sender: Sender) -> dict[str, Any]:
    """A sender as the API shows it."""
    return {
        "name": sender.name,
        "connector": sender.connector_name,
        "sender_id": sender.sender_id,
        "type": sender.type,
        "default": sender.is_default,
        "created_at": sender.created_at.isoformat(),
    }


def _refused(exc: SenderError | ConnectorNotFound) -> Problem:
    if isinstance(exc, ConnectorNotFound):
        return Problem(422, str(exc), errors=[FieldError("connector", str(exc))])
    status = 409 if "already exists" in exc.message or "just created" in exc.message else 422
    return Problem(status, str(exc), errors=[FieldError(exc.field, exc.message)])


@router.get("")
async def list_all(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Every sender, by name."""
    return {"data": [sender_view(s) for s in await list_senders(runtime.database)]}


@router.post("", status_code=201)
async def create(body: SenderIn, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Create a sender; `default: true` replaces the previous default of its type."""
    try:
        sender = await create_sender(
            runtime.database,
            name=body.name,
            connector=body.connector,
            sender_id=body.sender_id,
            type=body.type,
            is_default=body.default,
        )
    except (SenderError, ConnectorNotFound) as exc:
        raise _refused(exc) from exc
    return sender_view(sender)


@router.get("/{name}")
async def show(name: str, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """One sender."""
    sender = await get_sender(runtime.database, name)
    if sender is None:
        raise not_found("sender", name)
    return sender_view(sender)


@router.patch("/{name}")
async def change(
    name: str, body: SenderPatch, runtime: Runtime = Depends(get_runtime)
) -> dict[str, Any]:
    """Change a sender's connector, sender ID, type or default flag."""
    if await get_sender(runtime.database, name) is None:
        raise not_found("sender", name)
    try:
        sender = await update_sender(
            runtime.database,
            name,
            connector=body.connector,
            sender_id=body.sender_id,
            type=body.type,
            is_default=body.default,
        )
    except (SenderError, ConnectorNotFound) as exc:
        raise _refused(exc) from exc
    if sender is None:
        raise not_found("sender", name)
    return sender_view(sender)


@router.delete("/{name}", status_code=204)
async def remove(name: str, runtime: Runtime = Depends(get_runtime)) -> Response:
    """Delete a sender (its past messages keep its name)."""
    if not await delete_sender(runtime.database, name):
        raise not_found("sender", name)
    return Response(status_code=204)
