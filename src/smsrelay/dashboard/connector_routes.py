"""Connector pages: the list with health, the form (create, edit), preview, test send, YAML.

Paths under /connectors/{name}/... always have a third segment, so a connector may be named
`new` or `import` without hiding those pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from smsrelay.connectors.definition import (
    SECRET_MASK,
    ConnectorDefinition,
    load_document,
    parse_definition,
)
from smsrelay.connectors.errors import DefinitionError, FieldError
from smsrelay.dashboard import connector_form as cf
from smsrelay.dashboard.connector_trials import (
    PREVIEW_MESSAGE_ID,
    Sample,
    TrialRefused,
    new_test_message_id,
    render_preview,
    sample_message,
    send_test_message,
)
from smsrelay.dashboard.countries import countries, known_region
from smsrelay.dashboard.delivery_stats import connector_health
from smsrelay.dashboard.pages import Page, PageDep
from smsrelay.store.connectors import (
    StoredConnector,
    delete_connector,
    get_connector,
    list_connectors,
    merge_secrets,
    save_connector,
)
from smsrelay.store.errors import ConnectorInUse
from smsrelay.store.senders import list_senders
from smsrelay.store.timestamps import utc_now

router = APIRouter(prefix="/connectors")
NEW_CALLBACK_URL = "https://smsrelay.example/dlr/(given-when-saved)"


async def _stored_or_404(p: Page, name: str) -> StoredConnector:
    stored = await get_connector(p.runtime.database, p.runtime.secret_box, name)
    if stored is None:
        raise HTTPException(404, f"There is no connector named {name!r}.")
    return stored


@router.get("")
async def connectors_list(p: Page = PageDep) -> HTMLResponse:
    """Every connector with its last 24 hours: sent, delivered, last error."""
    runtime = p.runtime
    stored = await list_connectors(runtime.database, runtime.secret_box)
    health = await connector_health(runtime.database, [c.id for c in stored], now=utc_now())
    senders = await list_senders(runtime.database)
    return p.render(
        "connectors.html",
        nav="connectors",
        connectors=[
            {
                "stored": c,
                "health": health[c.id],
                "counts": health[c.id].counts.as_dict(),
                "url": c.definition.request.url,
                "callback_url": runtime.callback_url(c.dlr_token),
                "senders": [s.name for s in senders if s.connector_id == c.id],
                "tracked": c.definition.delivery is not None,
            }
            for c in stored
        ],
    )


# ---------------------------------------------------------------- the form


async def _default_sender_id(p: Page, connector_id: int | None) -> str:
    senders = await list_senders(p.runtime.database)
    own = [s for s in senders if s.connector_id == connector_id]
    for candidates in (
        [s for s in own if s.is_default],
        own,
        [s for s in senders if s.is_default],
    ):
        if candidates:
            return candidates[0].sender_id
    return ""


async def _form_page(
    p: Page,
    form: cf.ConnectorForm,
    stored: StoredConnector | None,
    errors: Sequence[FieldError] = (),
    *,
    status: int = 200,
) -> HTMLResponse:
    placed = cf.place_errors(errors, cf.control_paths(form))
    settings = p.runtime.settings
    return p.render(
        "connector_form.html",
        status=status,
        nav="connectors",
        form=form,
        stored=stored,
        errors=placed,
        errors_at=cf.errors_by_anchor(placed),
        cid=cf.control_id,
        rid=cf.row_id,
        choices={
            "methods": [(method, method) for method in cf.HTTP_METHODS],
            "phone_formats": cf.PHONE_FORMATS,
            "auth_types": cf.AUTH_TYPES,
            "body_types": cf.BODY_TYPES,
            "verify_types": cf.VERIFY_TYPES,
            "predicate_tests": cf.PREDICATE_TESTS,
        },
        callback_url=p.runtime.callback_url(stored.dlr_token) if stored else None,
        countries=countries(),
        sample_region=known_region(settings.default_region) or "US",
        sample_sender=await _default_sender_id(p, stored.id if stored else None),
        sandbox_url=f"{settings.base_url}/sandbox" if p.runtime.sandbox is not None else None,
    )


def _without_covered(errors: list[FieldError], problems: list[FieldError]) -> list[FieldError]:
    """Definition errors, less those about a field the form already has a problem with."""
    covered = {problem.path for problem in problems}
    return [
        e
        for e in errors
        if not any(e.path == c or e.path.startswith(c + ".") for c in covered)
        and not (e.path.endswith(".json") and "request.body.json" in covered)
    ]


def definition_from_form(
    form: cf.ConnectorForm, stored: StoredConnector | None
) -> ConnectorDefinition:
    """The definition a submitted form describes (stored secrets kept for `***`).

    Raises DefinitionError with every problem: the form's own and the definition's.
    """
    document, problems = cf.document_from_form(form)
    if stored is not None:
        document["name"] = stored.name
        try:
            document["secrets"] = merge_secrets(
                document["secrets"], stored.definition.secrets, replace=True
            )
        except DefinitionError as exc:
            problems += exc.errors
    else:
        unset = [k for k, v in document["secrets"].items() if v == SECRET_MASK]
        problems += [FieldError(f"secrets.{k}", "give the secret's value") for k in unset]
    try:
        definition = parse_definition(document)
    except DefinitionError as exc:
        raise DefinitionError(problems + _without_covered(exc.errors, problems)) from exc
    if problems:
        raise DefinitionError(problems)
    return definition


@router.get("/new")
async def new_connector(p: Page = PageDep) -> HTMLResponse:
    """An empty connector form."""
    return await _form_page(p, cf.blank_form(), None)


@router.post("/new", response_model=None)
async def create_connector(p: Page = PageDep) -> Response:
    """Create a connector from the form, or show the form again with its errors in place."""
    form = cf.form_from_post(await p.form())
    runtime = p.runtime
    try:
        definition = definition_from_form(form, None)
    except DefinitionError as exc:
        return await _form_page(p, form, None, exc.errors, status=422)
    if await get_connector(runtime.database, runtime.secret_box, definition.name) is not None:
        error = FieldError(
            "name", f"a connector named {definition.name!r} exists; choose another name"
        )
        return await _form_page(p, form, None, [error], status=422)
    saved = await save_connector(runtime.database, runtime.secret_box, definition)
    return p.redirect(
        f"/connectors/{saved.name}/edit",
        notice=f"Connector {saved.name} created. Send a test SMS below.",
    )


@router.get("/import")
async def import_form(p: Page = PageDep) -> HTMLResponse:
    """Paste or upload a connector definition (YAML or JSON)."""
    return p.render("connector_import.html", nav="connectors", text="", errors=[])


@router.post("/import", response_model=None)
async def import_definition(p: Page = PageDep) -> Response:
    """Create a connector, or a new version of one, from a YAML or JSON document."""
    data = await p.form()
    text = await p.upload_text("file") or data.raw("text")
    runtime = p.runtime
    try:
        document = load_document(text)
        if not isinstance(document, dict):
            raise DefinitionError([FieldError("", "the document is not a mapping")])
        name = str(document.get("name", ""))
        stored = await get_connector(runtime.database, runtime.secret_box, name) if name else None
        secrets = document.get("secrets") or {}
        if isinstance(secrets, dict):
            given = {str(k): str(v) for k, v in secrets.items()}
            stored_secrets = stored.definition.secrets if stored else {}
            document["secrets"] = merge_secrets(given, stored_secrets, replace=False)
        definition = parse_definition(document)
    except DefinitionError as exc:
        return p.render(
            "connector_import.html", status=422, nav="connectors", text=text, errors=exc.errors
        )
    saved = await save_connector(runtime.database, runtime.secret_box, definition)
    return p.redirect(
        f"/connectors/{saved.name}/edit",
        notice=f"Imported {saved.name} (version {saved.version}).",
    )


@router.post("/preview")
async def preview(p: Page = PageDep) -> HTMLResponse:
    """The request the form's current contents would send for the sample (nothing is sent)."""
    data = await p.form()
    form = cf.form_from_post(data)
    stored = None
    existing = data.get("existing")
    if existing:
        stored = await _stored_or_404(p, existing)
    sample = Sample(
        data.get("sample_region"),
        data.get("sample_number"),
        data.raw("sample_body"),
        data.get("sample_sender") or None,
    )
    try:
        definition = definition_from_form(form, stored)
        message = sample_message(sample, PREVIEW_MESSAGE_ID)
        callback = p.runtime.callback_url(stored.dlr_token) if stored else NEW_CALLBACK_URL
        trace = render_preview(definition, message, callback)
    except (DefinitionError, TrialRefused) as exc:
        placed = cf.place_errors(exc.errors, cf.control_paths(form))
        return p.render("fragments/preview.html", status=422, trace=None, errors=placed)
    return p.render("fragments/preview.html", trace=trace, errors=[])


