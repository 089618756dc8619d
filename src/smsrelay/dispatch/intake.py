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
from typing import Protocol

from smsrelay.connectors.errors import FieldError
from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone
from smsrelay.connectors.rendering import CompiledConnector, compile_connector
from smsrelay.connectors.text_encoding import TextEncoding, analyse_text
from smsrelay.store.connectors import StoredConnector, get_connector_by_id
from smsrelay.store.database import Database
from smsrelay.store.errors import NoSender
from smsrelay.store.messages import NewMessage, new_message_id, new_message_ids
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.senders import Sender, resolve_sender
from smsrelay.store.suppression import SuppressionRecord, find_suppressed, is_suppressed
from smsrelay.store.timestamps import utc_now
from smsrelay.store.webhooks import get_webhook

# The longest message text any door (API, MoEngage, CleverTap, campaigns) accepts.
MAX_BODY_CHARS = 4096


class AskedMessage(Protocol):
    """What intake reads of a message as asked for (`MessageRequest`, or an API body)."""

    @property
    def to(self) -> str: ...
    @property
    def body(self) -> str | None: ...
    @property
    def template_id(self) -> str | None: ...
    @property
    def template_variables(self) -> Sequence[str]: ...
    @property
    def sender(self) -> str | None: ...
    @property
    def type(self) -> str: ...
    @property
    def params(self) -> Mapping[str, str]: ...
    @property
    def campaign_id(self) -> str | None: ...
    @property
    def entity_id(self) -> str | None: ...
    @property
    def send_at(self) -> datetime | None: ...
    @property
    def webhook_id(self) -> str | None: ...


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


@dataclass(frozen=True, slots=True)
class _Route:
    """A connector as intake sees it: its name and what its templates need of a message."""

    connector: str
    needs_body: bool
    needs_template: bool
    param_keys: tuple[str, ...]


_NO_SUPPRESSIONS: Mapping[str, SuppressionRecord] = {}


