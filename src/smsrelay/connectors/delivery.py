"""Reading delivery-report callbacks into `DeliveryReport`s (SPEC §2 `delivery`, §3).

A callback becomes one document whatever its encoding (JSON, form, multipart, query
string, XML), then `decode` parses JSON held in strings, `reports` selects the reports and
each report's fields are read with paths relative to it (`^` reads enclosing objects).
Raw statuses are mapped to `DeliveryOutcome` with the connector's delivered/failed/pending
lists; a status in none of them is a failure, as MoEngage treats it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from jsonpath import JSONPathMatch

from smsrelay.connectors.definition import Delivery
from smsrelay.connectors.delivery_mapping import suggest_delivery_mapping
from smsrelay.connectors.errors import CallbackError
from smsrelay.connectors.exchange import DeliveryOutcome, DeliveryReport, InboundCallback
from smsrelay.connectors.paths import (
    PathEvaluationError,
    PathSyntaxError,
    ValuePath,
    compile_value_path,
    list_fields,
)
from smsrelay.connectors.responses import XmlDocumentError, parse_xml_document, value_text

__all__ = [
    "classify_status",
    "decode_callback",
    "list_fields",
    "normalise_recipient",
    "parse_delivery_callback",
    "suggest_delivery_mapping",
]

MISSING_STATUS_REASON = "no status in report"

FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"

# Content types providers send with bodies whose real format has to be sniffed.
_SNIFFED_TYPES = frozenset({"", "text/plain", "application/octet-stream"})
_LOOKS_LIKE_FORM = re.compile(rb"^[^=&\s{}\[\]<>]+=[^\s]*$")


# ---------------------------------------------------------------- decoding


def decode_callback(callback: InboundCallback, decode: Sequence[str] = ()) -> Any:
    """The callback as one document, then each `decode` path's JSON string parsed in place.

    JSON bodies (object or array) are the document. Form, multipart and query callbacks
    are flat objects in which a repeated key holds a list; a POST carrying both a query
    string and a form body gets both, the body winning on shared keys.
    Raises CallbackError when the body cannot be read.
    """
    document = _read_body(callback)
    for expr in decode:
        try:
            document = _decode_json_strings(document, expr)
        except PathEvaluationError as exc:
            raise CallbackError(f"delivery.decode: {exc}") from None
    return document


def _read_body(callback: InboundCallback) -> Any:
    content_type = callback.content_type or callback.header("Content-Type") or ""
    media = content_type.split(";", 1)[0].strip().lower()
    query = flat_fields(callback.query)
    body = callback.body
    if not body.strip():
        return query
    head = body.lstrip()[:1]
    if media == FORM_TYPE or (media in _SNIFFED_TYPES and _LOOKS_LIKE_FORM.match(body.strip())):
        return {**query, **flat_fields(_form_pairs(_text(body, content_type)))}
    if media == MULTIPART_TYPE:
        return {**query, **flat_fields(_multipart_fields(content_type, body))}
    if "json" in media or (media in _SNIFFED_TYPES and head in (b"{", b"[")):
        return _json_document(_text(body, content_type))
    if "xml" in media or (media in _SNIFFED_TYPES and head == b"<"):
        try:
            return parse_xml_document(_text(body, content_type))
        except XmlDocumentError as exc:
            raise CallbackError(f"body could not be read as XML: {exc}") from exc
    raise CallbackError(
        f"cannot read a {media or 'untyped'} body: a delivery report is JSON, a form "
        "(application/x-www-form-urlencoded or multipart/form-data), XML or a query string"
    )


def flat_fields(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Form or query pairs as a flat object; a key given more than once holds a list."""
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if key not in fields:
            fields[key] = value
        elif isinstance(fields[key], list):
            fields[key].append(value)
        else:
            fields[key] = [fields[key], value]
    return fields


