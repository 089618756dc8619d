"""Campaigns: the definition, the staged audience, progress, pause/resume/cancel, runner leases.

A campaign is created `uploading` while the API stores its audience in parts
(`stage_audience_part`), becomes `expanding` when the upload is complete, and a campaign
runner (any process) leases it and turns each part into queued messages with
`record_chunk`: the messages, the progress counters, the schedule so far and the consumed
part change in one transaction, so a runner that dies loses nothing and repeats nothing.
Once every part is queued the campaign is `running`, and `completed` when no message is
left to send.

Pausing holds the unsent messages (`next_attempt_at` NULL: the dispatcher never claims
them); resuming marks the campaign for rescheduling from the moment of the resume, which
the runner does (`unsent_page` / `record_reschedule` / `finish_reschedule`). Canceling
cancels every unsent message, with a status event each, in one transaction.
"""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, exists, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.store.database import AnyRow, Database
from smsrelay.store.lifecycle import CANCELABLE, MessageStatus
from smsrelay.store.messages import NewMessage, message_row
from smsrelay.store.tables import campaign_audience_parts, campaigns, message_events, messages
from smsrelay.store.timestamps import utc_now

INSERT_CHUNK = 1000
# Invalid rows kept with the campaign (all of them are counted).
MAX_INVALID_KEPT = 100
MAX_PAGE = 200
_UNSENT = (
    MessageStatus.QUEUED.value,
    MessageStatus.SENDING.value,
    MessageStatus.DISPATCH_ERROR.value,
)


class CampaignStatus(enum.StrEnum):
    """Where a campaign is in its life."""

    UPLOADING = "uploading"
    EXPANDING = "expanding"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELED = "canceled"
    FAILED = "failed"


C = CampaignStatus
# Statuses in which a campaign still sends (or will): pause and cancel apply.
ACTIVE: frozenset[CampaignStatus] = frozenset({C.EXPANDING, C.RUNNING, C.PAUSED})
FINISHED: frozenset[CampaignStatus] = frozenset({C.COMPLETED, C.CANCELED, C.FAILED})


@dataclass(frozen=True, slots=True)
class NewCampaign:
    """A campaign to create; the audience is staged separately."""

    id: str
    name: str
    sender_name: str
    connector_id: int
    promotional: bool
    audience_source: str  # csv | list
    audience_columns: tuple[str, ...]
    phone_column: str
    created_at: datetime
    body: str | None = None
    template_id: str | None = None
    template_variables: tuple[str, ...] = ()
    entity_id: str | None = None
    webhook_id: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    default_region: str | None = None
    send_at: datetime | None = None
    throttle_per_minute: int | None = None
    quiet_hours: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class CampaignRecord:
    """A campaign as stored, with its progress."""

    id: str
    name: str
    status: CampaignStatus
    sender_name: str
    connector_id: int
    promotional: bool
    body: str | None
    template_id: str | None
    template_variables: tuple[str, ...]
    entity_id: str | None
    webhook_id: str | None
    params: Mapping[str, str]
    audience_source: str
    audience_columns: tuple[str, ...]
    phone_column: str
    default_region: str | None
    send_at: datetime | None
    throttle_per_minute: int | None
    quiet_hours: Mapping[str, str] | None
    rows_total: int
    rows_read: int
    rows_valid: int
    rows_invalid: int
    duplicates: int
    suppressed: int
    queued: int
    invalid_rows: tuple[Mapping[str, Any], ...]
    parts_total: int
    next_part: int
    expanded: bool
    schedule_anchor: datetime | None
    schedule_state: Mapping[str, Any] | None
    last_slot_at: datetime | None
    reschedule_from: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    paused_at: datetime | None
    finished_at: datetime | None


