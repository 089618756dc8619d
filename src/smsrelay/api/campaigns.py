"""`/v1/campaigns`: create a campaign from a CSV upload or a list, follow it, pause, resume, cancel.

Creating a campaign checks everything that can be checked before a single message exists
(sender, texts, parameters, quiet hours, the audience's header) and refuses with field
errors; then the audience is read in chunks (a CSV never whole in memory) and staged in the
database, and the answer (202) comes back while a campaign runner queues the messages.
Progress and stats are on `GET /v1/campaigns/{id}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import IO, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.datastructures import UploadFile

from smsrelay.api.stats import group_view
from smsrelay.connectors.errors import FieldError
from smsrelay.dispatch.audience import (
    MAX_BODY_CHARS,
    AudienceChunk,
    AudienceError,
    AudienceLayout,
    CsvAudience,
    PersonalTemplate,
    connector_params,
    list_audience,
    missing_campaign_params,
)
from smsrelay.dispatch.campaign_runner import stage_audience
from smsrelay.dispatch.intake import IntakeRefused, MessageIntake, MessageRequest, unknown_webhook
from smsrelay.dispatch.quiet_hours import (
    DEFAULT_FALLBACK_TIME_ZONE,
    DEFAULT_QUIET_END,
    DEFAULT_QUIET_START,
    QuietHours,
    QuietHoursError,
    parse_clock,
)
from smsrelay.http_common import Problem, get_runtime, not_found, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.settings import Settings
from smsrelay.store.campaigns import (
    CampaignChange,
    CampaignRecord,
    CampaignStatus,
    NewCampaign,
    cancel_campaign,
    create_campaign,
    discard_campaign,
    finish_upload,
    get_campaign,
    list_campaigns,
    pause_campaign,
    resume_campaign,
)
from smsrelay.store.errors import NoSender
from smsrelay.store.messages import new_message_id
from smsrelay.store.senders import Sender, resolve_sender
from smsrelay.store.stats import StatsFilter, message_stats
from smsrelay.store.timestamps import utc_now
from smsrelay.store.webhooks import get_webhook

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1/campaigns", tags=["campaigns"], dependencies=[Depends(require_api_key)]
)

MAX_INLINE_AUDIENCE = 100_000
# How long a request staging an audience may go quiet before a runner fails the campaign.
UPLOAD_LEASE_SECONDS = 300.0
# A valid number that only stands in for "some recipient" when the connector is checked.
_SAMPLE_NUMBER = "+12015550123"


# ---------------------------------------------------------------- request bodies


class QuietHoursIn(BaseModel):
    """Quiet hours in the recipient's local time; messages due inside wait until the end."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    start: str = Field(default="21:00", description="HH:MM, local time of the recipient.")
    end: str = Field(default="09:00", description="HH:MM; before start means overnight.")
    fallback_time_zone: str = Field(
        default=DEFAULT_FALLBACK_TIME_ZONE,
        description="IANA zone for numbers whose zone is unknown.",
    )


