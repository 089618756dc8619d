"""What the MoEngage and CleverTap faces share: reading their requests, numbers and senders.

The platforms send what their users typed into a dashboard form, so values come as JSON
or as a form, numbers as strings or as JSON numbers, and phone numbers with the country
code but often without `+`. These functions turn that into plain strings and pick the
smsrelay sender a request names; the message itself is then judged by `MessageIntake`,
like any other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request

from smsrelay.connectors.errors import FieldError
from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone
from smsrelay.store.senders import Sender


class InboundRefused(ValueError):
    """A platform request cannot be read: `status` (400, 413, 415, 422) and field errors."""

    def __init__(self, status: int, detail: str, errors: Sequence[FieldError] = ()) -> None:
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        super().__init__(detail)


JSON_TYPES = ("application/json", "text/json")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_json_body(request: Request, *, max_bytes: int) -> Any:
    """The request body parsed as JSON; InboundRefused when it is too big or not JSON."""
    body = await request.body()
    if len(body) > max_bytes:
        raise InboundRefused(413, f"the body is larger than {max_bytes} bytes")
    media = _media_type(request)
    if media and media not in JSON_TYPES and not media.endswith("+json"):
        raise InboundRefused(415, f"send JSON (Content-Type: application/json), not {media!r}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InboundRefused(400, f"the body is not valid JSON: {exc}") from exc


async def read_fields(request: Request, *, max_bytes: int) -> dict[str, Any]:
    """The request's fields: its JSON object or form, over its query string (body wins).

    A repeated form key keeps its last value. Refused: another content type (415), a JSON
    body that is not an object (422), a body over `max_bytes` (413).
    """
    fields: dict[str, Any] = dict(request.query_params)
    media = _media_type(request)
    if media in FORM_TYPES:
        body = await request.body()
        if len(body) > max_bytes:
            raise InboundRefused(413, f"the body is larger than {max_bytes} bytes")
        form: FormData = await request.form()
        fields.update({key: value for key, value in form.items() if isinstance(value, str)})
        return fields
    if media in JSON_TYPES or media.endswith("+json") or (not media and await request.body()):
        document = await read_json_body(request, max_bytes=max_bytes)
        if not isinstance(document, dict):
            raise InboundRefused(
                422,
                "the JSON body must be an object of fields",
                [FieldError("body", "not an object")],
            )
        fields.update(document)
        return fields
    if media:
        raise InboundRefused(
            415,
            f"send JSON (application/json) or a form (application/x-www-form-urlencoded), "
            f"not {media!r}",
        )
    return fields


def text_fields(
    fields: Mapping[str, Any], known: Iterable[str], *, prefix: str = ""
) -> tuple[dict[str, str], list[FieldError]]:
    """Known fields as stripped strings (JSON numbers and booleans too); empty ones dropped.

    Unknown keys and values that are lists or objects are errors at `prefix + key`.
    Dashboards send an optional field nobody mapped as an empty string: that is absent.
    """
    allowed = set(known)
    values: dict[str, str] = {}
    errors: list[FieldError] = []
    for key, raw in fields.items():
        path = f"{prefix}{key}"
        if key not in allowed:
            errors.append(
                FieldError(path, f"unknown field; known fields: {', '.join(sorted(allowed))}")
            )
            continue
        if raw is None:
            continue
        if isinstance(raw, bool):
            text = "1" if raw else "0"
        elif isinstance(raw, int | float | str):
            text = str(raw).strip()
        else:
            errors.append(FieldError(path, "must be a text or a number, not a list or object"))
            continue
        if text:
            values[key] = text
    return values, errors


def platform_number(raw: str, default_region: str = "") -> str:
    """A recipient as the platforms write it, made ready for intake (E.164 when possible).

    MoEngage and CleverTap send numbers with the country code and usually without `+`
    (`919812345678`); such a number is read as international when it is valid that way,
    otherwise it is left to intake (which applies the default region or explains).
    """
    text = raw.strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if text.startswith("+") or text.startswith("00") or not digits:
        return text
    if all(ch.isdigit() or ch in " -()." for ch in text):
        try:
            return normalise_phone("+" + digits)
        except InvalidPhoneNumber:
            pass
    return text if default_region else "+" + digits


def pick_sender(senders: Sequence[Sender], requested: str | None, kind: str) -> Sender | None:
    """The sender a platform request names, or None to use the default sender of `kind`.

    `requested` is matched against sender names first, then against sender IDs (what the
    platform user typed as sender, e.g. `TXTSMS`); among several senders with that ID the
    one of type `kind` wins, then a default one, then the first by name.
    """
    if not requested:
        return None
    for sender in senders:
        if sender.name == requested:
            return sender
    matching = [s for s in senders if s.sender_id == requested]
    if not matching:
        return None
    matching.sort(key=lambda s: (s.type != kind, not s.is_default, s.name))
    return matching[0]


__all__ = [
    "InboundRefused",
    "pick_sender",
    "platform_number",
    "read_fields",
    "read_json_body",
    "text_fields",
]
