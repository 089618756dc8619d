"""The background work of one process: dispatcher, delivery mapper, webhooks, campaigns, pruning.

`smsrelay serve` runs it in-process (the embedded setup) and `smsrelay worker` runs only
this; both build it here, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from smsrelay.dispatch.campaign_runner import CampaignRunner
from smsrelay.dispatch.delivery_mapper import DeliveryMapper
from smsrelay.dispatch.housekeeping import Housekeeper
from smsrelay.dispatch.transport import Transport
from smsrelay.dispatch.webhook_sender import WebhookSender, webhook_sender_for
from smsrelay.dispatch.worker import Dispatcher
from smsrelay.settings import Settings
from smsrelay.store.database import Database
from smsrelay.store.secret_box import SecretBox

STOP_TIMEOUT_SECONDS = 15.0


@dataclass
class BackgroundWork:
    """The long-running loops of a process, started together and stopped together."""

    dispatcher: Dispatcher
    delivery_mapper: DeliveryMapper
    webhook_sender: WebhookSender
    campaign_runner: CampaignRunner
    housekeeper: Housekeeper
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        """Start every loop as a task of the running event loop."""
        loops = {
            "dispatcher": self.dispatcher.run,
            "delivery-mapper": self.delivery_mapper.run,
            "webhook-sender": self.webhook_sender.run,
            "campaign-runner": self.campaign_runner.run,
            "housekeeper": self.housekeeper.run,
        }
        self.tasks = [
            asyncio.create_task(run(self.stop_event), name=name) for name, run in loops.items()
        ]

    async def wait(self) -> None:
        """Run until every loop ends (after `stop_event` is set); a crashed loop raises here."""
        await asyncio.gather(*self.tasks)

    async def stop(self) -> None:
        """Ask every loop to stop and wait for them (in-flight sends are recorded first)."""
        self.stop_event.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=STOP_TIMEOUT_SECONDS)


def background_work(
    database: Database,
    secret_box: SecretBox,
    transport: Transport,
    settings: Settings,
    *,
    on_queued: Callable[[], None] | None = None,
) -> BackgroundWork:
    """Build (not start) the loops of a process from its parts."""
    dispatcher = Dispatcher(database, secret_box, transport, settings)
    return BackgroundWork(
        dispatcher=dispatcher,
        delivery_mapper=DeliveryMapper(database, secret_box, settings),
        webhook_sender=webhook_sender_for(database, secret_box, transport, settings),
        campaign_runner=CampaignRunner(
            database, secret_box, settings, on_queued=on_queued or dispatcher.notify
        ),
        housekeeper=Housekeeper(database, settings),
    )
