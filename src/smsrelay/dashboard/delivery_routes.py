"""The delivery tracking page of a connector: its callback URL, recent callbacks, the mapping."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

from smsrelay.connectors.definition import parse_definition
from smsrelay.connectors.errors import DefinitionError, FieldError
from smsrelay.dashboard import delivery_tracking as dt
from smsrelay.dashboard.pages import Page, PageDep
from smsrelay.store.connectors import StoredConnector, get_connector, save_connector
from smsrelay.store.delivery_reports import get_callback, list_callbacks
from smsrelay.store.timestamps import utc_now

router = APIRouter(prefix="/connectors")
RECENT = 15


async def _stored_or_404(p: Page, name: str) -> StoredConnector:
    stored = await get_connector(p.runtime.database, p.runtime.secret_box, name)
    if stored is None:
        raise HTTPException(404, f"There is no connector named {name!r}.")
    return stored


async def _readings(p: Page, stored: StoredConnector) -> list[dt.CallbackReading]:
    callbacks = await list_callbacks(p.runtime.database, stored.id, limit=RECENT)
    return [dt.read_callback(c, stored.definition.delivery) for c in callbacks]


async def _page(
    p: Page,
    stored: StoredConnector,
    *,
    callback_id: int | None,
    choice: dict[str, Any] | None = None,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> HTMLResponse:
    readings = await _readings(p, stored)
    sample = None
    if callback_id is not None:
        chosen = await get_callback(p.runtime.database, callback_id)
        if chosen is None or chosen.connector_id != stored.id:
            raise HTTPException(404, f"{stored.name} has no stored callback {callback_id}.")
        sample = dt.read_callback(chosen, stored.definition.delivery)
    elif readings:
        sample = next((r for r in readings if r.document is not None), readings[0])
    current = stored.definition.delivery
    proposal = choice or dt.proposed_mapping(
        sample.document if sample is not None else None, current
    )
    fields: list[tuple[str, Any]] = []
    fields_error = None
    if sample is not None and sample.document is not None:
        document = sample.document
        decode = proposal.get("decode") or []
        if current is None and decode:
            document = dt.decoded_document(sample.callback, decode) or document
        fields, fields_error = dt.report_fields(document, str(proposal.get("reports") or "$"))
    by_path = {e.path: e.message for e in errors or []}
    return p.render(
        "connector_delivery.html",
        status=status,
        nav="connectors",
        stored=stored,
        callback_url=p.runtime.callback_url(stored.dlr_token),
        readings=readings,
        sample=sample,
        fields=fields,
        field_values={path: value for path, value in fields},
        fields_error=fields_error,
        proposal=proposal,
        roles=dt.FIELD_ROLES,
        options={
            role: dt.field_options(fields, [str(proposal.get(role) or "")])
            for role, _, _ in dt.FIELD_ROLES
        },
        errors=errors or [],
        error_at=by_path,
        unplaced=[e for e in errors or [] if not _placed(e.path)],
    )


def _placed(path: str) -> bool:
    shown = {f"delivery.{role}" for role, _, _ in dt.FIELD_ROLES}
    shown |= {f"delivery.{name}" for name in (*dt.VALUE_LISTS, "reports", "match", "decode")}
    return any(path == p or path.startswith(p + "[") for p in shown)


@router.get("/{name}/delivery")
async def delivery_page(name: str, p: Page = PageDep, callback: int | None = None) -> HTMLResponse:
    """Callback URL, recent callbacks, and the mapping chosen from a received one."""
    stored = await _stored_or_404(p, name)
    return await _page(p, stored, callback_id=callback)


@router.get("/{name}/delivery/callbacks")
async def recent_callbacks(name: str, p: Page = PageDep) -> HTMLResponse:
    """The recent-callbacks list alone (the page refreshes it while open)."""
    stored = await _stored_or_404(p, name)
    return p.render("fragments/callbacks.html", stored=stored, readings=await _readings(p, stored))


@router.post("/{name}/delivery", response_model=None)
async def save_mapping(name: str, p: Page = PageDep) -> Response:
    """Save the chosen mapping as a new connector version; map earlier callbacks again."""
    data = await p.form()
    stored = await _stored_or_404(p, name)
    choice: dict[str, Any] = {
        "reports": data.get("reports") or "$",
        "decode": dt.split_values(data.get("decode")),
        "match": data.get("match") or "provider_id",
        **{role: data.get(role) for role, _, _ in dt.FIELD_ROLES},
        **{key: dt.split_values(data.get(key)) for key in dt.VALUE_LISTS},
    }
    document = stored.definition.export(mask_secrets=False)
    document["delivery"] = dt.mapping_from_choice(stored.definition.delivery, choice)
    callback_id = int(data.get("callback")) if data.get("callback").isdigit() else None
    try:
        definition = parse_definition(document)
    except DefinitionError as exc:
        return await _page(
            p, stored, callback_id=callback_id, choice=choice, errors=exc.errors, status=422
        )
    runtime = p.runtime
    saved = await save_connector(runtime.database, runtime.secret_box, definition)
    notice = f"Delivery mapping saved (version {saved.version})."
    if data.get("remap"):
        count = await dt.requeue_unmapped_callbacks(runtime.database, saved.id, utc_now())
        mapper = runtime.extras.get("delivery_mapper")
        if mapper is not None:
            mapper.notify()
        if count:
            notice += f" {count} earlier callback(s) are being mapped again."
    return p.redirect(f"/connectors/{name}/delivery", notice=notice)
