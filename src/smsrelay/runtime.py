"""The running parts of one smsrelay process, built once and passed to the API, dashboard and CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smsrelay.settings import Settings

if TYPE_CHECKING:
    from smsrelay.dispatch.transport import Transport
    from smsrelay.dispatch.worker import Dispatcher
    from smsrelay.store.database import Database
    from smsrelay.store.secret_box import SecretBox


@dataclass
class Runtime:
    """Settings plus the live objects a request handler needs (no globals)."""

    settings: Settings
    database: Database
    secret_box: SecretBox
    transport: Transport
    dispatcher: Dispatcher | None = None
    sandbox: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def callback_url(self, dlr_token: str) -> str:
        """The URL a provider calls with delivery reports for the connector owning this token."""
        return f"{self.settings.base_url}/dlr/{dlr_token}"

    def notify_dispatcher(self) -> None:
        """Wake the in-process dispatcher after new messages were queued."""
        if self.dispatcher is not None:
            self.dispatcher.notify()
