"""Create a connector from a provider preset: pick the provider, fill in what it asks for.

The pages sit under /connectors/new/from-preset, a path no connector page can take (those
are /connectors/{name}/{page}). The values go through `build_from_preset`, exactly as
`smsrelay connectors apply --preset` and the API's presets do, so a preset-made connector
is an ordinary one: the form edits it afterwards. A field left empty takes the preset's
default (which may be a placeholder such as `{{sender}}`); typed values are literal text.
Secrets typed into the form are stored encrypted and never written back into a page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

from smsrelay.connectors.errors import DefinitionError, FieldError
from smsrelay.connectors.presets import (
    PresetInfo,
    UnknownPresetError,
    build_from_preset,
    get_preset,
    list_presets,
)
from smsrelay.dashboard.pages import Page, PageDep
from smsrelay.store.connectors import get_connector, save_connector

router = APIRouter(prefix="/connectors/new/from-preset")
NAME_FIELD = "connector_name"


@dataclass(frozen=True, slots=True)
class PresetField:
    """One input of the preset form: a variable with what was typed and its errors."""

    name: str
    control: str  # the input's name and id (`var-<name>`)
    label: str
    description: str
    secret: bool
    required: bool
    default: str
    choices: tuple[str, ...]
    value: str  # never a secret
    errors: tuple[str, ...]


def _preset_or_404(name: str) -> PresetInfo:
    try:
        return get_preset(name)
    except UnknownPresetError as exc:
        raise HTTPException(404, str(exc)) from exc


def _control(variable: str) -> str:
    return f"var-{variable}"


def _label(variable: str) -> str:
    return variable.replace("_", " ").replace("-", " ").capitalize()


def _fields(
    info: PresetInfo, typed: Mapping[str, str], errors: Sequence[FieldError]
) -> list[PresetField]:
    fields = []
    for variable in info.variables:
        placed = tuple(e.message for e in errors if e.path.split(".")[0] == variable.name)
        fields.append(
            PresetField(
                name=variable.name,
                control=_control(variable.name),
                label=_label(variable.name),
                description=variable.description,
                secret=variable.secret,
                required=variable.required,
                default=variable.default or "",
                choices=variable.choices,
                value="" if variable.secret else typed.get(variable.name, ""),
                errors=placed,
            )
        )
    return fields


def _render(
    p: Page,
    info: PresetInfo,
    *,
    connector_name: str,
    typed: Mapping[str, str] | None = None,
    errors: Sequence[FieldError] = (),
    status: int = 200,
) -> HTMLResponse:
    variables = {v.name for v in info.variables}
    return p.render(
        "connector_preset.html",
        status=status,
        nav="connectors",
        preset=info,
        connector_name=connector_name,
        name_errors=[e.message for e in errors if e.path in ("", "name", NAME_FIELD)],
        other_errors=[
            e
            for e in errors
            if e.path not in ("", "name", NAME_FIELD) and e.path.split(".")[0] not in variables
        ],
        errors=list(errors),
        fields=_fields(info, typed or {}, errors),
    )


@router.get("")
async def preset_list(p: Page = PageDep) -> HTMLResponse:
    """Every provider preset, to start a connector from one."""
    return p.render("connector_presets.html", nav="connectors", presets=list_presets())


@router.get("/{preset}")
async def preset_form(preset: str, p: Page = PageDep) -> HTMLResponse:
    """What the preset asks for, and what to set up at the provider."""
    info = _preset_or_404(preset)
    return _render(p, info, connector_name=info.connector_name)


@router.post("/{preset}", response_model=None)
async def create_from_preset(preset: str, p: Page = PageDep) -> Response:
    """Create the connector, or show the form again with its errors beside the fields."""
    info = _preset_or_404(preset)
    data = await p.form()
    connector_name = data.get(NAME_FIELD) or info.connector_name
    typed: dict[str, str] = {}
    for variable in info.variables:
        value = (
            data.get(_control(variable.name))
            if variable.secret
            else data.raw(_control(variable.name))
        )
        # An empty field, or the default chosen from a list, takes the preset's default.
        if value.strip() and not (variable.choices and value == variable.default):
            typed[variable.name] = value.strip() if variable.kind != "text" else value
    runtime = p.runtime
    try:
        definition = build_from_preset(info.name, connector_name=connector_name, values=typed)
    except DefinitionError as exc:
        return _render(
            p, info, connector_name=connector_name, typed=typed, errors=exc.errors, status=422
        )
    if await get_connector(runtime.database, runtime.secret_box, definition.name) is not None:
        error = FieldError(
            NAME_FIELD, f"a connector named {definition.name!r} exists; choose another name"
        )
        return _render(
            p, info, connector_name=connector_name, typed=typed, errors=[error], status=422
        )
    saved = await save_connector(runtime.database, runtime.secret_box, definition)
    return p.redirect(
        f"/connectors/{saved.name}/edit",
        notice=f"Connector {saved.name} created from the {info.title} preset. "
        "Send a test SMS below; the delivery tracking page has its callback URL.",
    )
