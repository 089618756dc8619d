"""Reading send requests in the shapes the sandbox accepts, with field-level errors.

Pure functions from a parsed document (JSON value, form or query mapping) to `SendItem`s;
every problem is reported at once, each naming its field (`messages[2].to`).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_BATCH = 10_000
MAX_BODY_CHARS = 10_000
_PHONE = re.compile(r"^\+?[0-9]{4,20}$")


class Api(enum.StrEnum):
    """The request shape a message arrived in; it also decides the DLR format."""

    JSON = "json"
    BATCH = "batch"
    TWILIO = "twilio"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem with one field of a send request."""

    field: str | None
    message: str

    def to_json(self) -> dict[str, str | None]:
        """The problem as an element of an error answer."""
        return {"field": self.field, "message": self.message}


class IntakeError(ValueError):
    """A send request that cannot be read; carries every problem found."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field or 'request'}: {p.message}" for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class SendItem:
    """One message to one number, as the client asked for it."""

    to: str
    body: str
    sender: str | None = None
    client_ref: str | None = None
    callback_url: str | None = None


def read_json(raw: bytes) -> Any:
    """Parse a JSON request body or raise IntakeError."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntakeError(
            [FieldProblem(None, f"the request body is not valid JSON: {exc}")]
        ) from exc


def parse_json_send(document: Any) -> SendItem:
    """`POST /api/messages`: `{to, from|sender, body|text, client_ref, callback_url}`."""
    if not isinstance(document, Mapping):
        raise IntakeError([FieldProblem(None, "the request body must be a JSON object")])
    problems: list[FieldProblem] = []
    item = _item(document, "", problems, sender=None, callback_url=None)
    if problems or item is None:
        raise IntakeError(problems)
    return item


def parse_json_batch(document: Any) -> list[SendItem]:
    """`POST /api/messages/batch`: `{from, callback_url, messages: [{to, body, client_ref}]}`.

    `from` and `callback_url` may also be given per element, overriding the shared ones.
    """
    if not isinstance(document, Mapping):
        raise IntakeError([FieldProblem(None, "the request body must be a JSON object")])
    problems: list[FieldProblem] = []
    sender = _optional_text(document, ("from", "sender"), "", problems)
    callback_url = _callback_url(document, ("callback_url",), "", problems)
    messages = document.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append(FieldProblem("messages", "is required: a non-empty list of messages"))
        raise IntakeError(problems)
    if len(messages) > MAX_BATCH:
        problems.append(
            FieldProblem("messages", f"has {len(messages)} elements; at most {MAX_BATCH}")
        )
        raise IntakeError(problems)
    items: list[SendItem] = []
    for i, element in enumerate(messages):
        prefix = f"messages[{i}]."
        if not isinstance(element, Mapping):
            problems.append(FieldProblem(f"messages[{i}]", "must be an object"))
            continue
        item = _item(element, prefix, problems, sender=sender, callback_url=callback_url)
        if item is not None:
            items.append(item)
    if problems:
        raise IntakeError(problems)
    return items


def parse_twilio_form(form: Mapping[str, str]) -> SendItem:
    """Twilio's Messages.json form: `To`, `From` (or `MessagingServiceSid`), `Body`, `StatusCallback`."""
    problems: list[FieldProblem] = []
    to = _phone(form, ("To",), "", problems)
    body = _body(form, ("Body",), "", problems)
    sender = _optional_text(form, ("From", "MessagingServiceSid"), "", problems)
    if sender is None:
        problems.append(FieldProblem("From", "is required (or MessagingServiceSid)"))
    callback_url = _callback_url(form, ("StatusCallback",), "", problems)
    if problems or to is None or body is None:
        raise IntakeError(problems)
    return SendItem(to=to, body=body, sender=sender, callback_url=callback_url)


def parse_query_send(query: Mapping[str, str]) -> SendItem:
    """`GET /api/http/send?to=&from=&text=&ref=&dlr_url=`."""
    problems: list[FieldProblem] = []
    to = _phone(query, ("to",), "", problems)
    body = _body(query, ("text",), "", problems)
    sender = _optional_text(query, ("from",), "", problems)
    ref = _optional_text(query, ("ref",), "", problems)
    callback_url = _callback_url(query, ("dlr_url",), "", problems)
    if problems or to is None or body is None:
        raise IntakeError(problems)
    return SendItem(to=to, body=body, sender=sender, client_ref=ref, callback_url=callback_url)


def _item(
    doc: Mapping[str, Any],
    prefix: str,
    problems: list[FieldProblem],
    *,
    sender: str | None,
    callback_url: str | None,
) -> SendItem | None:
    before = len(problems)
    to = _phone(doc, ("to",), prefix, problems)
    body = _body(doc, ("body", "text"), prefix, problems)
    own_sender = _optional_text(doc, ("from", "sender"), prefix, problems)
    client_ref = _optional_text(doc, ("client_ref",), prefix, problems)
    own_callback = _callback_url(doc, ("callback_url",), prefix, problems)
    if len(problems) > before or to is None or body is None:
        return None
    return SendItem(
        to=to,
        body=body,
        sender=own_sender if own_sender is not None else sender,
        client_ref=client_ref,
        callback_url=own_callback if own_callback is not None else callback_url,
    )


def _first(doc: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    """The first key present (accepting aliases), with its value; (keys[0], None) if none."""
    for key in keys:
        if key in doc and doc[key] is not None:
            return key, doc[key]
    return keys[0], None


def _phone(
    doc: Mapping[str, Any], keys: tuple[str, ...], prefix: str, problems: list[FieldProblem]
) -> str | None:
    key, value = _first(doc, keys)
    if value is None or value == "":
        problems.append(FieldProblem(prefix + key, "is required: the recipient's phone number"))
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _PHONE.match(value.strip()):
        problems.append(
            FieldProblem(
                prefix + key, f"is not a phone number (4 to 20 digits, optional +): {value!r}"
            )
        )
        return None
    return value.strip()


def _body(
    doc: Mapping[str, Any], keys: tuple[str, ...], prefix: str, problems: list[FieldProblem]
) -> str | None:
    key, value = _first(doc, keys)
    if not isinstance(value, str) or value == "":
        names = " or ".join(keys)
        problems.append(FieldProblem(prefix + key, f"is required: the message text ({names})"))
        return None
    if len(value) > MAX_BODY_CHARS:
        problems.append(
            FieldProblem(prefix + key, f"has {len(value)} characters; at most {MAX_BODY_CHARS}")
        )
        return None
    return value


def _optional_text(
    doc: Mapping[str, Any], keys: tuple[str, ...], prefix: str, problems: list[FieldProblem]
) -> str | None:
    key, value = _first(doc, keys)
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or len(value) > 256:
        problems.append(FieldProblem(prefix + key, "must be a text of at most 256 characters"))
        return None
    return value


def _callback_url(
    doc: Mapping[str, Any], keys: tuple[str, ...], prefix: str, problems: list[FieldProblem]
) -> str | None:
    key, value = _first(doc, keys)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(FieldProblem(prefix + key, "must be a URL"))
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(
            FieldProblem(prefix + key, f"must be an http:// or https:// URL: {value!r}")
        )
        return None
    return value
