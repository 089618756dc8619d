"""The campaign runner: turns staged audiences into scheduled messages, part by part.

For each campaign with work it leases (`claim_campaigns`), one part of the audience at a
time is a pipeline of small steps:

    load part -> judge rows (columns, personalisation, MessageIntake) -> drop duplicates
      -> drop suppressed numbers -> schedule (throttle slots, quiet hours) -> record_chunk

`record_chunk` writes the part's messages, the progress counters and the schedule so far in
one transaction, so any process can continue a campaign where another stopped. Messages
carry their send time in `send_at` / `next_attempt_at`: the dispatcher sends them when due
and knows nothing of campaigns. After a resume the runner reschedules the unsent messages
from the moment of the resume, with the same throttle and quiet hours.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from smsrelay.connectors.errors import FieldError
from smsrelay.dispatch.audience import (
    MAX_BODY_CHARS,
    AudienceChunk,
    AudienceError,
    AudienceLayout,
    MissingValue,
    PersonalTemplate,
    PhoneSet,
    RowProblem,
)
from smsrelay.dispatch.intake import IntakeRefused, MessageIntake, MessageRequest
from smsrelay.dispatch.quiet_hours import (
    QuietHours,
    QuietHoursError,
    QuietRules,
    SendSlots,
    recipient_time_zones,
)
from smsrelay.settings import Settings
from smsrelay.store.campaigns import (
    ACTIVE,
    CampaignRecord,
    CampaignStatus,
    ChunkProgress,
    campaign_numbers,
    claim_campaigns,
    complete_finished_campaigns,
    fail_campaign,
    fail_interrupted_uploads,
    finish_reschedule,
    get_campaign,
    load_audience_part,
    record_chunk,
    record_reschedule,
    release_campaign,
    stage_audience_part,
    unsent_page,
)
from smsrelay.store.database import Database
from smsrelay.store.errors import NoSender
from smsrelay.store.messages import NewMessage
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.senders import resolve_sender
from smsrelay.store.suppression import find_suppressed
from smsrelay.store.timestamps import utc_now

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0
POLL_SECONDS = 1.0
# How often running campaigns are checked for having nothing left to send.
COMPLETION_CHECK_SECONDS = 5.0
# Parts expanded per campaign before the runner turns to the next campaign.
PARTS_PER_TURN = 4
RESCHEDULE_PAGE = 5000
# The event loop gets a turn this often while a part is judged (CPU-bound work).
_YIELD_EVERY = 200
# A campaign whose expansion fails this many times in a row is marked failed.
MAX_FAILURES = 3


def _describe(errors: list[FieldError]) -> str:
    return "; ".join(str(e) for e in errors)


@dataclass
class CampaignPlan:
    """What expanding one campaign needs, built once per lease: templates, intake, schedule."""

    campaign_id: str
    intake: MessageIntake
    layout: AudienceLayout
    body: PersonalTemplate | None
    template_variables: tuple[PersonalTemplate, ...]
    phones: PhoneSet
    slots: SendSlots
    quiet: QuietRules | None
    promotional: bool
    sender_type: str

    def release_for(self, e164: str) -> Callable[[datetime], datetime] | None:
        """The quiet-hours check of one recipient, or None when quiet hours do not apply."""
        quiet = self.quiet
        if quiet is None:
            return None
        zones = recipient_time_zones(e164)
        return lambda moment: quiet.release(moment, zones)


@dataclass
class JudgedPart:
    """One part of an audience after judging: messages with their send times, what was skipped."""

    scheduled: list[tuple[NewMessage, datetime]]
    progress: ChunkProgress
    last_slot_at: datetime | None


class CampaignRunner:
    """Expands and reschedules campaigns; run one per process beside the dispatcher."""

    def __init__(
        self,
        database: Database,
        secret_box: SecretBox,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.database = database
        self.secret_box = secret_box
        self.settings = settings
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._on_queued = on_queued
        self._plans: dict[str, CampaignPlan] = {}
        self._failures: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._next_completion_check = 0.0

    # ------------------------------------------------------------ loop

    def notify(self) -> None:
        """Wake the runner now (the API calls this after creating or resuming a campaign)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Work on campaigns until `stop` is set; leases are given back on the way out."""
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                worked = 0
                try:
                    worked = await self.run_once()
                except Exception:
                    log.exception("a campaign pass failed (database unreachable?); trying again")
                if worked:
                    await asyncio.sleep(0)
                    continue
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {stopped, woken}, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
        finally:
            stopped.cancel()
            for campaign_id in list(self._plans):
                await self._let_go(campaign_id)

    async def run_once(self) -> int:
        """One pass: claim campaigns with work and advance each a little; return the work done."""
        now = self.clock()
        await fail_interrupted_uploads(self.database, now)
        claimed = await claim_campaigns(
            self.database, owner=self.owner, now=now, lease_seconds=self.lease_seconds
        )
        worked = 0
        for campaign in claimed:
            worked += await self._advance(campaign)
        if time.monotonic() >= self._next_completion_check:
            self._next_completion_check = time.monotonic() + COMPLETION_CHECK_SECONDS
            await complete_finished_campaigns(self.database, self.clock())
        return worked

    async def run_until_idle(self) -> int:
        """Pass until no campaign has work left (tests and benchmarks); return the work done."""
        total = 0
        while worked := await self.run_once():
            total += worked
        self._next_completion_check = 0.0
        await complete_finished_campaigns(self.database, self.clock())
        return total

    # ------------------------------------------------------------ one campaign

    async def _advance(self, campaign: CampaignRecord) -> int:
        """Reschedule if a resume asks for it, then expand a few parts; return the work done."""
        worked = 0
        try:
            plan = self._plans.get(campaign.id) or await self._plan(campaign)
            if plan is None:
                return 0
            current: CampaignRecord | None = campaign
            if campaign.reschedule_from is not None:
                await self._reschedule(campaign, plan)
                worked += 1
                current = await get_campaign(self.database, campaign.id)
            while (
                current is not None
                and not current.expanded
                and current.status in ACTIVE
                and current.reschedule_from is None
                and worked < PARTS_PER_TURN
            ):
                if not await self._expand_next_part(current, plan):
                    break
                worked += 1
                current = await get_campaign(self.database, campaign.id)
            self._failures.pop(campaign.id, None)
            if current is None or not _has_work(current):
                await self._let_go(campaign.id)
        except Exception as exc:
            await self._failed(campaign, exc)
        return worked

    async def _failed(self, campaign: CampaignRecord, exc: Exception) -> None:
        failures = self._failures.get(campaign.id, 0) + 1
        self._failures[campaign.id] = failures
        log.exception("campaign %s: expansion failed (%d in a row)", campaign.id, failures)
        await self._let_go(campaign.id)
        if failures >= MAX_FAILURES:
            await fail_campaign(
                self.database, campaign.id, f"expansion failed: {exc}", self.clock()
            )
            self._failures.pop(campaign.id, None)

    async def _let_go(self, campaign_id: str) -> None:
        self._plans.pop(campaign_id, None)
        try:
            await release_campaign(self.database, campaign_id, self.owner)
        except Exception:
            log.exception("campaign %s: could not give the lease back", campaign_id)

    async def _plan(self, campaign: CampaignRecord) -> CampaignPlan | None:
        """Build what expanding the campaign needs; fail the campaign if it cannot go on."""
        now = self.clock()
        try:
            sender = await resolve_sender(self.database, campaign.sender_name)
        except NoSender as exc:
            await fail_campaign(self.database, campaign.id, str(exc), now)
            return None
        try:
            body = PersonalTemplate(campaign.body, "body") if campaign.body else None
            variables = tuple(
                PersonalTemplate(text, f"template_variables[{i}]")
                for i, text in enumerate(campaign.template_variables)
            )
            quiet = (
                QuietRules(QuietHours.from_json(campaign.quiet_hours))
                if campaign.quiet_hours is not None
                else None
            )
        except (AudienceError, QuietHoursError) as exc:
            await fail_campaign(self.database, campaign.id, str(exc), now)
            return None
        intake = MessageIntake(
            self.database,
            self.secret_box,
            default_region=campaign.default_region or self.settings.default_region,
            # Checked when the campaign was made; one deleted since only loses its reports.
            check_webhooks=False,
        )
        # Suppressions are looked up once per part below (and counted apart), not per row.
        await intake.preload_suppressions(())
        columns = campaign.audience_columns
        layout = AudienceLayout(columns=columns, phone_index=columns.index(campaign.phone_column))
        phones = PhoneSet(capacity=campaign.rows_total)
        if campaign.next_part > 0 or campaign.queued > 0:
            async for number in campaign_numbers(self.database, campaign.id):
                phones.add(number)
        anchor = campaign.schedule_anchor or max(campaign.send_at or now, now)
        plan = CampaignPlan(
            campaign_id=campaign.id,
            intake=intake,
            layout=layout,
            body=body,
            template_variables=variables,
            phones=phones,
            slots=SendSlots(anchor, campaign.throttle_per_minute, campaign.schedule_state),
            quiet=quiet,
            promotional=campaign.promotional,
            sender_type=sender.type,
        )
        self._plans[campaign.id] = plan
        return plan

    # ------------------------------------------------------------ expanding

    async def _expand_next_part(self, campaign: CampaignRecord, plan: CampaignPlan) -> bool:
        """Queue the next part of the audience; False when the campaign slipped away."""
        staged = await load_audience_part(self.database, campaign.id, campaign.next_part)
        rows = staged.rows if staged is not None else []
        first_row = staged.first_row if staged is not None else 0
        now = self.clock()
        judged = await self.judge_part(campaign, plan, first_row, rows, now)
        status = await record_chunk(
            self.database,
            campaign.id,
            owner=self.owner,
            part=campaign.next_part,
            scheduled=judged.scheduled,
            progress=judged.progress,
            schedule_anchor=plan.slots.anchor,
            schedule_state=plan.slots.state(),
            last_slot_at=judged.last_slot_at,
            now=now,
            lease_seconds=self.lease_seconds,
        )
        if status is None:
            # Lease lost, canceled, or another runner consumed the part: start afresh later.
            self._plans.pop(campaign.id, None)
            return False
        if judged.scheduled and status is not CampaignStatus.PAUSED and self._on_queued:
            self._on_queued()
        return True

    async def judge_part(
        self,
        campaign: CampaignRecord,
        plan: CampaignPlan,
        first_row: int,
        rows: list[list[str]],
        now: datetime,
    ) -> JudgedPart:
        """Judge one part's rows into messages with send times, and count what was skipped."""
        problems: list[RowProblem] = []
        accepted: list[NewMessage] = []
        read = duplicates = 0
        for index, cells in enumerate(rows):
            if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
            if not cells:
                continue
            read += 1
            row = first_row + index
            judged = await self._judge_row(campaign, plan, cells, now)
            if isinstance(judged, str):
                problems.append(RowProblem(row, judged))
            elif plan.phones.add(judged.to):
                accepted.append(judged)
            else:
                duplicates += 1
        valid = len(accepted) + duplicates
        suppressed: Mapping[str, Any] = {}
        if plan.promotional and accepted:
            suppressed = await find_suppressed(self.database, [m.to for m in accepted])
        scheduled: list[tuple[NewMessage, datetime]] = []
        last: datetime | None = None
        for message in accepted:
            if message.to in suppressed:
                continue
            # Never a slot before now: a part queued late must not burst past the throttle.
            at = plan.slots.take(earliest=now, release=plan.release_for(message.to))
            scheduled.append((message, at))
            last = at if last is None or at > last else last
        progress = ChunkProgress(
            rows_read=read,
            rows_valid=valid,
            rows_invalid=len(problems),
            duplicates=duplicates,
            suppressed=len(accepted) - len(scheduled),
            problems=[p.to_json() for p in problems],
        )
        return JudgedPart(scheduled, progress, last)

    async def _judge_row(
        self, campaign: CampaignRecord, plan: CampaignPlan, cells: list[str], now: datetime
    ) -> NewMessage | str:
        """One row as a message to queue, or the reason it is skipped."""
        try:
            phone, attributes = plan.layout.recipient(cells)
        except ValueError as exc:
            return str(exc)
        params = {**campaign.params, **attributes} if campaign.params else attributes
        try:
            body = plan.body.render(params, campaign.id) if plan.body is not None else None
            variables = tuple(t.render(params, campaign.id) for t in plan.template_variables)
        except MissingValue as exc:
            return (
                f"{exc}: no value for {{{{{exc.name}}}}} (the cell is empty and the campaign "
                "gives no default)"
            )
        if body is not None and len(body) > MAX_BODY_CHARS:
            return f"body_too_long: {len(body)} characters, at most {MAX_BODY_CHARS}"
        request = MessageRequest(
            to=phone,
            body=body,
            template_id=campaign.template_id,
            template_variables=variables,
            sender=campaign.sender_name,
            type=plan.sender_type,
            params=params,
            campaign_id=campaign.id,
            entity_id=campaign.entity_id,
            webhook_id=campaign.webhook_id,
        )
        try:
            return await plan.intake.prepare(request, now=now)
        except IntakeRefused as exc:
            return _describe(exc.errors)

    # ------------------------------------------------------------ rescheduling

    async def _reschedule(self, campaign: CampaignRecord, plan: CampaignPlan) -> None:
        """Give every unsent message a new slot from the resume on (throttle, quiet hours)."""
        resumed_at = campaign.reschedule_from
        assert resumed_at is not None
        anchor = max(resumed_at, campaign.send_at or resumed_at)
        slots = SendSlots(anchor, campaign.throttle_per_minute)
        after = ""
        last: datetime | None = None
        while True:
            page = await unsent_page(self.database, campaign.id, after=after, limit=RESCHEDULE_PAGE)
            if not page:
                break
            times = []
            now = self.clock()
            for index, message in enumerate(page):
                if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                    await asyncio.sleep(0)
                at = slots.take(earliest=now, release=plan.release_for(message.to))
                times.append((message.id, at))
                last = at if last is None or at > last else last
            placed = await record_reschedule(
                self.database,
                campaign.id,
                owner=self.owner,
                resumed_at=resumed_at,
                times=times,
                now=self.clock(),
                lease_seconds=self.lease_seconds,
            )
            if not placed:
                return
            after = page[-1].id
            if self._on_queued:
                self._on_queued()
        if await finish_reschedule(
            self.database,
            campaign.id,
            owner=self.owner,
            resumed_at=resumed_at,
            schedule_anchor=anchor,
            schedule_state=slots.state(),
            last_slot_at=last,
            now=self.clock(),
        ):
            plan.slots = slots


async def stage_audience(
    database: Database,
    campaign_id: str,
    chunks: Iterator[AudienceChunk],
    *,
    owner: str,
    lease_seconds: float,
) -> int:
    """Store an uploading campaign's audience part by part; return the rows (not blank) staged.

    Each chunk is read and parsed off the event loop (a CSV is read from disk as it goes);
    each part renews the upload's lease. Raises AudienceError from the reader.
    """
    rows = 0
    part = 0
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        await stage_audience_part(
            database,
            campaign_id,
            part,
            chunk.first_row,
            chunk.rows,
            owner=owner,
            lease_until=utc_now() + timedelta(seconds=lease_seconds),
        )
        rows += sum(1 for row in chunk.rows if row)
        part += 1
    return rows


def _has_work(campaign: CampaignRecord) -> bool:
    if campaign.status not in ACTIVE:
        return False
    if campaign.reschedule_from is not None:
        return True
    return not campaign.expanded