class AudienceEntry(BaseModel):
    """One recipient of an inline audience: a number and its personalisation values."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=1, max_length=40)
    params: dict[str, str] = Field(default_factory=dict, max_length=100)


class CampaignIn(BaseModel):
    """A campaign: one text, an audience (CSV part or `audience` list), a schedule."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    sender: str | None = Field(
        default=None,
        max_length=64,
        description="Sender name (decides the connector and whether the campaign is "
        "promotional); default: the default sender of `type`.",
    )
    type: Literal["promotional", "transactional"] = "promotional"
    body: str | None = Field(
        default=None,
        max_length=MAX_BODY_CHARS,
        description="Text; {{params.NAME}} or $$NAME take the recipient's column NAME.",
    )
    template_id: str | None = Field(default=None, max_length=128)
    template_variables: list[str] = Field(default_factory=list, max_length=100)
    entity_id: str | None = Field(default=None, max_length=128)
    webhook_id: str | None = Field(default=None, max_length=64)
    params: dict[str, str] = Field(
        default_factory=dict,
        max_length=100,
        description="Campaign parameters: defaults for every recipient, and the values of "
        "the connector's {{params.NAME}} placeholders no audience column gives.",
    )
    audience: list[AudienceEntry] | None = Field(default=None, max_length=MAX_INLINE_AUDIENCE)
    phone_column: str | None = Field(
        default=None,
        max_length=128,
        description="CSV column of the numbers (default: phone, to or msisdn).",
    )
    default_region: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2}$", description="Region of numbers without +."
    )
    send_at: datetime | None = Field(default=None, description="Start; ISO 8601 with zone.")
    throttle_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    quiet_hours: QuietHoursIn | None = Field(
        default=None,
        description="Default: SMSRELAY_QUIET_HOURS (21:00-09:00) for promotional senders, "
        "none for transactional ones.",
    )

    @model_validator(mode="after")
    def _body_or_template(self) -> CampaignIn:
        if not self.body and not self.template_id:
            raise ValueError("give body or template_id")
        return self


# ---------------------------------------------------------------- views


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def campaign_view(record: CampaignRecord, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """A campaign as the API shows it: definition, progress, and stats when asked for."""
    percent = round(100.0 * record.rows_read / record.rows_total, 1) if record.rows_total else 0.0
    view: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "status": record.status.value,
        "sender": record.sender_name,
        "promotional": record.promotional,
        "body": record.body,
        "template_id": record.template_id,
        "template_variables": list(record.template_variables),
        "entity_id": record.entity_id,
        "webhook_id": record.webhook_id,
        "params": dict(record.params),
        "send_at": _iso(record.send_at),
        "throttle_per_minute": record.throttle_per_minute,
        "quiet_hours": dict(record.quiet_hours) if record.quiet_hours is not None else None,
        "audience": {
            "source": record.audience_source,
            "phone_column": record.phone_column,
            "columns": list(record.audience_columns),
            "default_region": record.default_region,
        },
        "rows_total": record.rows_total,
        "rows_read": record.rows_read,
        "rows_valid": record.rows_valid,
        "rows_invalid": record.rows_invalid,
        "duplicates": record.duplicates,
        "suppressed": record.suppressed,
        "queued": record.queued,
        "expanded": record.expanded,
        "progress_percent": percent,
        "invalid_rows": list(record.invalid_rows),
        "first_send_at": _iso(record.schedule_anchor),
        "last_send_at": _iso(record.last_slot_at),
        "error": record.error,
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
        "paused_at": _iso(record.paused_at),
        "finished_at": _iso(record.finished_at),
    }
    if stats is not None:
        view["stats"] = stats
    return view


async def _stats(runtime: Runtime, campaign_id: str) -> dict[str, Any]:
    report = await message_stats(
        runtime.database, StatsFilter(campaign_id=campaign_id), top_reasons=10
    )
    return group_view(report.totals)


def _notify_runner(runtime: Runtime) -> None:
    runner = runtime.extras.get("campaign_runner")
    if runner is not None:
        runner.notify()


# ---------------------------------------------------------------- creating


def _validation_problem(exc: ValidationError, prefix: str = "") -> Problem:
    errors = []
    for err in exc.errors():
        path = prefix
        for item in err["loc"]:
            path += f"[{item}]" if isinstance(item, int) else ("." if path else "") + str(item)
        errors.append(FieldError(path, str(err["msg"]).removeprefix("Value error, ")))
    return Problem(422, "the campaign is invalid; see errors", errors=errors)


def default_quiet_hours(settings: Settings) -> QuietHours | None:
    """The quiet hours of promotional campaigns that name none (`SMSRELAY_QUIET_HOURS`).

    "" is 21:00-09:00, "off" none, else "HH:MM-HH:MM"; a malformed value is logged and
    read as the default.
    """
    configured = settings.quiet_hours.strip()
    if configured.lower() in ("off", "none"):
        return None
    if configured:
        start, _, end = configured.partition("-")
        try:
            return QuietHours(parse_clock(start), parse_clock(end))
        except QuietHoursError as exc:
            log.warning("SMSRELAY_QUIET_HOURS=%r: %s; using 21:00-09:00", configured, exc)
    return QuietHours(DEFAULT_QUIET_START, DEFAULT_QUIET_END)