@router.get("/{name}", response_model=None)
async def connector_home(name: str, p: Page = PageDep) -> RedirectResponse:
    """A connector's page is its form."""
    await _stored_or_404(p, name)
    return p.redirect(f"/connectors/{name}/edit")


@router.get("/{name}/edit")
async def edit_connector(name: str, p: Page = PageDep) -> HTMLResponse:
    """The form filled with the connector's current version (secrets shown as ***)."""
    stored = await _stored_or_404(p, name)
    return await _form_page(p, cf.form_from_document(stored.definition.export()), stored)


@router.post("/{name}/edit", response_model=None)
async def save_edited(name: str, p: Page = PageDep) -> Response:
    """Save the form as a new version, or show it again with its errors in place."""
    stored = await _stored_or_404(p, name)
    form = cf.form_from_post(await p.form())
    form.values["name"] = stored.name
    try:
        definition = definition_from_form(form, stored)
    except DefinitionError as exc:
        return await _form_page(p, form, stored, exc.errors, status=422)
    saved = await save_connector(
        p.runtime.database, p.runtime.secret_box, definition, replace_secrets=True
    )
    notice = (
        f"Saved {saved.name} as version {saved.version}."
        if saved.version != stored.version
        else "Nothing changed."
    )
    return p.redirect(f"/connectors/{saved.name}/edit", notice=notice)


