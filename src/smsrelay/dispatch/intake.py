"""Accepting messages into the outbox: validate, route to a sender's connector, measure, queue.

Shared by the native API, the MoEngage/CleverTap faces and the dashboard, so a message is
judged the same way whichever door it came through. Bad input is refused with field
errors before anything is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from smsrelay.connectors.errors import FieldError
from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone
from smsrelay.connectors.rendering import CompiledConnector, compile_connector
from smsrelay.connectors.text_encoding import analyse_text
from smsrelay.store.connectors import StoredConnector, get_connector_by_id
from smsrelay.store.database import Database
from smsrelay.store.errors import NoSender
from smsrelay.store.messages import NewMessage, new_message_id
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.senders import Sender, resolve_sender
from smsrelay.store.timestamps import utc_now


@dataclass(frozen=True, slots=True)
class MessageRequest:
    """A message as asked for, before validation (`to` as the caller wrote it)."""

    to: str
    body: str | None = None
    template_id: str | None = None
    template_variables: tuple[str, ...] = ()
    sender: str | None = None
    type: str = "transactional"
    params: Mapping[str, str] = field(default_factory=dict)
    campaign_id: str | None = None
    entity_id: str | None = None
    send_at: datetime | None = None
    webhook_id: str | None = None


class IntakeRefused(ValueError):
    """A message cannot be accepted; `errors` say which field and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class MessageIntake:
    """Turns MessageRequests into NewMessages, caching senders and connectors per call site.

    One instance serves one API request (a batch of up to 10 000 messages resolves each
    sender and compiles each connector once).
    """

    def __init__(
        self, database: Database, secret_box: SecretBox, *, default_region: str = ""
    ) -> None:
        self._db = database
        self._box = secret_box
        self._region = default_region or None
        self._senders: dict[tuple[str | None, str], Sender] = {}
        self._connectors: dict[int, tuple[StoredConnector, CompiledConnector]] = {}

    async def _sender(self, name: str | None, kind: str) -> Sender:
        key = (name, kind)
        if key not in self._senders:
            self._senders[key] = await resolve_sender(self._db, name, kind)
        return self._senders[key]

    async def _connector(self, connector_id: int) -> tuple[StoredConnector, CompiledConnector]:
        if connector_id not in self._connectors:
            stored = await get_connector_by_id(self._db, self._box, connector_id)
            if stored is None:
                raise IntakeRefused(
                    [FieldError("sender", "the sender's connector no longer exists")]
                )
            self._connectors[connector_id] = (stored, compile_connector(stored.definition))
        return self._connectors[connector_id]

    async def prepare(self, request: MessageRequest, *, now: datetime | None = None) -> NewMessage:
        """Validate one message and build its outbox row; raise IntakeRefused with field errors."""
        errors: list[FieldError] = []
        try:
            to = normalise_phone(request.to, self._region)
        except InvalidPhoneNumber as exc:
            errors.append(FieldError("to", str(exc)))
            to = ""
        if not request.body and not request.template_id:
            errors.append(FieldError("body", "give body or template_id"))
        try:
            sender = await self._sender(request.sender, request.type)
        except NoSender as exc:
            errors.append(FieldError("sender", str(exc)))
            raise IntakeRefused(errors) from exc
        _, compiled = await self._connector(sender.connector_id)
        errors += _missing_for_connector(compiled, request, sender.connector_name)
        if errors:
            raise IntakeRefused(errors)
        text = analyse_text(request.body or "")
        created = now or utc_now()
        send_at = request.send_at
        if send_at is not None and send_at.tzinfo is None:
            raise IntakeRefused(
                [FieldError("send_at", "needs a time zone, e.g. 2026-12-01T09:00:00Z")]
            )
        return NewMessage(
            id=new_message_id(),
            connector_id=sender.connector_id,
            to=to,
            created_at=created,
            body=request.body,
            sender_name=sender.name,
            sender_id=sender.sender_id,
            template_id=request.template_id,
            template_variables=request.template_variables,
            entity_id=request.entity_id,
            campaign_id=request.campaign_id,
            params=dict(request.params),
            webhook_id=request.webhook_id,
            send_at=send_at if send_at is not None and send_at > created else None,
            segments=text.segments,
            encoding=text.encoding,
        )

    async def connector_name(self, connector_id: int) -> str:
        """The name of a connector already used by this intake."""
        stored, _ = await self._connector(connector_id)
        return stored.name


def _missing_for_connector(
    compiled: CompiledConnector, request: MessageRequest, connector: str
) -> list[FieldError]:
    """Values the connector's templates need that this message does not carry."""
    errors: list[FieldError] = []
    names = compiled.names
    if "body" in names and "template_id" not in names and not request.body:
        errors.append(FieldError("body", f"connector {connector!r} sends the text: give body"))
    if "template_id" in names and "body" not in names and not request.template_id:
        errors.append(
            FieldError(
                "template_id", f"connector {connector!r} sends a template id: give template_id"
            )
        )
    for name in sorted(names):
        if name.startswith("params.") and name[len("params.") :] not in request.params:
            key = name[len("params.") :]
            errors.append(
                FieldError(f"params.{key}", f"connector {connector!r} needs this parameter")
            )
    return errors


async def prepare_all(
    intake: MessageIntake, requests: Sequence[MessageRequest], *, now: datetime | None = None
) -> tuple[list[tuple[int, NewMessage]], list[tuple[int, list[FieldError]]]]:
    """Prepare many messages; each is accepted or refused alone (by index)."""
    accepted: list[tuple[int, NewMessage]] = []
    refused: list[tuple[int, list[FieldError]]] = []
    created = now or utc_now()
    for index, request in enumerate(requests):
        try:
            accepted.append((index, await intake.prepare(request, now=created)))
        except IntakeRefused as exc:
            refused.append((index, exc.errors))
    return accepted, refused