def _quiet_hours(spec: CampaignIn, sender: Sender, settings: Settings) -> QuietHours | None:
    if spec.quiet_hours is None:
        return default_quiet_hours(settings) if sender.type == "promotional" else None
    if not spec.quiet_hours.enabled:
        return None
    try:
        return QuietHours(
            parse_clock(spec.quiet_hours.start),
            parse_clock(spec.quiet_hours.end),
            spec.quiet_hours.fallback_time_zone,
        )
    except QuietHoursError as exc:
        raise Problem(
            422, "the campaign is invalid; see errors", errors=[FieldError("quiet_hours", str(exc))]
        ) from exc


def _templates(spec: CampaignIn) -> list[PersonalTemplate]:
    texts = [PersonalTemplate(spec.body, "body")] if spec.body else []
    texts += [
        PersonalTemplate(text, f"template_variables[{i}]")
        for i, text in enumerate(spec.template_variables)
    ]
    return texts


async def _connector_needs(
    intake: MessageIntake, spec: CampaignIn, sender: Sender, supplied: set[str]
) -> tuple[set[str], list[FieldError]]:
    """The connector's parameters missing from `supplied`, and any other refusal of the text.

    One sample message goes through the intake, exactly as every recipient's will.
    """
    sample = MessageRequest(
        to=_SAMPLE_NUMBER,
        body=spec.body,
        template_id=spec.template_id,
        template_variables=tuple(spec.template_variables),
        sender=sender.name,
        type=sender.type,
        params=dict.fromkeys(supplied, "x"),
    )
    await intake.preload_suppressions(())
    try:
        await intake.prepare(sample)
    except IntakeRefused as exc:
        refused = [e for e in exc.errors if e.path != "to"]
        missing = connector_params(e.path for e in refused)
        return missing, [e for e in refused if not e.path.startswith("params.")]
    return set(), []


async def _check(
    runtime: Runtime, spec: CampaignIn, layout: AudienceLayout
) -> tuple[Sender, QuietHours | None]:
    """Everything checkable before staging; raise a Problem listing every refusal."""
    db = runtime.database
    try:
        sender = await resolve_sender(db, spec.sender, spec.type)
    except NoSender as exc:
        raise Problem(
            422, "the campaign is invalid; see errors", errors=[FieldError("sender", str(exc))]
        ) from exc
    errors: list[FieldError] = []
    try:
        templates = _templates(spec)
    except AudienceError as exc:
        errors += exc.errors
        templates = []
    if spec.send_at is not None and spec.send_at.tzinfo is None:
        errors.append(FieldError("send_at", "needs a time zone, e.g. 2026-12-01T09:00:00Z"))
    if spec.webhook_id is not None and await get_webhook(db, spec.webhook_id) is None:
        errors.append(unknown_webhook(spec.webhook_id))
    quiet = _quiet_hours(spec, sender, runtime.settings)
    attributes = set(layout.attributes)
    intake = MessageIntake(
        db,
        runtime.secret_box,
        default_region=spec.default_region or runtime.settings.default_region,
    )
    supplied = attributes | set(spec.params)
    for_connector, refusals = await _connector_needs(intake, spec, sender, supplied)
    errors += refusals
    for name in sorted(for_connector):
        errors.append(
            FieldError(
                f"params.{name}",
                f"the connector of sender {sender.name!r} uses {{{{params.{name}}}}}: give it "
                "in params (a campaign parameter) or as an audience column",
            )
        )
    personal = set().union(*(t.params for t in templates)) if templates else set()
    for name in missing_campaign_params(personal, attributes, spec.params):
        errors.append(
            FieldError(
                f"params.{name}",
                f"the text uses {{{{params.{name}}}}}: add an audience column {name!r} or "
                "give it in params",
            )
        )
    if errors:
        raise Problem(422, "the campaign is invalid; see errors", errors=errors)
    return sender, quiet