def _record(row: AnyRow) -> CampaignRecord:
    return CampaignRecord(
        id=row.id,
        name=row.name,
        status=CampaignStatus(row.status),
        sender_name=row.sender_name,
        connector_id=row.connector_id,
        promotional=bool(row.promotional),
        body=row.body,
        template_id=row.template_id,
        template_variables=tuple(row.template_variables or ()),
        entity_id=row.entity_id,
        webhook_id=row.webhook_id,
        params=dict(row.params or {}),
        audience_source=row.audience_source,
        audience_columns=tuple(row.audience_columns or ()),
        phone_column=row.phone_column,
        default_region=row.default_region,
        send_at=row.send_at,
        throttle_per_minute=row.throttle_per_minute,
        quiet_hours=dict(row.quiet_hours) if row.quiet_hours is not None else None,
        rows_total=row.rows_total,
        rows_read=row.rows_read,
        rows_valid=row.rows_valid,
        rows_invalid=row.rows_invalid,
        duplicates=row.duplicates,
        suppressed=row.suppressed,
        queued=row.queued,
        invalid_rows=tuple(row.invalid_rows or ()),
        parts_total=row.parts_total,
        next_part=row.next_part,
        expanded=bool(row.expanded),
        schedule_anchor=row.schedule_anchor,
        schedule_state=row.schedule_state,
        last_slot_at=row.last_slot_at,
        reschedule_from=row.reschedule_from,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        paused_at=row.paused_at,
        finished_at=row.finished_at,
    )


async def _locked(conn: AsyncConnection, campaign_id: str) -> AnyRow | None:
    """The campaign row, locked until the transaction ends (SQLite: the write lock is held)."""
    query = select(campaigns).where(campaigns.c.id == campaign_id).with_for_update()
    return (await conn.execute(query)).first()


# ---------------------------------------------------------------- creating


async def create_campaign(
    db: Database, new: NewCampaign, *, owner: str, lease_until: datetime
) -> None:
    """Store a campaign `uploading`, leased by the request staging its audience."""
    async with db.transaction() as conn:
        await conn.execute(
            insert(campaigns).values(
                id=new.id,
                name=new.name,
                status=C.UPLOADING.value,
                sender_name=new.sender_name,
                connector_id=new.connector_id,
                promotional=new.promotional,
                body=new.body,
                template_id=new.template_id,
                template_variables=list(new.template_variables) or None,
                entity_id=new.entity_id,
                webhook_id=new.webhook_id,
                params=dict(new.params) or None,
                audience_source=new.audience_source,
                audience_columns=list(new.audience_columns),
                phone_column=new.phone_column,
                default_region=new.default_region,
                send_at=new.send_at,
                throttle_per_minute=new.throttle_per_minute,
                quiet_hours=dict(new.quiet_hours) if new.quiet_hours is not None else None,
                lease_owner=owner,
                lease_expires_at=lease_until,
                created_at=new.created_at,
                updated_at=new.created_at,
            )
        )


async def stage_audience_part(
    db: Database,
    campaign_id: str,
    part: int,
    first_row: int,
    rows: Sequence[Sequence[str]],
    *,
    owner: str,
    lease_until: datetime,
) -> None:
    """Store one part of an uploading campaign's audience and count its rows."""
    counted = sum(1 for row in rows if row)
    async with db.transaction() as conn:
        await conn.execute(
            insert(campaign_audience_parts).values(
                campaign_id=campaign_id,
                part=part,
                first_row=first_row,
                row_count=len(rows),
                rows=json.dumps(rows, ensure_ascii=False, separators=(",", ":")),
            )
        )
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .where(campaigns.c.lease_owner == owner)
            .values(
                rows_total=campaigns.c.rows_total + counted,
                parts_total=part + 1,
                lease_expires_at=lease_until,
            )
        )


async def finish_upload(
    db: Database, campaign_id: str, now: datetime | None = None
) -> CampaignRecord | None:
    """Mark a staged campaign `expanding` for any runner to take; None if it is gone."""
    now = now or utc_now()
    async with db.transaction() as conn:
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .where(campaigns.c.status == C.UPLOADING.value)
            .values(
                status=C.EXPANDING.value,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
        )
        row = (await conn.execute(select(campaigns).where(campaigns.c.id == campaign_id))).first()
    return _record(row) if row is not None else None


async def discard_campaign(db: Database, campaign_id: str) -> None:
    """Delete a campaign that was refused while uploading (its parts go with it)."""
    async with db.transaction() as conn:
        await conn.execute(
            delete(campaign_audience_parts).where(
                campaign_audience_parts.c.campaign_id == campaign_id
            )
        )
        await conn.execute(delete(campaigns).where(campaigns.c.id == campaign_id))


