"""Campaigns: the list with each one's progress, and one campaign with pause, resume, cancel.

The figures are those of `GET /v1/campaigns` and `GET /v1/campaigns/{id}`: the campaign's
own counters (audience rows read, valid, queued...) and the counts of its messages by
status (`store.stats.StatusCounts`, delivery rate included). The list counts the messages
of the whole page in one GROUP BY over the campaign index. Creating a campaign stays with
the API and the CLI: an audience file is too big for a dashboard form to carry well.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from smsrelay.dashboard.delivery_stats import campaign_counts, connector_names
from smsrelay.dashboard.pages import Page, PageDep
from smsrelay.store.campaigns import (
    FINISHED,
    CampaignChange,
    CampaignRecord,
    CampaignStatus,
    cancel_campaign,
    get_campaign,
    list_campaigns,
    pause_campaign,
    resume_campaign,
)
from smsrelay.store.stats import StatsFilter, StatusCounts, message_stats

router = APIRouter(prefix="/campaigns")
PAGE_SIZE = 50
STATUSES = tuple(s.value for s in CampaignStatus)
# Where each action applies; the store decides, this only chooses the buttons shown.
PAUSABLE = frozenset({CampaignStatus.EXPANDING, CampaignStatus.RUNNING})
RESUMABLE = frozenset({CampaignStatus.PAUSED})
CANCELABLE = frozenset({CampaignStatus.EXPANDING, CampaignStatus.RUNNING, CampaignStatus.PAUSED})
CREATE_COMMAND = (
    "smsrelay campaigns create --name spring-sale --audience audience.csv "
    '--body "Hi {{params.first_name}}, 20% off this week" --sender promo'
)


def progress_percent(record: CampaignRecord) -> float:
    """How much of the audience has been read into messages, as the API reports it."""
    if not record.rows_total:
        return 0.0
    return round(100.0 * record.rows_read / record.rows_total, 1)


def campaign_summary(
    record: CampaignRecord, counts: StatusCounts, connector: str | None
) -> dict[str, Any]:
    """What the list shows of one campaign: the record, its connector and its figures."""
    return {
        "record": record,
        "connector": connector or f"(deleted connector #{record.connector_id})",
        "counts": counts.as_dict(),
        "progress": progress_percent(record),
    }


@router.get("")
async def campaigns_list(
    p: Page = PageDep,
    status: str = "",
    cursor: str = Query(default="", max_length=26),
) -> HTMLResponse:
    """Campaigns, newest first, with their audience and the progress of their messages."""
    db = p.runtime.database
    chosen = status if status in STATUSES else ""
    records, next_cursor = await list_campaigns(
        db, status=[chosen] if chosen else None, cursor=cursor or None, limit=PAGE_SIZE
    )
    counts = await campaign_counts(db, [r.id for r in records])
    names = await connector_names(db) if records else {}
    active = {"status": chosen} if chosen else {}
    return p.render(
        "campaigns.html",
        nav="campaigns",
        campaigns=[campaign_summary(r, counts[r.id], names.get(r.connector_id)) for r in records],
        statuses=STATUSES,
        chosen_status=chosen,
        create_command=CREATE_COMMAND,
        next_url=(
            "?" + urlencode({**active, "cursor": next_cursor}) if next_cursor is not None else None
        ),
        first_url=("?" + urlencode(active)) if cursor else None,
    )


async def _campaign_page(
    p: Page, record: CampaignRecord, *, refusal: str | None = None, status: int = 200
) -> HTMLResponse:
    db = p.runtime.database
    report = await message_stats(db, StatsFilter(campaign_id=record.id), top_reasons=10)
    names = await connector_names(db)
    return p.render(
        "campaign.html",
        status=status,
        nav="campaigns",
        campaign=record,
        connector=names.get(record.connector_id),
        counts=report.totals.counts.as_dict(),
        reasons=report.totals.failure_reasons,
        progress=progress_percent(record),
        can_pause=record.status in PAUSABLE,
        can_resume=record.status in RESUMABLE,
        can_cancel=record.status in CANCELABLE,
        finished=record.status in FINISHED,
        refusal=refusal,
    )


async def _record_or_404(p: Page, campaign_id: str) -> CampaignRecord:
    record = await get_campaign(p.runtime.database, campaign_id)
    if record is None:
        raise HTTPException(404, f"There is no campaign {campaign_id!r}.")
    return record


@router.get("/{campaign_id}")
async def campaign_page(campaign_id: str, p: Page = PageDep) -> HTMLResponse:
    """One campaign: its definition, audience, progress and message figures, and controls."""
    return await _campaign_page(p, await _record_or_404(p, campaign_id))


def _wake_runner(p: Page) -> None:
    """Wake this process's campaign runner, so a change is acted on now, not at its next poll."""
    runner = p.runtime.extras.get("campaign_runner")
    if runner is not None:
        runner.notify()


async def _answer(p: Page, campaign_id: str, change: CampaignChange, notice: str) -> Response:
    """Back to the campaign with `notice`, or its page again with the store's refusal."""
    if change.reason == "not_found" or change.campaign is None:
        raise HTTPException(404, f"There is no campaign {campaign_id!r}.")
    if not change.changed:
        refusal = change.reason or "the campaign cannot change now"
        return await _campaign_page(p, change.campaign, refusal=refusal, status=409)
    _wake_runner(p)
    return p.redirect(f"/campaigns/{campaign_id}", notice=notice)


@router.post("/{campaign_id}/pause", response_model=None)
async def pause(campaign_id: str, p: Page = PageDep) -> Response:
    """Hold every unsent message of the campaign."""
    await p.form()
    change = await pause_campaign(p.runtime.database, campaign_id)
    return await _answer(
        p, campaign_id, change, f"Campaign paused: {change.messages:,} unsent messages held."
    )


@router.post("/{campaign_id}/resume", response_model=None)
async def resume(campaign_id: str, p: Page = PageDep) -> Response:
    """Resume a paused campaign; its unsent messages are rescheduled from now."""
    await p.form()
    change = await resume_campaign(p.runtime.database, campaign_id)
    return await _answer(
        p, campaign_id, change, "Campaign resumed: its unsent messages are rescheduled from now."
    )


@router.post("/{campaign_id}/cancel", response_model=None)
async def cancel(campaign_id: str, p: Page = PageDep) -> Response:
    """Cancel the campaign: its unsent messages become canceled."""
    await p.form()
    change = await cancel_campaign(p.runtime.database, campaign_id)
    return await _answer(
        p, campaign_id, change, f"Campaign canceled: {change.messages:,} unsent messages canceled."
    )
