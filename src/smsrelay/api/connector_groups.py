"""`/v1/connector-groups`: ordered connectors behind one sender, for failover.

A sender points to a group by naming it as its `connector` (`POST /v1/senders`,
`PATCH /v1/senders/{name}`). A message that fails on one connector of the group
(permanently rejected, out of retries, not renderable for it, or held too long for
failing credentials) is queued again for the next connector, with its attempts
restarted; only when the last connector fails is the message `failed`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from smsrelay.connectors.errors import FieldError
from smsrelay.http_common import Problem, get_runtime, not_found, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.store.connector_groups import (
    MAX_MEMBERS,
    ConnectorGroup,
    ConnectorGroupError,
    ConnectorGroupInUse,
    delete_connector_group,
    get_connector_group,
    list_connector_groups,
    save_connector_group,
)

router = APIRouter(
    prefix="/v1/connector-groups",
    tags=["connector groups"],
    dependencies=[Depends(require_api_key)],
)


class ConnectorGroupIn(BaseModel):
    """A connector group: its name and its connectors in failover order."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, examples=["india-otp"])
    connectors: list[str] = Field(
        min_length=1,
        max_length=MAX_MEMBERS,
        description="Connector names, first tried first.",
        examples=[["gupshup", "msg91"]],
    )


class ConnectorGroupMembers(BaseModel):
    """A group's connectors, replacing the old list (`PUT`)."""

    model_config = ConfigDict(extra="forbid")

    connectors: list[str] = Field(min_length=1, max_length=MAX_MEMBERS)


def group_view(group: ConnectorGroup) -> dict[str, Any]:
    """A connector group as the API shows it."""
    return {
        "name": group.name,
        "connectors": list(group.connectors),
        "senders": list(group.senders),
        "created_at": group.created_at.isoformat(),
        "updated_at": group.updated_at.isoformat(),
    }


def _refused(exc: ConnectorGroupError) -> Problem:
    status = 409 if exc.field == "name" and "named" in exc.message else 422
    return Problem(status, str(exc), errors=[FieldError(exc.field, exc.message)])


@router.get("")
async def list_all(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Every connector group, by name."""
    return {"data": [group_view(g) for g in await list_connector_groups(runtime.database)]}


@router.post("", status_code=201)
async def create(body: ConnectorGroupIn, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Create a group; senders then name it as their `connector`."""
    if await get_connector_group(runtime.database, body.name) is not None:
        raise Problem(
            409,
            f"a connector group named {body.name!r} already exists; PUT it to change it",
            errors=[FieldError("name", "already exists")],
        )
    try:
        group, _ = await save_connector_group(runtime.database, body.name, body.connectors)
    except ConnectorGroupError as exc:
        raise _refused(exc) from exc
    return group_view(group)


@router.get("/{name}")
async def show(name: str, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """One connector group."""
    group = await get_connector_group(runtime.database, name)
    if group is None:
        raise not_found("connector group", name)
    return group_view(group)


@router.put("/{name}")
async def replace(
    name: str, body: ConnectorGroupMembers, runtime: Runtime = Depends(get_runtime)
) -> JSONResponse:
    """Create a group or replace its connectors; its senders move to the new first one."""
    try:
        group, created = await save_connector_group(runtime.database, name, body.connectors)
    except ConnectorGroupError as exc:
        raise _refused(exc) from exc
    return JSONResponse(group_view(group), status_code=201 if created else 200)


@router.delete("/{name}", status_code=204)
async def remove(name: str, runtime: Runtime = Depends(get_runtime)) -> Response:
    """Delete a group no sender points to."""
    try:
        deleted = await delete_connector_group(runtime.database, name)
    except ConnectorGroupInUse as exc:
        raise Problem(409, str(exc)) from exc
    if not deleted:
        raise not_found("connector group", name)
    return Response(status_code=204)