@router.post("/{name}/test")
async def test_send(name: str, p: Page = PageDep) -> HTMLResponse:
    """Send one real SMS through the saved connector; show the request, response, verdict."""
    data = await p.form()
    stored = await _stored_or_404(p, name)
    sample = Sample(
        data.get("sample_region"),
        data.get("sample_number"),
        data.raw("sample_body"),
        data.get("sample_sender") or None,
    )
    try:
        message = sample_message(sample, new_test_message_id())
        result = await send_test_message(p.runtime, stored, message)
    except TrialRefused as exc:
        return p.render("fragments/test_send.html", status=422, result=None, errors=exc.errors)
    return p.render(
        "fragments/test_send.html",
        result=result,
        errors=[],
        to=message.to,
        tracked=stored.definition.delivery is not None,
        connector=stored.name,
    )


@router.get("/{name}/export")
async def export_definition(name: str, p: Page = PageDep) -> Response:
    """The connector as a YAML file (secrets as ***; their values never leave the server)."""
    stored = await _stored_or_404(p, name)
    document: dict[str, Any] = stored.definition.export(mask_secrets=True)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return Response(
        f"# smsrelay connector {stored.name}, version {stored.version}\n{text}",
        media_type="application/yaml; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{stored.name}.yaml"'},
    )


@router.post("/{name}/delete", response_model=None)
async def remove_connector(name: str, p: Page = PageDep) -> Response:
    """Delete a connector (refused while messages wait for it or senders use it)."""
    await p.form()
    try:
        deleted = await delete_connector(p.runtime.database, name)
    except ConnectorInUse as exc:
        return p.redirect(f"/connectors/{name}/edit", notice=f"Not deleted: {exc.reason}.")
    if not deleted:
        raise HTTPException(404, f"There is no connector named {name!r}.")
    return p.redirect("/connectors", notice=f"Deleted connector {name}.")
