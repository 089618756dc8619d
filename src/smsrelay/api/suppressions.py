"""`/v1/suppressions`: numbers kept from promotional sends (docs/stats.md, Suppression)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from smsrelay.connectors.errors import FieldError
from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone
from smsrelay.http_common import Problem, get_runtime, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.store.suppression import (
    SuppressionRecord,
    list_suppressions,
    release_number,
    suppress_number,
)

router = APIRouter(
    prefix="/v1/suppressions", tags=["suppressions"], dependencies=[Depends(require_api_key)]
)


class SuppressionIn(BaseModel):
    """A number to suppress by hand."""

    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=1, max_length=40, examples=["+15005550001"])
    reason: str | None = Field(default=None, max_length=500)


def suppression_view(record: SuppressionRecord) -> dict[str, Any]:
    """A suppressed number as the API shows it."""
    return {
        "number": record.number,
        "source": record.source,
        "reason": record.reason,
        "consecutive_failures": record.consecutive_failures,
        "suppressed_at": record.suppressed_at.isoformat() if record.suppressed_at else None,
        "updated_at": record.updated_at.isoformat(),
    }


def _number(raw: str, runtime: Runtime, path: str) -> str:
    try:
        return normalise_phone(raw, runtime.settings.default_region or None)
    except InvalidPhoneNumber as exc:
        raise Problem(
            422, f"{raw!r} is not a phone number", errors=[FieldError(path, str(exc))]
        ) from exc


@router.get("")
async def list_all(
    after: str | None = Query(default=None, max_length=40, description="Cursor: last number seen."),
    limit: int = Query(default=100, ge=1, le=1000),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Suppressed numbers in number order; follow `next_cursor` (as `after`) for more."""
    records, next_cursor = await list_suppressions(runtime.database, after=after, limit=limit)
    return {"data": [suppression_view(r) for r in records], "next_cursor": next_cursor}


@router.post("", status_code=201, responses={200: {"description": "Already suppressed"}})
async def add(body: SuppressionIn, runtime: Runtime = Depends(get_runtime)) -> JSONResponse:
    """Suppress a number by hand (201; 200 when it already was suppressed)."""
    number = _number(body.number, runtime, "number")
    record, created = await suppress_number(runtime.database, number, reason=body.reason)
    return JSONResponse(suppression_view(record), status_code=201 if created else 200)


@router.delete("/{number}", status_code=204)
async def release(number: str, runtime: Runtime = Depends(get_runtime)) -> Response:
    """Lift a suppression; the number's failure count starts again from zero."""
    normalised = _number(number, runtime, "path.number")
    if not await release_number(runtime.database, normalised):
        raise Problem(404, f"{normalised} is not suppressed")
    return Response(status_code=204)