# ---------------------------------------------------------------- reading


async def get_campaign(db: Database, campaign_id: str) -> CampaignRecord | None:
    """One campaign with its progress, or None."""
    async with db.connect() as conn:
        row = (await conn.execute(select(campaigns).where(campaigns.c.id == campaign_id))).first()
    return _record(row) if row is not None else None


async def list_campaigns(
    db: Database,
    *,
    status: Sequence[str] | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[CampaignRecord], str | None]:
    """A page of campaigns, newest first, and the cursor of the next page (None at the end)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE} (got {limit})")
    query: Select[Any] = select(campaigns)
    if status:
        query = query.where(campaigns.c.status.in_([CampaignStatus(s).value for s in status]))
    if cursor is not None:
        query = query.where(campaigns.c.id < cursor)
    query = query.order_by(campaigns.c.id.desc()).limit(limit + 1)
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    page = rows[:limit]
    return [_record(row) for row in page], (page[-1].id if len(rows) > limit else None)


# ---------------------------------------------------------------- pause, resume, cancel


@dataclass(frozen=True, slots=True)
class CampaignChange:
    """What a pause, resume or cancel did: `reason` says why nothing changed.

    `messages` is how many messages were held (pause) or canceled (cancel).
    """

    changed: bool
    campaign: CampaignRecord | None
    reason: str | None = None
    messages: int = 0


async def pause_campaign(
    db: Database, campaign_id: str, now: datetime | None = None
) -> CampaignChange:
    """Hold every unsent message of an active campaign; expansion goes on, holding its messages."""
    now = now or utc_now()
    async with db.transaction() as conn:
        row = await _locked(conn, campaign_id)
        if row is None:
            return CampaignChange(False, None, "not_found")
        status = CampaignStatus(row.status)
        if status not in (C.EXPANDING, C.RUNNING):
            return CampaignChange(
                False, _record(row), f"the campaign is {status}; only a running campaign pauses"
            )
        held = await conn.execute(
            update(messages)
            .where(messages.c.campaign_id == campaign_id)
            .where(messages.c.status == MessageStatus.QUEUED.value)
            .values(next_attempt_at=None, updated_at=now)
        )
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(status=C.PAUSED.value, paused_at=now, reschedule_from=None, updated_at=now)
        )
        after = await _locked(conn, campaign_id)
    assert after is not None
    return CampaignChange(True, _record(after), messages=int(held.rowcount or 0))


async def resume_campaign(
    db: Database, campaign_id: str, now: datetime | None = None
) -> CampaignChange:
    """Resume a paused campaign: the runner reschedules its unsent messages from `now`."""
    now = now or utc_now()
    async with db.transaction() as conn:
        row = await _locked(conn, campaign_id)
        if row is None:
            return CampaignChange(False, None, "not_found")
        if row.status != C.PAUSED.value:
            return CampaignChange(
                False, _record(row), f"the campaign is {row.status}; only a paused one resumes"
            )
        status = C.RUNNING if row.expanded else C.EXPANDING
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(status=status.value, paused_at=None, reschedule_from=now, updated_at=now)
        )
        after = await _locked(conn, campaign_id)
    assert after is not None
    return CampaignChange(True, _record(after))


async def cancel_campaign(
    db: Database, campaign_id: str, now: datetime | None = None, *, page: int = 5000
) -> CampaignChange:
    """Cancel a campaign: its unsent messages become `canceled`, its staged audience goes."""
    now = now or utc_now()
    canceled = 0
    async with db.transaction() as conn:
        row = await _locked(conn, campaign_id)
        if row is None:
            return CampaignChange(False, None, "not_found")
        status = CampaignStatus(row.status)
        if status in FINISHED or status is C.UPLOADING:
            return CampaignChange(
                False, _record(row), f"the campaign is {status}; there is nothing to cancel"
            )
        cancelable = [s.value for s in CANCELABLE]
        after = ""
        while True:
            found = (
                await conn.execute(
                    select(messages.c.id, messages.c.status)
                    .where(messages.c.campaign_id == campaign_id)
                    .where(messages.c.status.in_(cancelable))
                    .where(messages.c.id > after)
                    .order_by(messages.c.id)
                    .limit(page)
                )
            ).all()
            if not found:
                break
            after = found[-1].id
            ids = [r.id for r in found]
            for start in range(0, len(ids), INSERT_CHUNK):
                await conn.execute(
                    update(messages)
                    .where(messages.c.id.in_(ids[start : start + INSERT_CHUNK]))
                    .values(
                        status=MessageStatus.CANCELED.value,
                        next_attempt_at=None,
                        final_at=now,
                        updated_at=now,
                    )
                )
            await conn.execute(
                insert(message_events),
                [
                    {
                        "message_id": r.id,
                        "at": now,
                        "kind": "status",
                        "status": MessageStatus.CANCELED.value,
                        "detail": {"from": r.status, "reason": "campaign_canceled"},
                    }
                    for r in found
                ],
            )
            canceled += len(found)
        await conn.execute(
            delete(campaign_audience_parts).where(
                campaign_audience_parts.c.campaign_id == campaign_id
            )
        )
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(
                status=C.CANCELED.value,
                reschedule_from=None,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
        )
        final = await _locked(conn, campaign_id)
    assert final is not None
    return CampaignChange(True, _record(final), messages=canceled)


# ---------------------------------------------------------------- the runner's side


def _lease_free(now: datetime, owner: str) -> Any:
    return or_(
        campaigns.c.lease_owner.is_(None),
        campaigns.c.lease_owner == owner,
        campaigns.c.lease_expires_at < now,
    )


async def fail_interrupted_uploads(db: Database, now: datetime) -> int:
    """Fail campaigns whose uploading request died (lease expired); drop their parts."""
    stale_query = (
        select(campaigns.c.id)
        .where(campaigns.c.status == C.UPLOADING.value)
        .where(campaigns.c.lease_expires_at < now)
    )
    # Read first: this runs every pass, and a write transaction would take the write lock.
    async with db.connect() as conn:
        if not (await conn.execute(stale_query.limit(1))).first():
            return 0
    async with db.transaction() as conn:
        stale = (await conn.execute(stale_query)).scalars().all()
        for campaign_id in stale:
            await conn.execute(
                delete(campaign_audience_parts).where(
                    campaign_audience_parts.c.campaign_id == campaign_id
                )
            )
            await conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(
                    status=C.FAILED.value,
                    error="the audience upload was interrupted; create the campaign again",
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                    updated_at=now,
                )
            )
    return len(stale)


async def claim_campaigns(
    db: Database, *, owner: str, now: datetime, lease_seconds: float, limit: int = 8
) -> list[CampaignRecord]:
    """Lease campaigns with work for a runner: audience to expand, or a schedule to redo."""
    has_work = or_(
        and_(
            campaigns.c.status.in_([s.value for s in ACTIVE]),
            campaigns.c.expanded.is_(False),
        ),
        and_(
            campaigns.c.status.in_([C.EXPANDING.value, C.RUNNING.value]),
            campaigns.c.reschedule_from.is_not(None),
        ),
    )
    async with db.connect() as conn:
        candidates = (
            (
                await conn.execute(
                    select(campaigns.c.id)
                    .where(has_work)
                    .where(_lease_free(now, owner))
                    .order_by(campaigns.c.id)
                    .limit(limit)
                )
            )
            .scalars()
            .all()
        )
    claimed: list[CampaignRecord] = []
    for campaign_id in candidates:
        async with db.transaction() as conn:
            taken = await conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .where(has_work)
                .where(_lease_free(now, owner))
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
            )
            if taken.rowcount != 1:
                continue
            row = (
                await conn.execute(select(campaigns).where(campaigns.c.id == campaign_id))
            ).first()
        if row is not None:
            claimed.append(_record(row))
    return claimed


async def release_campaign(db: Database, campaign_id: str, owner: str) -> None:
    """Give a campaign's lease back (the runner stops or has nothing left to do on it)."""
    async with db.transaction() as conn:
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .where(campaigns.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )


