"""Delivery tracking for the dashboard: read stored callbacks, propose and apply a mapping.

A stored callback is decoded into the document the `delivery` mapping reads; its fields
(relative to the first report when `reports` selects a list) fill the mapping dropdowns,
pre-selected from the connector's mapping or, without one, from `suggest_delivery_mapping`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update

from smsrelay.connectors.definition import Delivery
from smsrelay.connectors.delivery import (
    decode_callback,
    list_fields,
    parse_delivery_callback,
    suggest_delivery_mapping,
)
from smsrelay.connectors.errors import CallbackError
from smsrelay.connectors.exchange import DeliveryReport
from smsrelay.connectors.paths import PathEvaluationError, PathSyntaxError, compile_value_path
from smsrelay.store.database import Database
from smsrelay.store.delivery_reports import CallbackState, StoredCallback
from smsrelay.store.tables import delivery_reports

# The mapping keys the page lets the user choose, in the order shown.
FIELD_ROLES: tuple[tuple[str, str, bool], ...] = (
    ("message_id", "Message id", True),
    ("status", "Status", True),
    ("reason", "Failure reason", False),
    ("error_code", "Error code", False),
    ("recipient", "Recipient number", False),
    ("timestamp", "Time of the report", False),
)
VALUE_LISTS = ("delivered", "failed", "pending")


@dataclass
class CallbackReading:
    """One stored callback as the page shows it: raw, decoded, and as mapped now."""

    callback: StoredCallback
    body_text: str
    document: Any = None
    decode_error: str | None = None
    reports: list[DeliveryReport] = field(default_factory=list)
    mapping_error: str | None = None


def read_callback(callback: StoredCallback, delivery: Delivery | None) -> CallbackReading:
    """Decode a stored callback and, with a mapping, read its reports."""
    reading = CallbackReading(callback, callback.body.decode("utf-8", "replace"))
    decode = delivery.decode if delivery is not None else ()
    try:
        reading.document = decode_callback(callback.as_inbound(), decode)
    except CallbackError as exc:
        reading.decode_error = str(exc)
        return reading
    if delivery is not None:
        try:
            reading.reports = parse_delivery_callback(delivery, callback.as_inbound())
        except CallbackError as exc:
            reading.mapping_error = str(exc)
    return reading


def decoded_document(callback: StoredCallback, decode: Sequence[str]) -> Any:
    """The callback's document with `decode` applied, or None if it cannot be read."""
    try:
        return decode_callback(callback.as_inbound(), decode)
    except CallbackError:
        return None


def report_fields(document: Any, reports: str) -> tuple[list[tuple[str, Any]], str | None]:
    """The fields of the first report, with paths relative to it; or why there are none."""
    if reports in ("", "$"):
        return list_fields(document), None
    try:
        path = compile_value_path(reports)
        matches = list(path.matches(document))
    except (PathSyntaxError, PathEvaluationError) as exc:
        return [], f"reports: {exc}"
    if not matches:
        return [], f"reports: {reports} selects nothing in this callback"
    return list_fields(matches[0].obj), None


def proposed_mapping(document: Any, current: Delivery | None) -> dict[str, Any]:
    """The mapping to pre-select: the connector's own, else the assistant's proposal."""
    if current is not None:
        return current.model_dump(exclude_none=True)
    suggestion = suggest_delivery_mapping(document) if document is not None else {}
    return {"reports": "$", "decode": [], "match": "provider_id", **suggestion}


def mapping_from_choice(current: Delivery | None, choice: Mapping[str, Any]) -> dict[str, Any]:
    """The `delivery` section after the user's choices (verification and window kept)."""
    section: dict[str, Any] = (
        current.model_dump(by_alias=True, exclude_none=True, mode="json") if current else {}
    )
    for key in ("reports", "decode", "match", *VALUE_LISTS):
        if key in choice:
            section[key] = choice[key]
    for role, _, required in FIELD_ROLES:
        value = choice.get(role) or ""
        if value or required:
            section[role] = value
        else:
            section.pop(role, None)
    return section


def split_values(text: str) -> list[str]:
    """A comma-separated list of status values."""
    return [item.strip() for item in text.split(",") if item.strip()]


def field_options(fields: Sequence[tuple[str, Any]], chosen: Sequence[str]) -> list[str]:
    """The paths a dropdown offers: every field, plus chosen paths the sample lacks."""
    paths = [path for path, _ in fields]
    return paths + [c for c in chosen if c and c not in paths]


async def requeue_unmapped_callbacks(db: Database, connector_id: int, now: datetime) -> int:
    """Queue a connector's unreadable and unmatched callbacks for mapping again.

    After a mapping is added or fixed, callbacks that arrived before it are read with it.
    Belongs in store.delivery_reports (reported to the lead); the update mirrors intake:
    state `received`, due now.
    """
    async with db.transaction() as conn:
        result = await conn.execute(
            update(delivery_reports)
            .where(delivery_reports.c.connector_id == connector_id)
            .where(
                delivery_reports.c.state.in_(
                    [CallbackState.ERROR.value, CallbackState.ORPHAN.value]
                )
            )
            .values(
                state=CallbackState.RECEIVED.value,
                next_check_at=now,
                error=None,
            )
        )
    return int(result.rowcount or 0)
