"""`/v1/connectors`: manage connector definitions, preview and test them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Response

from smsrelay.api.schemas import SampleMessage
from smsrelay.connectors.definition import SECRET_MASK, ConnectorDefinition, parse_definition
from smsrelay.connectors.errors import FieldError, RenderError
from smsrelay.connectors.exchange import OutboundMessage
from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone
from smsrelay.connectors.presets import (
    UnknownPresetError,
    build_from_preset,
    get_preset,
    list_presets,
)
from smsrelay.connectors.text_encoding import analyse_text
from smsrelay.dispatch.connector_trials import (
    TEST_WAIT_SECONDS,
    preview_trace,
    send_test_message,
)
from smsrelay.http_common import Problem, get_runtime, not_found, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.store.connectors import (
    StoredConnector,
    delete_connector,
    get_connector,
    list_connectors,
    merge_secrets,
    rotate_dlr_token,
    save_connector,
)
from smsrelay.store.errors import ConnectorInUse
from smsrelay.store.messages import new_message_id

router = APIRouter(
    prefix="/v1/connectors", tags=["connectors"], dependencies=[Depends(require_api_key)]
)

DefinitionBody = Body(
    ...,
    description="A connector definition (SPEC §2), as JSON. Secrets given as *** keep their stored value.",
    examples=[
        {
            "name": "acme",
            "request": {
                "url": "https://sms.example.com/send",
                "headers": {"Authorization": "Bearer {{secret.api_key}}"},
                "body": {"json": {"to": "{{to}}", "text": "{{body}}", "ref": "{{message_id}}"}},
            },
            "response": {"message_id": "$.id"},
            "secrets": {"api_key": "…"},
        }
    ],
)


def connector_view(stored: StoredConnector, runtime: Runtime) -> dict[str, Any]:
    """The API's picture of a connector: definition with secrets masked, and its callback URL."""
    return {
        "name": stored.name,
        "version": stored.version,
        "callback_url": runtime.callback_url(stored.dlr_token),
        "created_at": stored.created_at.isoformat(),
        "updated_at": stored.updated_at.isoformat(),
        "definition": stored.definition.export(mask_secrets=True),
    }


async def load_connector(runtime: Runtime, name: str) -> StoredConnector:
    """The stored connector by name, or a 404 problem."""
    stored = await get_connector(runtime.database, runtime.secret_box, name)
    if stored is None:
        raise not_found("connector", name)
    return stored