async def _create(
    runtime: Runtime,
    spec: CampaignIn,
    layout: AudienceLayout,
    chunks: Iterator[AudienceChunk],
    source: str,
) -> JSONResponse:
    sender, quiet = await _check(runtime, spec, layout)
    db = runtime.database
    now = utc_now()
    owner = f"api:{uuid.uuid4().hex}"
    campaign_id = new_message_id()
    lease = timedelta(seconds=UPLOAD_LEASE_SECONDS)
    await create_campaign(
        db,
        NewCampaign(
            id=campaign_id,
            name=spec.name,
            sender_name=sender.name,
            connector_id=sender.connector_id,
            promotional=sender.type == "promotional",
            audience_source=source,
            audience_columns=layout.columns,
            phone_column=layout.phone_column,
            created_at=now,
            body=spec.body,
            template_id=spec.template_id,
            template_variables=tuple(spec.template_variables),
            entity_id=spec.entity_id,
            webhook_id=spec.webhook_id,
            params=spec.params,
            default_region=spec.default_region.upper() if spec.default_region else None,
            send_at=spec.send_at,
            throttle_per_minute=spec.throttle_per_minute,
            quiet_hours=quiet.to_json() if quiet is not None else None,
        ),
        owner=owner,
        lease_until=now + lease,
    )
    try:
        rows = await stage_audience(
            db, campaign_id, chunks, owner=owner, lease_seconds=UPLOAD_LEASE_SECONDS
        )
    except AudienceError as exc:
        await discard_campaign(db, campaign_id)
        raise Problem(422, "the audience cannot be read; see errors", errors=exc.errors) from exc
    except BaseException:
        await asyncio.shield(discard_campaign(db, campaign_id))
        raise
    if rows == 0:
        await discard_campaign(db, campaign_id)
        raise Problem(
            422,
            "the audience is empty",
            errors=[FieldError("audience", "no recipients: give at least one row")],
        )
    record = await finish_upload(db, campaign_id)
    if record is None:
        raise Problem(409, "the campaign was removed while its audience was uploaded")
    _notify_runner(runtime)
    return JSONResponse(campaign_view(record), status_code=202)


def _csv_chunks(
    file: IO[bytes], phone_column: str | None
) -> tuple[AudienceLayout, Iterator[AudienceChunk]]:
    try:
        audience = CsvAudience(file, phone_column=phone_column)
    except AudienceError as exc:
        raise Problem(422, "the audience cannot be read; see errors", errors=exc.errors) from exc
    return audience.layout, audience.chunks()


_CREATE_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": CampaignIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["campaign", "audience"],
                    "properties": {
                        "campaign": {
                            "type": "string",
                            "description": "The campaign as JSON (CampaignIn, no `audience`).",
                        },
                        "audience": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV, UTF-8, header row first; a phone column "
                            "and attribute columns.",
                        },
                    },
                }
            },
        },
        "required": True,
    }
}


