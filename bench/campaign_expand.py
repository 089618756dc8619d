"""Expanding a campaign: a 1 000 000-row CSV staged and queued into SQLite, rows/s and peak memory.

Run `python bench/campaign_expand.py [--rows N] [--transactional]`. In a temporary directory it
writes a CSV (phone, first_name, city; about 1% duplicates and 0.2% invalid numbers), creates
a SQLite database with the sandbox connector and a sender, then does what `POST
/v1/campaigns` and the campaign runner do: read the CSV in chunks into the staged audience,
and expand it part by part into queued, personalised, scheduled messages (throttle slots;
quiet hours by the recipient's zone unless --transactional). Nothing is sent.

Prints rows per second for staging and for expansion, and the process's peak resident
memory (`resource.getrusage` maxrss), which must stay under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from smsrelay.connectors.definition import load_definition
from smsrelay.dispatch.audience import CsvAudience
from smsrelay.dispatch.campaign_runner import CampaignRunner, stage_audience
from smsrelay.dispatch.quiet_hours import QuietHours
from smsrelay.sandbox import sandbox_connector_yaml
from smsrelay.settings import Settings
from smsrelay.store.campaigns import NewCampaign, create_campaign, finish_upload, get_campaign
from smsrelay.store.connectors import save_connector
from smsrelay.store.database import open_database
from smsrelay.store.messages import new_message_id
from smsrelay.store.secret_box import SecretBox, generate_secret_key
from smsrelay.store.senders import create_sender
from smsrelay.store.tables import messages
from smsrelay.store.timestamps import utc_now

MEMORY_BUDGET_MB = 300
NAMES = ("Ann", "Zoë", "Bob", "Émile", "李", "Fatima", "Jürgen")


def peak_memory_mb() -> float:
    """The process's peak resident set size so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_audience(path: Path, rows: int) -> None:
    """A CSV of `rows` recipients: German mobiles, ~1% repeated, ~0.2% not numbers."""
    rng = random.Random(1)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["phone", "first_name", "city"])
        for i in range(rows):
            if i % 500 == 499:
                phone = "not-a-number"
            elif i % 100 == 99:
                phone = f"+49151{rng.randrange(i):08d}"  # probably seen before
            else:
                phone = f"+49151{i:08d}"
            writer.writerow([phone, rng.choice(NAMES), f"City {i % 1000}"])


async def run(rows: int, promotional: bool) -> int:
    """Stage and expand; print the figures; return 1 if over the memory budget."""
    with tempfile.TemporaryDirectory(prefix="smsrelay-bench-") as tmp:
        workdir = Path(tmp)
        audience = workdir / "audience.csv"
        started = time.perf_counter()
        write_audience(audience, rows)
        size_mb = audience.stat().st_size / 1e6
        print(f"wrote {rows} rows ({size_mb:.1f} MB) in {time.perf_counter() - started:.1f} s")

        db = open_database(f"sqlite:///{workdir / 'bench.db'}")
        await db.migrate()
        box = SecretBox([generate_secret_key()])
        definition = load_definition(sandbox_connector_yaml("http://127.0.0.1:9/sandbox"))
        connector = await save_connector(db, box, definition)
        kind = "promotional" if promotional else "transactional"
        await create_sender(db, name="bench", connector="sandbox", sender_id="BENCH", type=kind)

        with audience.open("rb") as file:
            reader = CsvAudience(file)
            campaign_id = new_message_id()
            now = utc_now()
            await create_campaign(
                db,
                NewCampaign(
                    id=campaign_id,
                    name="bench",
                    sender_name="bench",
                    connector_id=connector.id,
                    promotional=promotional,
                    audience_source="csv",
                    audience_columns=reader.layout.columns,
                    phone_column=reader.layout.phone_column,
                    created_at=now,
                    body="Hi {{params.first_name}}, news from $$city!",
                    throttle_per_minute=100_000,
                    quiet_hours=QuietHours().to_json() if promotional else None,
                ),
                owner="bench",
                lease_until=now.replace(year=now.year + 1),
            )
            started = time.perf_counter()
            staged = await stage_audience(
                db, campaign_id, reader.chunks(), owner="bench", lease_seconds=3600
            )
            staging = time.perf_counter() - started
        await finish_upload(db, campaign_id)
        print(
            f"staged   {staged} rows in {staging:.1f} s: {staged / staging:,.0f} rows/s, "
            f"peak {peak_memory_mb():.0f} MB"
        )

        runner = CampaignRunner(db, box, Settings(database_url="sqlite://"), owner="bench")
        started = time.perf_counter()
        await runner.run_until_idle()
        expansion = time.perf_counter() - started
        campaign = await get_campaign(db, campaign_id)
        assert campaign is not None
        async with db.connect() as conn:
            queued = (
                await conn.execute(
                    select(func.count()).where(messages.c.campaign_id == campaign_id)
                )
            ).scalar_one()
        await db.close()

    peak = peak_memory_mb()
    print(
        f"expanded {campaign.rows_read} rows in {expansion:.1f} s: "
        f"{campaign.rows_read / expansion:,.0f} rows/s "
        f"({'promotional, quiet hours' if promotional else 'transactional'}, throttled)"
    )
    print(
        f"  queued {queued} (campaign says {campaign.queued}), invalid {campaign.rows_invalid}, "
        f"duplicates {campaign.duplicates}, status {campaign.status}"
    )
    print(f"  sending from {campaign.schedule_anchor} to {campaign.last_slot_at}")
    print(f"peak memory (maxrss): {peak:.0f} MB (budget {MEMORY_BUDGET_MB} MB)")
    return 0 if peak < MEMORY_BUDGET_MB else 1


def main() -> None:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--transactional", action="store_true", help="a transactional sender: no quiet hours"
    )
    options = parser.parse_args()
    sys.exit(asyncio.run(run(options.rows, promotional=not options.transactional)))


if __name__ == "__main__":
    main()