def _text(body: bytes, content_type: str) -> str:
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type, re.IGNORECASE)
    charset = match.group(1) if match else "utf-8-sig"
    try:
        return body.decode(charset)
    except LookupError:
        raise CallbackError(f"unknown charset {charset!r} in Content-Type") from None
    except UnicodeDecodeError as exc:
        raise CallbackError(
            f"body is not valid {charset} text (byte {exc.start}); send UTF-8 or name the "
            "charset in Content-Type"
        ) from None


def _form_pairs(text: str) -> list[tuple[str, str]]:
    return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="replace")


def _multipart_fields(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """The text fields of a multipart/form-data body (file parts are ignored)."""
    header = "Content-Type: " + re.sub(r"[\r\n]+", " ", content_type) + "\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(header.encode("utf-8", "replace") + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise CallbackError(
            "multipart/form-data body could not be split: the Content-Type needs a boundary "
            "that appears in the body"
        )
    fields: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename() is not None:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            value = payload.decode(charset, "replace")
        except LookupError:
            value = payload.decode("utf-8", "replace")
        fields.append((name, value))
    return fields


def _json_document(text: str) -> Any:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CallbackError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise CallbackError("body nests JSON too deeply to read") from None
    except ValueError as exc:
        raise CallbackError(f"body is not usable JSON: {exc}") from None
    if not isinstance(document, dict | list):
        raise CallbackError(
            f"body is a JSON {type(document).__name__}; a delivery report is an object or an array"
        )
    return document


def _decode_json_strings(document: Any, expr: str) -> Any:
    """Parse, in place, every JSON string the path addresses; return the document."""
    path = _compile(expr, "decode")
    if path.kind != "json":
        raise CallbackError(f"decode path {expr!r} must be a JSONPath such as $.data")
    for match in path.matches(document):
        if not isinstance(match.obj, str):
            continue  # already structured (or decoded by an earlier path)
        try:
            decoded = json.loads(match.obj)
        except json.JSONDecodeError as exc:
            raise CallbackError(
                f"decode {expr}: the value at {match.path} is not valid JSON "
                f"({exc.msg} at column {exc.colno})"
            ) from None
        except RecursionError:
            raise CallbackError(
                f"decode {expr}: the value at {match.path} nests JSON too deeply to read"
            ) from None
        except ValueError as exc:
            raise CallbackError(
                f"decode {expr}: the value at {match.path} is not usable JSON: {exc}"
            ) from None
        if not match.parts:
            document = decoded
        else:
            _container(document, match.parts[:-1])[match.parts[-1]] = decoded
    return document


def _container(document: Any, parts: Sequence[Any]) -> Any:
    node = document
    for part in parts:
        node = node[part]
    return node


def _compile(expr: str, field: str, *, relative: bool = False) -> ValuePath:
    try:
        return compile_value_path(expr, allow_parent=relative)
    except PathSyntaxError as exc:
        raise CallbackError(f"delivery.{field}: {exc}") from None


# ---------------------------------------------------------------- reports


def parse_delivery_callback(spec: Delivery, callback: InboundCallback) -> list[DeliveryReport]:
    """Every delivery report in one callback, mapped to outcomes by the connector's lists.

    Reports without a key (message id or echoed reference) are skipped; a report without
    a status is FAILED with reason "no status in report". Raises CallbackError when the
    callback cannot be decoded.
    """
    document = decode_callback(callback, spec.decode)
    reports_path = _compile(spec.reports, "reports")
    if reports_path.kind != "json":
        raise CallbackError(
            f"delivery.reports {spec.reports!r} must be a JSONPath such as $.results[*]"
        )
    readers = {
        name: _compile(expr, name, relative=True)
        for name in ("message_id", "status", "reason", "error_code", "timestamp", "recipient")
        if (expr := getattr(spec, name)) is not None
    }
    reports: list[DeliveryReport] = []
    try:
        for match in reports_path.matches(document):
            report = _read_report(spec, match, readers)
            if report is not None:
                reports.append(report)
    except PathEvaluationError as exc:
        raise CallbackError(f"a delivery path could not be read: {exc}") from None
    return reports