async def fail_campaign(db: Database, campaign_id: str, error: str, now: datetime) -> None:
    """Stop a campaign that cannot go on (its sender is gone...); queued messages stay."""
    async with db.transaction() as conn:
        await conn.execute(
            delete(campaign_audience_parts).where(
                campaign_audience_parts.c.campaign_id == campaign_id
            )
        )
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .where(campaigns.c.status.in_([s.value for s in ACTIVE]))
            .values(
                status=C.FAILED.value,
                error=error,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
        )


@dataclass(frozen=True, slots=True)
class StagedPart:
    """One stored part of an audience: row `first_row + i` is `rows[i]` (blank: [])."""

    part: int
    first_row: int
    rows: list[list[str]]


async def load_audience_part(db: Database, campaign_id: str, part: int) -> StagedPart | None:
    """A staged part of a campaign's audience, or None if there is no such part."""
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(campaign_audience_parts.c.first_row, campaign_audience_parts.c.rows)
                .where(campaign_audience_parts.c.campaign_id == campaign_id)
                .where(campaign_audience_parts.c.part == part)
            )
        ).first()
    if row is None:
        return None
    return StagedPart(part=part, first_row=row.first_row, rows=json.loads(row.rows))


async def campaign_numbers(
    db: Database, campaign_id: str, *, page: int = 20_000
) -> AsyncIterator[str]:
    """Every recipient already queued for a campaign (to rebuild its duplicate check)."""
    after = ""
    while True:
        async with db.connect() as conn:
            rows = (
                await conn.execute(
                    select(messages.c.id, messages.c.to)
                    .where(messages.c.campaign_id == campaign_id)
                    .where(messages.c.id > after)
                    .order_by(messages.c.id)
                    .limit(page)
                )
            ).all()
        if not rows:
            return
        after = rows[-1].id
        for row in rows:
            yield row.to