@router.get("")
async def list_all(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Every connector, by name."""
    stored = await list_connectors(runtime.database, runtime.secret_box)
    return {"data": [connector_view(s, runtime) for s in stored]}


@router.post("", status_code=201)
async def create(
    document: dict[str, Any] = DefinitionBody,
    preset: str | None = Query(
        default=None,
        description="Build from a provider preset: the body is then "
        '{"name": optional, "values": {variable: value}} (see GET /v1/presets).',
    ),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Create a connector from a definition or a preset; 409 if the name is taken."""
    if preset is None:
        refuse_masked_secrets(document.get("secrets"))
    definition = (
        parse_definition(document) if preset is None else definition_from_preset(preset, document)
    )
    if await get_connector(runtime.database, runtime.secret_box, definition.name) is not None:
        raise Problem(
            409,
            f"connector {definition.name!r} exists; PUT /v1/connectors/{definition.name} changes it",
        )
    stored = await save_connector(runtime.database, runtime.secret_box, definition)
    return connector_view(stored, runtime)


def refuse_masked_secrets(given: object) -> None:
    """422 for secrets given as *** where nothing is stored to keep (a new connector).

    An exported definition shows its secrets masked; saved as they are, `***` would be sent
    to the provider as the credential.
    """
    if not isinstance(given, Mapping):
        return  # parse_definition says what is wrong with it
    masked = sorted(str(k) for k, v in given.items() if v == SECRET_MASK)
    if masked:
        raise Problem(
            422,
            "secrets given as *** (masked), but this connector has none stored to keep",
            errors=[
                FieldError(f"secrets.{key}", "is *** (masked); give the real value")
                for key in masked
            ],
        )


def definition_from_preset(preset: str, document: Mapping[str, Any]) -> ConnectorDefinition:
    """A definition built from a preset and `{"name", "values"}`; 404 for an unknown preset."""
    unknown = set(document) - {"name", "values"}
    values = document.get("values", {})
    if unknown or not isinstance(values, Mapping):
        raise Problem(
            422,
            'with ?preset= the body is {"name": optional, "values": {variable: value}}',
            errors=[FieldError(k, "unknown key") for k in sorted(unknown)]
            or [FieldError("values", "must be an object")],
        )
    name = document.get("name")
    try:
        return build_from_preset(
            preset,
            connector_name=str(name) if name is not None else None,
            values={str(k): str(v) for k, v in values.items()},
        )
    except UnknownPresetError as exc:
        raise Problem(404, str(exc), errors=exc.errors) from exc


@router.get("/{name}")
async def show(name: str, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """One connector, secrets masked."""
    return connector_view(await load_connector(runtime, name), runtime)


@router.put("/{name}")
async def replace(
    name: str, document: dict[str, Any] = DefinitionBody, runtime: Runtime = Depends(get_runtime)
) -> dict[str, Any]:
    """Save a new version (or create). Omitted secrets and secrets given as *** are kept."""
    document = dict(document)
    document.setdefault("name", name)
    if document["name"] != name:
        raise Problem(
            422,
            "the name in the body differs from the URL",
            errors=[
                FieldError(
                    "name",
                    f"is {document['name']!r}, the URL says {name!r}; rename is not supported",
                )
            ],
        )
    stored = await get_connector(runtime.database, runtime.secret_box, name)
    given = document.get("secrets") or {}
    if not isinstance(given, Mapping):
        raise Problem(
            422, "secrets must be an object", errors=[FieldError("secrets", "must be an object")]
        )
    if stored is not None:
        document["secrets"] = merge_secrets(
            {str(k): str(v) for k, v in given.items()}, stored.definition.secrets, replace=False
        )
    else:
        refuse_masked_secrets(given)
    definition = parse_definition(document)
    saved = await save_connector(runtime.database, runtime.secret_box, definition)
    return connector_view(saved, runtime)


@router.delete("/{name}", status_code=204)
async def remove(name: str, runtime: Runtime = Depends(get_runtime)) -> Response:
    """Delete a connector (refused while messages wait for it or senders use it)."""
    try:
        deleted = await delete_connector(runtime.database, name)
    except ConnectorInUse as exc:
        raise Problem(409, str(exc)) from exc
    if not deleted:
        raise not_found("connector", name)
    return Response(status_code=204)


@router.post("/{name}/rotate-callback-token")
async def rotate_token(name: str, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Issue a new delivery-report URL; the old one stops working at once."""
    await load_connector(runtime, name)
    token = await rotate_dlr_token(runtime.database, name)
    return {"name": name, "callback_url": runtime.callback_url(token)}


def sample_outbound(
    sample: SampleMessage, *, message_id: str, default_region: str
) -> OutboundMessage:
    """An OutboundMessage from a sample, validating the number (422 naming the field)."""
    try:
        to = normalise_phone(sample.to, default_region or None)
    except InvalidPhoneNumber as exc:
        raise Problem(
            422, "the recipient is not a valid phone number", errors=[FieldError("to", str(exc))]
        ) from exc
    return OutboundMessage(
        message_id=message_id,
        to=to,
        body=sample.body,
        sender=sample.sender,
        template_id=sample.template_id,
        template_variables=tuple(sample.template_variables),
        entity_id=sample.entity_id,
        campaign_id=sample.campaign_id,
        params=dict(sample.params),
    )


def preview_request(
    definition: ConnectorDefinition, message: OutboundMessage, callback_url: str
) -> dict[str, Any]:
    """Render the request for one message, secrets redacted; RenderError becomes a 422."""
    try:
        return preview_trace(definition, message, callback_url)
    except RenderError as exc:
        raise _unrenderable(exc) from exc


def _unrenderable(exc: RenderError) -> Problem:
    return Problem(
        422,
        f"the message cannot be rendered with this connector: {exc.detail}",
        errors=[FieldError("", exc.reason)],
    )


@router.post("/{name}/preview")
async def preview(
    name: str, sample: SampleMessage, runtime: Runtime = Depends(get_runtime)
) -> dict[str, Any]:
    """Render the request a sample message would produce; nothing is sent."""
    stored = await load_connector(runtime, name)
    message = sample_outbound(
        sample,
        message_id="preview0000000000000000000",
        default_region=runtime.settings.default_region,
    )
    text = analyse_text(sample.body or "")
    return {
        "request": preview_request(
            stored.definition, message, runtime.callback_url(stored.dlr_token)
        ),
        "encoding": text.encoding,
        "segments": text.segments,
    }


@router.post(
    "/{name}/test",
    responses={504: {"description": "No dispatcher sent the test message in time"}},
)
async def send_test(
    name: str, sample: SampleMessage, runtime: Runtime = Depends(get_runtime)
) -> dict[str, Any]:
    """Send one real SMS through this connector now; answer with the attempt's full trace.

    The message goes through the outbox like any other (rate limit, retries, delivery
    tracking), so its delivery report is tracked too; the answer waits for its first attempt.
    """
    stored = await load_connector(runtime, name)
    message_id = new_message_id()
    outbound = sample_outbound(
        sample, message_id=message_id, default_region=runtime.settings.default_region
    )
    try:
        result = await send_test_message(
            runtime.database,
            stored,
            outbound,
            callback_url=runtime.callback_url(stored.dlr_token),
            notify=runtime.notify_dispatcher,
        )
    except RenderError as exc:
        raise _unrenderable(exc) from exc
    if result.timed_out:
        raise Problem(
            504,
            f"no dispatcher sent the test message {message_id} within {TEST_WAIT_SECONDS:.0f} s; "
            "is `smsrelay serve` (with its dispatcher) or `smsrelay worker` running?",
            extra={"message_id": message_id},
        )
    return {
        "message_id": message_id,
        "status": result.status,
        "verdict": result.verdict,
        "provider_ids": result.provider_ids,
        "error": result.error,
        "summary": result.summary,
        "elapsed_ms": result.elapsed_ms,
        "request": result.request,
        "response": result.response,
    }


presets_router = APIRouter(
    prefix="/v1/presets", tags=["connectors"], dependencies=[Depends(require_api_key)]
)


@presets_router.get("")
async def presets() -> dict[str, Any]:
    """The provider presets: what each asks for and what to set up at the provider."""
    return {"data": [info.as_dict() for info in list_presets()]}


@presets_router.get("/{name}")
async def preset_detail(name: str) -> dict[str, Any]:
    """One preset, with its variables and the connector definition it produces."""
    try:
        return get_preset(name).as_dict()
    except UnknownPresetError as exc:
        raise Problem(404, str(exc), errors=exc.errors) from exc