def _read_report(
    spec: Delivery, match: JSONPathMatch, readers: Mapping[str, ValuePath]
) -> DeliveryReport | None:
    values: dict[str, str | None] = {}
    fields: dict[str, Any] = dict(list_fields(match.obj))
    for name, path in readers.items():
        found = path.find_from(match)
        values[name] = _scalar_text(found[0]) if found else None
        if path.parents and found:
            fields[path.source] = found[0]
    key = values.get("message_id")
    if not key:
        return None
    raw_status = values.get("status")
    reason = values.get("reason")
    if raw_status is None:
        outcome, raw_status, reason = DeliveryOutcome.FAILED, "", reason or MISSING_STATUS_REASON
    else:
        mapped = classify_status(spec, raw_status)
        outcome = mapped or DeliveryOutcome.FAILED
        if mapped is None and not reason:
            reason = f"status {raw_status!r} is not listed in delivered, failed or pending"
    recipient = values.get("recipient")
    return DeliveryReport(
        key=key,
        outcome=outcome,
        raw_status=raw_status,
        recipient=normalise_recipient(recipient) if recipient else None,
        reason=reason,
        error_code=values.get("error_code"),
        timestamp=values.get("timestamp"),
        fields=fields,
    )


def _scalar_text(value: Any) -> str | None:
    """A field value as text; objects, arrays, null and blanks count as absent."""
    if value is None or isinstance(value, dict | list):
        return None
    text = value_text(value).strip()
    return text or None


# ---------------------------------------------------------------- statuses

# When a status matches entries of several lists at the same tier, the cautious reading
# wins: a wrong "pending" is corrected by the next report, a wrong final status is not.
_PRECEDENCE = (DeliveryOutcome.PENDING, DeliveryOutcome.FAILED, DeliveryOutcome.DELIVERED)


def classify_status(spec: Delivery, raw_status: str) -> DeliveryOutcome | None:
    """Map a raw status with the connector's lists; None when no list mentions it.

    Case-insensitive exact entries are tried first across all three lists, then
    `re:<regex>` entries (searched, case-insensitive); ties go to pending, then failed,
    then delivered. Numbers compare as text, so MSG91's 1 matches "1".
    """
    exact, patterns = _status_table(tuple(spec.pending), tuple(spec.failed), tuple(spec.delivered))
    outcome = exact.get(raw_status.strip().casefold())
    if outcome is not None:
        return outcome
    for pattern, candidate in patterns:
        if pattern.search(raw_status):
            return candidate
    return None


@lru_cache(maxsize=512)
def _status_table(
    pending: tuple[str, ...], failed: tuple[str, ...], delivered: tuple[str, ...]
) -> tuple[dict[str, DeliveryOutcome], tuple[tuple[re.Pattern[str], DeliveryOutcome], ...]]:
    exact: dict[str, DeliveryOutcome] = {}
    patterns: list[tuple[re.Pattern[str], DeliveryOutcome]] = []
    lists = {
        DeliveryOutcome.PENDING: pending,
        DeliveryOutcome.FAILED: failed,
        DeliveryOutcome.DELIVERED: delivered,
    }
    for outcome in _PRECEDENCE:
        for entry in lists[outcome]:
            if entry.startswith("re:"):
                try:
                    patterns.append((re.compile(entry[3:], re.IGNORECASE), outcome))
                except re.error:
                    continue  # refused when the definition is validated
            else:
                exact.setdefault(entry.strip().casefold(), outcome)
    return exact, tuple(patterns)


# ---------------------------------------------------------------- recipients

_PHONE_PUNCTUATION = re.compile(r"[\s\-().]")
_INTERNATIONAL_DIGITS = re.compile(r"\+?[0-9]{6,15}")


def normalise_recipient(raw: str) -> str:
    """A reported number in E.164 (`447700900123` -> `+447700900123`); other text as given."""
    compact = _PHONE_PUNCTUATION.sub("", raw.strip())
    if _INTERNATIONAL_DIGITS.fullmatch(compact):
        return "+" + compact.lstrip("+")
    return raw.strip()