@dataclass(frozen=True, slots=True)
class ChunkProgress:
    """What expanding one part of the audience found, added to the campaign's counters."""

    rows_read: int = 0
    rows_valid: int = 0
    rows_invalid: int = 0
    duplicates: int = 0
    suppressed: int = 0
    problems: Sequence[Mapping[str, Any]] = ()


async def record_chunk(
    db: Database,
    campaign_id: str,
    *,
    owner: str,
    part: int,
    scheduled: Sequence[tuple[NewMessage, datetime]],
    progress: ChunkProgress,
    schedule_anchor: datetime,
    schedule_state: Mapping[str, Any],
    last_slot_at: datetime | None,
    now: datetime,
    lease_seconds: float,
) -> CampaignStatus | None:
    """Queue one part's messages and count its rows, in one transaction; consume the part.

    `scheduled` pairs each message with its send time (its `send_at` is not read). Returns the campaign's status afterwards, or None when nothing was written: the lease
    was lost, the part was already consumed, or the campaign was canceled meanwhile. The
    messages of a paused campaign are queued held (no `next_attempt_at`).
    """
    async with db.transaction() as conn:
        row = await _locked(conn, campaign_id)
        if (
            row is None
            or row.lease_owner != owner
            or row.next_part != part
            or CampaignStatus(row.status) not in ACTIVE
        ):
            return None
        held = row.status == C.PAUSED.value
        rows = []
        for message, send_at in scheduled:
            values = message_row(message)
            values["send_at"] = send_at
            values["next_attempt_at"] = None if held else send_at
            rows.append(values)
        for start in range(0, len(rows), INSERT_CHUNK):
            await conn.execute(insert(messages), rows[start : start + INSERT_CHUNK])
        kept = list(row.invalid_rows or [])
        kept += list(progress.problems[: max(0, MAX_INVALID_KEPT - len(kept))])
        expanded = part + 1 >= row.parts_total
        status = CampaignStatus(row.status)
        if expanded and status is C.EXPANDING:
            status = C.RUNNING
        latest = row.last_slot_at
        if last_slot_at is not None and (latest is None or last_slot_at > latest):
            latest = last_slot_at
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(
                rows_read=row.rows_read + progress.rows_read,
                rows_valid=row.rows_valid + progress.rows_valid,
                rows_invalid=row.rows_invalid + progress.rows_invalid,
                duplicates=row.duplicates + progress.duplicates,
                suppressed=row.suppressed + progress.suppressed,
                queued=row.queued + len(scheduled),
                invalid_rows=kept or None,
                next_part=part + 1,
                expanded=expanded,
                status=status.value,
                schedule_anchor=schedule_anchor,
                schedule_state=dict(schedule_state),
                last_slot_at=latest,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
        )
        await conn.execute(
            delete(campaign_audience_parts)
            .where(campaign_audience_parts.c.campaign_id == campaign_id)
            .where(campaign_audience_parts.c.part == part)
        )
    return status