class MessageIntake:
    """Turns asked messages into NewMessages, caching senders and connectors per call site.

    One instance serves one API request (a batch of up to 10 000 messages resolves each
    sender and compiles each connector once).
    """

    def __init__(
        self,
        database: Database,
        secret_box: SecretBox,
        *,
        default_region: str = "",
        check_webhooks: bool = True,
    ) -> None:
        self._db = database
        self._box = secret_box
        self._region = default_region or None
        self._senders: dict[tuple[str | None, str], Sender] = {}
        self._connectors: dict[int, tuple[StoredConnector, CompiledConnector]] = {}
        self._routes: dict[int, _Route] = {}
        self._suppressed: dict[str, SuppressionRecord] | None = None  # preloaded for a batch
        # Webhook ids asked for, and whether each exists; None: not checked here (a campaign
        # checks its webhook when created, the MoEngage and CleverTap faces before intake).
        self._webhooks: dict[str, bool] | None = {} if check_webhooks else None
        # The last body measured: a batch often sends one text to everyone.
        self._last_text: tuple[str, TextEncoding] = ("", analyse_text(""))

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

    async def _route(self, connector_id: int) -> _Route:
        found = self._routes.get(connector_id)
        if found is None:
            stored, compiled = await self._connector(connector_id)
            found = self._routes[connector_id] = _Route(stored.name, *_needs(compiled.names))
        return found

    async def preload_suppressions(self, numbers: Iterable[str]) -> None:
        """Look the suppression list up once for a batch instead of once per message."""
        normalised = set()
        for raw in numbers:
            try:
                normalised.add(normalise_phone(raw, self._region))
            except InvalidPhoneNumber:
                continue
        self._suppressed = await find_suppressed(self._db, normalised)

    async def _suppression_of(self, raw: str) -> Mapping[str, SuppressionRecord]:
        try:
            to = normalise_phone(raw, self._region)
        except InvalidPhoneNumber:
            return _NO_SUPPRESSIONS
        record = await is_suppressed(self._db, to)
        return {to: record} if record is not None else _NO_SUPPRESSIONS

    async def prepare(
        self,
        request: AskedMessage,
        *,
        now: datetime | None = None,
        message_id: str | None = None,
    ) -> NewMessage:
        """Validate one message and build its outbox row; raise IntakeRefused with field errors."""
        sender = self._senders.get((request.sender, request.type))
        if sender is None:
            try:
                sender = await self._sender(request.sender, request.type)
            except NoSender as exc:
                _, errors = self._recipient_and_content(request)
                errors.append(FieldError("sender", str(exc)))
                raise IntakeRefused(errors) from exc
        # A sender may name a connector group: its first connector is the one to satisfy.
        route = await self._route(sender.connector_id)
        webhook_id = request.webhook_id
        known = self._webhooks
        if known is not None and webhook_id is not None and webhook_id not in known:
            known[webhook_id] = await get_webhook(self._db, webhook_id) is not None
        suppressed: Mapping[str, SuppressionRecord] | None = self._suppressed
        if suppressed is None and sender.type == "promotional":
            suppressed = await self._suppression_of(request.to)
        return self._judge(
            request,
            sender,
            route,
            suppressed or _NO_SUPPRESSIONS,
            now or utc_now(),
            message_id or new_message_id(),
        )

    def prepare_known(
        self, request: AskedMessage, created: datetime, message_id: str
    ) -> NewMessage | None:
        """`prepare` without awaiting, when everything it looks up is known already.

        None when something must be looked up first (then call `prepare`); raises
        IntakeRefused as `prepare` does.
        """
        sender = self._senders.get((request.sender, request.type))
        if sender is None:
            return None
        route = self._routes.get(sender.connector_id)
        if route is None:
            return None
        known = self._webhooks
        if known is not None and request.webhook_id is not None and request.webhook_id not in known:
            return None
        suppressed: Mapping[str, SuppressionRecord] | None = self._suppressed
        if suppressed is None:
            if sender.type == "promotional":
                return None
            suppressed = _NO_SUPPRESSIONS
        return self._judge(request, sender, route, suppressed, created, message_id)

    def _recipient_and_content(self, request: AskedMessage) -> tuple[str, list[FieldError]]:
        errors: list[FieldError] = []
        try:
            to = normalise_phone(request.to, self._region)
        except InvalidPhoneNumber as exc:
            errors.append(FieldError("to", str(exc)))
            to = ""
        if not request.body and not request.template_id:
            errors.append(FieldError("body", "give body or template_id"))
        return to, errors

    def _judge(
        self,
        request: AskedMessage,
        sender: Sender,
        route: _Route,
        suppressed: Mapping[str, SuppressionRecord],
        created: datetime,
        message_id: str,
    ) -> NewMessage:
        to, errors = self._recipient_and_content(request)
        if route.needs_body or route.needs_template or route.param_keys:
            errors += _missing_for_connector(route, request)
        if to and sender.type == "promotional":
            record = suppressed.get(to)
            if record is not None:
                errors.append(FieldError("to", record.refusal()))
        webhook_id = request.webhook_id
        known = self._webhooks
        if known is not None and webhook_id is not None and not known.get(webhook_id, False):
            errors.append(unknown_webhook(webhook_id))
        if errors:
            raise IntakeRefused(errors)
        send_at = request.send_at
        if send_at is not None:
            if send_at.tzinfo is None:
                raise IntakeRefused(
                    [FieldError("send_at", "needs a time zone, e.g. 2026-12-01T09:00:00Z")]
                )
            if send_at <= created:
                send_at = None
        body = request.body
        text = self._measure(body or "")
        return NewMessage(
            message_id,
            sender.connector_id,
            to,
            created,
            body,
            sender.name,
            sender.sender_id,
            request.template_id,
            tuple(request.template_variables),
            request.entity_id,
            request.campaign_id,
            dict(request.params),
            request.webhook_id,
            send_at,
            text.segments,
            text.encoding,
        )

    def _measure(self, body: str) -> TextEncoding:
        last_body, last = self._last_text
        if body != last_body:
            last = analyse_text(body)
            self._last_text = (body, last)
        return last

    async def connector_name(self, connector_id: int) -> str:
        """The name of a connector already used by this intake."""
        stored, _ = await self._connector(connector_id)
        return stored.name


def unknown_webhook(webhook_id: str) -> FieldError:
    """The refusal of a `webhook_id` that names no webhook."""
    return FieldError(
        "webhook_id",
        f"no webhook {webhook_id!r}: create it first (POST /v1/webhooks) or leave webhook_id out",
    )


def _missing_for_connector(route: _Route, request: AskedMessage) -> list[FieldError]:
    """Values the connector's templates need that this message does not carry."""
    connector = route.connector
    errors: list[FieldError] = []
    if route.needs_body and not request.body:
        errors.append(FieldError("body", f"connector {connector!r} sends the text: give body"))
    if route.needs_template and not request.template_id:
        errors.append(
            FieldError(
                "template_id", f"connector {connector!r} sends a template id: give template_id"
            )
        )
    for key in route.param_keys:
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
    intake: MessageIntake, requests: Sequence[AskedMessage], *, now: datetime | None = None
) -> tuple[list[tuple[int, NewMessage]], list[tuple[int, list[FieldError]]]]:
    """Prepare many messages; each is accepted or refused alone (by index)."""
    accepted: list[tuple[int, NewMessage]] = []
    refused: list[tuple[int, list[FieldError]]] = []
    created = now or utc_now()
    if len(requests) > 1 and any(r.type == "promotional" or r.sender for r in requests):
        await intake.preload_suppressions(r.to for r in requests)
    ids = new_message_ids(len(requests))
    for index, request in enumerate(requests):
        try:
            # After the first message of each sender, nothing is awaited.
            message = intake.prepare_known(request, created, ids[index])
            if message is None:
                message = await intake.prepare(request, now=created, message_id=ids[index])
        except IntakeRefused as exc:
            refused.append((index, exc.errors))
        else:
            accepted.append((index, message))
    return accepted, refused
