"""The campaign pages over HTTP on a real server: the list, one campaign, pause/resume/cancel.

Campaigns are created through the API, as users do; their start is an hour away, so every
message stays unsent while the pages pause, resume and cancel them.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from dashboard.signed_in import signed_in_gateway
from gateway import Gateway
from smsrelay.store.campaigns import CampaignStatus, get_campaign
from smsrelay.store.tables import messages

NAME = '<b>spring</b> & "sale"'
BODY = "Hi <i>there</i>, 20% off"


async def _create_campaign(gw: Gateway, recipients: int = 5) -> str:
    """A transactional campaign starting in an hour, once all its messages are queued."""
    response = await gw.client.post(
        "/v1/campaigns",
        json={
            "name": NAME,
            "sender": "sandbox-trans",
            "body": BODY,
            "send_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "throttle_per_minute": 60,
            "audience": [{"to": f"+49151{i:06d}55"} for i in range(recipients)],
        },
    )
    assert response.status_code == 202, response.text
    campaign_id: str = response.json()["id"]
    async with asyncio.timeout(20):
        while (await _status(gw, campaign_id)) != CampaignStatus.RUNNING:
            await asyncio.sleep(0.1)
    return campaign_id


async def _status(gw: Gateway, campaign_id: str) -> CampaignStatus:
    record = await get_campaign(gw.runtime.database, campaign_id)
    assert record is not None
    return record.status


async def _next_attempts(gw: Gateway, campaign_id: str) -> list[Any]:
    async with gw.runtime.database.connect() as conn:
        rows = await conn.execute(
            select(messages.c.next_attempt_at).where(messages.c.campaign_id == campaign_id)
        )
        return [row.next_attempt_at for row in rows]


async def _post(
    client: httpx.AsyncClient, campaign_id: str, action: str, csrf: str
) -> httpx.Response:
    return await client.post(f"/ui/campaigns/{campaign_id}/{action}", data={"csrf_token": csrf})


async def test_the_list_shows_each_campaign_with_its_progress_links_and_escaped_name(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, _):
        empty = await client.get("/ui/campaigns")
        assert empty.status_code == 200
        assert "No campaigns yet." in empty.text
        assert "smsrelay campaigns create --name" in empty.text

        campaign_id = await _create_campaign(gw)
        page = await client.get("/ui/campaigns")
        assert page.status_code == 200
        assert NAME not in page.text
        assert "&lt;b&gt;spring&lt;/b&gt; &amp; &#34;sale&#34;" in page.text
        assert f'href="/ui/campaigns/{campaign_id}"' in page.text
        assert f'href="/ui/messages?campaign={campaign_id}"' in page.text
        assert f'href="/ui/analytics?by=campaign&amp;key={campaign_id}"' in page.text
        assert 'class="badge campaign-running">running<' in page.text
        row = page.text[page.text.index(f'href="/ui/campaigns/{campaign_id}"') :]
        figures = re.findall(r'<td class="num">([^<]*)</td>', row)
        # queued, sent, delivered, failed, delivery rate
        assert figures[:5] == ["5", "0", "0", "0", "—"]
        assert "sandbox-trans" in row and "sandbox" in row

        paused_only = await client.get("/ui/campaigns?status=paused")
        assert campaign_id not in paused_only.text
        assert "No campaign is paused." in paused_only.text
        running_only = await client.get("/ui/campaigns?status=running")
        assert campaign_id in running_only.text
        assert (await client.get("/ui/campaigns?cursor=" + "Z" * 40)).status_code == 400

        detail = await client.get(f"/ui/campaigns/{campaign_id}")
        assert detail.status_code == 200
        assert BODY not in detail.text and "Hi &lt;i&gt;there&lt;/i&gt;, 20% off" in detail.text
        assert NAME not in detail.text
        assert f'action="/ui/campaigns/{campaign_id}/pause"' in detail.text
        assert f'action="/ui/campaigns/{campaign_id}/cancel"' in detail.text
        assert "/resume" not in detail.text
        assert "&lt;b&gt;spring" in detail.text

        missing = await client.get("/ui/campaigns/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert missing.status_code == 404
        assert "There is no campaign" in missing.text


async def test_pause_resume_and_cancel_change_the_stored_campaign_and_refusals_are_shown(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        campaign_id = await _create_campaign(gw)

        # Without this session's CSRF token nothing changes.
        bare = await client.post(f"/ui/campaigns/{campaign_id}/pause")
        assert bare.status_code == 403
        forged = await _post(client, campaign_id, "cancel", "x" * 43)
        assert forged.status_code == 403
        assert await _status(gw, campaign_id) == CampaignStatus.RUNNING

        paused = await _post(client, campaign_id, "pause", csrf)
        assert paused.status_code == 303
        assert paused.headers["location"] == f"/ui/campaigns/{campaign_id}"
        assert await _status(gw, campaign_id) == CampaignStatus.PAUSED
        assert await _next_attempts(gw, campaign_id) == [None] * 5
        shown = await client.get(paused.headers["location"])
        assert "Campaign paused: 5 unsent messages held." in shown.text
        assert f'action="/ui/campaigns/{campaign_id}/resume"' in shown.text
        assert "/pause" not in shown.text

        again = await _post(client, campaign_id, "pause", csrf)
        assert again.status_code == 409
        assert "Nothing changed: the campaign is paused; only a running campaign pauses" in (
            again.text
        )
        assert await _status(gw, campaign_id) == CampaignStatus.PAUSED

        resumed = await _post(client, campaign_id, "resume", csrf)
        assert resumed.status_code == 303
        assert await _status(gw, campaign_id) == CampaignStatus.RUNNING
        # The woken runner reschedules the held messages.
        async with asyncio.timeout(20):
            while None in await _next_attempts(gw, campaign_id):
                await asyncio.sleep(0.1)
        refused = await _post(client, campaign_id, "resume", csrf)
        assert refused.status_code == 409
        assert "the campaign is running; only a paused one resumes" in refused.text

        bare_cancel = await client.post(f"/ui/campaigns/{campaign_id}/cancel", data={"x": "y"})
        assert bare_cancel.status_code == 403
        assert await _status(gw, campaign_id) == CampaignStatus.RUNNING

        canceled = await _post(client, campaign_id, "cancel", csrf)
        assert canceled.status_code == 303
        assert await _status(gw, campaign_id) == CampaignStatus.CANCELED
        page = await client.get(canceled.headers["location"])
        assert "Campaign canceled: 5 unsent messages canceled." in page.text
        assert "can no longer be paused, resumed or canceled" in page.text
        assert re.search(r'tile-value">5</span><span class="tile-label">canceled', page.text)

        for action in ("pause", "resume", "cancel"):
            refusal = await _post(client, campaign_id, action, csrf)
            assert refusal.status_code == 409, action
            assert 'id="campaign-refusal"' in refusal.text
            assert "the campaign is canceled" in refusal.text
        assert await _status(gw, campaign_id) == CampaignStatus.CANCELED
        unknown = await _post(client, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "pause", csrf)
        assert unknown.status_code == 404