@dataclass(frozen=True, slots=True)
class UnsentMessage:
    """A queued message of a campaign, as rescheduling needs it."""

    id: str
    to: str


async def unsent_page(
    db: Database, campaign_id: str, *, after: str = "", limit: int = 5000
) -> list[UnsentMessage]:
    """Queued messages of a campaign in queueing order, after the id `after`."""
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                select(messages.c.id, messages.c.to)
                .where(messages.c.campaign_id == campaign_id)
                .where(messages.c.status == MessageStatus.QUEUED.value)
                .where(messages.c.id > after)
                .order_by(messages.c.id)
                .limit(limit)
            )
        ).all()
    return [UnsentMessage(id=row.id, to=row.to) for row in rows]


_RESCHEDULE = (
    update(messages)
    .where(messages.c.id == bindparam("m_id"))
    .where(messages.c.status == MessageStatus.QUEUED.value)
    .values(
        send_at=bindparam("m_at"), next_attempt_at=bindparam("m_at"), updated_at=bindparam("m_now")
    )
)


async def record_reschedule(
    db: Database,
    campaign_id: str,
    *,
    owner: str,
    resumed_at: datetime,
    times: Sequence[tuple[str, datetime]],
    now: datetime,
    lease_seconds: float,
) -> bool:
    """Give queued messages their new send times; False (nothing written) if no longer due.

    Nothing is written when the lease was lost or the campaign was paused, canceled or
    resumed again meanwhile (a newer rescheduling will place the messages).
    """
    async with db.transaction() as conn:
        row = await _locked(conn, campaign_id)
        if (
            row is None
            or row.lease_owner != owner
            or row.reschedule_from != resumed_at
            or row.status not in (C.EXPANDING.value, C.RUNNING.value)
        ):
            return False
        if times:
            await conn.execute(
                _RESCHEDULE, [{"m_id": i, "m_at": at, "m_now": now} for i, at in times]
            )
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        )
    return True


async def finish_reschedule(
    db: Database,
    campaign_id: str,
    *,
    owner: str,
    resumed_at: datetime,
    schedule_anchor: datetime,
    schedule_state: Mapping[str, Any],
    last_slot_at: datetime | None,
    now: datetime,
) -> bool:
    """Record the new schedule (anchored at the resume) once every message is placed."""
    async with db.transaction() as conn:
        row = await _locked(conn, campaign_id)
        if row is None or row.lease_owner != owner or row.reschedule_from != resumed_at:
            return False
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(
                reschedule_from=None,
                schedule_anchor=schedule_anchor,
                schedule_state=dict(schedule_state),
                last_slot_at=last_slot_at,
                updated_at=now,
            )
        )
    return True


async def complete_finished_campaigns(db: Database, now: datetime) -> list[str]:
    """Mark `completed` the running campaigns with every message handed to the provider."""
    async with db.connect() as conn:
        candidates = (
            (
                await conn.execute(
                    select(campaigns.c.id)
                    .where(campaigns.c.status == C.RUNNING.value)
                    .where(campaigns.c.expanded.is_(True))
                    .where(campaigns.c.reschedule_from.is_(None))
                    .where(or_(campaigns.c.last_slot_at.is_(None), campaigns.c.last_slot_at <= now))
                )
            )
            .scalars()
            .all()
        )
    completed: list[str] = []
    for campaign_id in candidates:
        unsent = (
            exists()
            .where(messages.c.campaign_id == campaign_id)
            .where(messages.c.status.in_(_UNSENT))
        )
        # Read first: most checks find messages still to send and need no write lock.
        async with db.connect() as conn:
            if (await conn.execute(select(unsent))).scalar():
                continue
        async with db.transaction() as conn:
            done = await conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .where(campaigns.c.status == C.RUNNING.value)
                .where(~unsent)
                .values(status=C.COMPLETED.value, finished_at=now, updated_at=now)
            )
        if done.rowcount == 1:
            completed.append(campaign_id)
    return completed
