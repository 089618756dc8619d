"""Accepting messages into the outbox: validate, route to a sender's connector, measure, queue.

Shared by the native API, the MoEngage/CleverTap faces and the dashboard, so a message is
judged the same way whichever door it came through. Bad input is refused with field
errors before anything is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

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
from smsrelay.store.suppression import SuppressionRecord, find_suppressed, is_suppressed
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
        self._suppressed: dict[str, SuppressionRecord] | None = None  # preloaded for a batch

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

    async def preload_suppressions(self, numbers: Iterable[str]) -> None:
        """Look the suppression list up once for a batch instead of once per message."""
        normalised = set()
        for raw in numbers:
            try:
                normalised.add(normalise_phone(raw, self._region))
            except InvalidPhoneNumber:
                continue
        self._suppressed = await find_suppressed(self._db, normalised)

    async def _suppression(self, to: str) -> SuppressionRecord | None:
        if self._suppressed is not None:
            return self._suppressed.get(to)
        return await is_suppressed(self._db, to)

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
        # Cached after the first message of a batch: no await per message then.
        sender = self._senders.get((request.sender, request.type))
        if sender is None:
            try:
                sender = await self._sender(request.sender, request.type)
            except NoSender as exc:
                errors.append(FieldError("sender", str(exc)))
                raise IntakeRefused(errors) from exc
        # A sender may name a connector group: its first connector is the one to satisfy.
        found = self._connectors.get(sender.connector_id)
        stored, compiled = (
            found if found is not None else await self._connector(sender.connector_id)
        )
        errors += _missing_for_connector(compiled, request, stored.name)
        if to and sender.type == "promotional":
            suppressed = await self._suppression(to)
            if suppressed is not None:
                errors.append(FieldError("to", suppressed.refusal()))
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
    needs_body, needs_template, param_keys = _needs(compiled.names)
    errors: list[FieldError] = []
    if needs_body and not request.body:
        errors.append(FieldError("body", f"connector {connector!r} sends the text: give body"))
    if needs_template and not request.template_id:
        errors.append(
            FieldError(
                "template_id", f"connector {connector!r} sends a template id: give template_id"
            )
        )
    for key in param_keys:
        if key not in request.params:
            errors.append(
                FieldError(f"params.{key}", f"connector {connector!r} needs this parameter")
            )
    return errors


@lru_cache(maxsize=256)
def _needs(names: frozenset[str]) -> tuple[bool, bool, tuple[str, ...]]:
    """What a connector's placeholders ask of each message: body, template id, parameters."""
    needs_body = "body" in names and "template_id" not in names
    needs_template = "template_id" in names and "body" not in names
    params = tuple(name[len("params.") :] for name in sorted(names) if name.startswith("params."))
    return needs_body, needs_template, params


async def prepare_all(
    intake: MessageIntake, requests: Sequence[MessageRequest], *, now: datetime | None = None
) -> tuple[list[tuple[int, NewMessage]], list[tuple[int, list[FieldError]]]]:
    """Prepare many messages; each is accepted or refused alone (by index)."""
    accepted: list[tuple[int, NewMessage]] = []
    refused: list[tuple[int, list[FieldError]]] = []
    created = now or utc_now()
    if len(requests) > 1 and any(r.type == "promotional" or r.sender for r in requests):
        await intake.preload_suppressions(r.to for r in requests)
    for index, request in enumerate(requests):
        try:
            accepted.append((index, await intake.prepare(request, now=created)))
        except IntakeRefused as exc:
            refused.append((index, exc.errors))
    return accepted, refused