@router.post("", status_code=202, openapi_extra=_CREATE_DOC)
async def create(request: Request, runtime: Runtime = Depends(get_runtime)) -> JSONResponse:
    """Create a campaign from JSON (inline `audience`) or multipart (`campaign` + CSV `audience`).

    Answers 202 once the audience is stored; the campaign is then `expanding` while its
    messages are queued (follow `rows_read` / `queued`), and `running` once all are.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=10)
        try:
            raw = form.get("campaign")
            if not isinstance(raw, str):
                raise Problem(
                    422,
                    "the campaign is invalid; see errors",
                    errors=[
                        FieldError("campaign", "give the campaign as JSON in the part `campaign`")
                    ],
                )
            try:
                spec = CampaignIn.model_validate_json(raw)
            except ValidationError as exc:
                raise _validation_problem(exc) from exc
            upload = form.get("audience")
            if not isinstance(upload, UploadFile):
                raise Problem(
                    422,
                    "the campaign is invalid; see errors",
                    errors=[FieldError("audience", "attach the CSV file as the part `audience`")],
                )
            if spec.audience is not None:
                raise Problem(
                    422,
                    "the campaign is invalid; see errors",
                    errors=[
                        FieldError("audience", "give the audience as a file or a list, not both")
                    ],
                )
            layout, chunks = _csv_chunks(upload.file, spec.phone_column)
            return await _create(runtime, spec, layout, chunks, "csv")
        finally:
            await form.close()
    if content_type not in ("application/json", ""):
        raise Problem(
            415, "send the campaign as application/json, or multipart/form-data with a CSV"
        )
    try:
        payload = json.loads(await request.body())
    except ValueError as exc:
        raise Problem(
            422,
            "the body is not valid JSON",
            errors=[FieldError("body", f"the body is not valid JSON: {exc}")],
        ) from exc
    try:
        spec = CampaignIn.model_validate(payload)
    except ValidationError as exc:
        raise _validation_problem(exc) from exc
    if not spec.audience:
        raise Problem(
            422,
            "the campaign is invalid; see errors",
            errors=[
                FieldError(
                    "audience",
                    "give the audience: a list of {to, params}, or upload a CSV as multipart",
                )
            ],
        )
    layout, chunks = list_audience([e.model_dump() for e in spec.audience])
    return await _create(runtime, spec, layout, chunks, "list")


# ---------------------------------------------------------------- reading and controlling


@router.get("")
async def list_all(
    status: list[CampaignStatus] | None = Query(default=None),
    cursor: str | None = Query(default=None, max_length=26),
    limit: int = Query(default=50, ge=1, le=200),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Campaigns, newest first, with their progress; follow `next_cursor` for more."""
    records, next_cursor = await list_campaigns(
        runtime.database,
        status=[s.value for s in status] if status else None,
        cursor=cursor,
        limit=limit,
    )
    return {"data": [campaign_view(r) for r in records], "next_cursor": next_cursor}


@router.get("/{campaign_id}")
async def show(
    campaign_id: str,
    stats: bool = Query(default=True, description="Include message stats (a GROUP BY)."),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """One campaign: definition, progress, invalid rows, and stats of its messages."""
    record = await get_campaign(runtime.database, campaign_id)
    if record is None:
        raise not_found("campaign", campaign_id)
    return campaign_view(record, await _stats(runtime, campaign_id) if stats else None)


def _changed(change: CampaignChange, campaign_id: str, field: str) -> dict[str, Any]:
    if change.reason == "not_found" or change.campaign is None:
        raise not_found("campaign", campaign_id)
    if not change.changed:
        raise Problem(409, change.reason or "the campaign cannot change now")
    view = campaign_view(change.campaign)
    view[field] = change.messages
    return view


@router.post("/{campaign_id}/pause")
async def pause(campaign_id: str, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Hold every unsent message (`messages_held`); resume sends them on, rescheduled."""
    change = await pause_campaign(runtime.database, campaign_id)
    return _changed(change, campaign_id, "messages_held")


@router.post("/{campaign_id}/resume")
async def resume(campaign_id: str, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Resume a paused campaign: unsent messages are rescheduled from now (throttle, quiet hours)."""
    change = await resume_campaign(runtime.database, campaign_id)
    view = _changed(change, campaign_id, "messages_held")
    view.pop("messages_held", None)
    _notify_runner(runtime)
    return view


@router.post("/{campaign_id}/cancel")
async def cancel(campaign_id: str, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Cancel a campaign: every unsent message becomes `canceled` (`messages_canceled`)."""
    change = await cancel_campaign(runtime.database, campaign_id)
    return _changed(change, campaign_id, "messages_canceled")
