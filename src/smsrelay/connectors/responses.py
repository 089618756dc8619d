"""Reading a provider's answer to a send request: one verdict per message (SPEC §2, `response`).

The body is decoded once into a document whatever its format: JSON, XML (converted the way
xmltodict does, so `$.TwilioResponse.SMSMessage.Sid` reads Exotel's XML) or plain text
(the document is the string; `re:` paths read it and `$` yields it whole). Every path of
`response` then addresses that document, the raw text (`re:`) or the headers (`header:`).

Nothing here raises on a provider's bytes: a body that cannot be decoded is read as text.
"""

from __future__ import annotations

import codecs
import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

from smsrelay.connectors.definition import Predicate, Response, StatusSpec
from smsrelay.connectors.exchange import HttpResponse, MessageResult, SendOutcome, SendVerdict
from smsrelay.connectors.paths import PathSyntaxError, ValuePath, compile_value_path
from smsrelay.fast_dataclasses import positional_builder

# Statuses that mean "try again later" whatever the connector says (RFC 9110 / RFC 8470).
ALWAYS_RETRY_STATUSES: frozenset[int] = frozenset({408, 425})

ERROR_SNIPPET_CHARS = 200

# An XML document that declares a DOCTYPE may define entities (billion laughs, external
# files); providers never need one, so such a body is read as text instead.
_XML_DECLARES_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class XmlDocumentError(ValueError):
    """A body could not be read as XML (malformed, or it declares a DTD/entities)."""


@dataclass(frozen=True, slots=True)
class ResponseDocument:
    """A decoded response body: `document` for JSONPath, `text` for `re:` paths."""

    document: Any
    text: str
    format: str  # "json" | "xml" | "text"


def decode_response_body(response: HttpResponse) -> ResponseDocument:
    """Decode a response body into a document by content type, then by sniffing."""
    content_type = (response.header("Content-Type") or "").lower()
    text = _decode_text(response.body, content_type)
    stripped = text.lstrip()
    if "json" in content_type or stripped.startswith(("{", "[")):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            if isinstance(document, dict | list):
                return ResponseDocument(document, text, "json")
    if "xml" in content_type or stripped.startswith("<"):
        try:
            return ResponseDocument(parse_xml_document(text), text, "xml")
        except XmlDocumentError:
            pass
    return ResponseDocument(text, text, "text")


def _decode_text(body: bytes, content_type: str) -> str:
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type)
    if match:
        try:
            return body.decode(match.group(1), "replace")
        except LookupError:
            pass  # an unknown charset name: UTF-8 is the best guess
    return body.decode("utf-8", "replace")


def parse_xml_document(text: str) -> dict[str, Any]:
    """Convert XML text to a dict shaped like xmltodict's output; refuse DTDs and entities.

    The root element becomes the single key. Attributes become `@name` keys; an element's
    text sits under `#text` when it also has attributes or children, else is the value;
    repeated children become a list; namespace URIs are dropped (`{urn:x}Sid` -> `Sid`).
    """
    if _XML_DECLARES_DTD.search(text):
        raise XmlDocumentError("XML with a DOCTYPE or entity declaration is not accepted")
    try:
        root = ElementTree.fromstring(text)
    except (ElementTree.ParseError, ValueError, RecursionError) as exc:
        raise XmlDocumentError(f"not well-formed XML: {exc}") from exc
    try:
        return {_local_name(root.tag): _element_value(root)}
    except RecursionError as exc:
        raise XmlDocumentError("XML is nested too deeply") from exc


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if tag.startswith("{") else tag


def _element_value(element: ElementTree.Element) -> Any:
    node: dict[str, Any] = {f"@{_local_name(k)}": v for k, v in element.attrib.items()}
    children: dict[str, list[Any]] = {}
    for child in element:
        if isinstance(child.tag, str):  # skip comments and processing instructions
            children.setdefault(_local_name(child.tag), []).append(_element_value(child))
    for key, values in children.items():
        node[key] = values[0] if len(values) == 1 else values
    text = (element.text or "").strip()
    if not node:
        return text or None
    if text:
        node["#text"] = text
    return node


# ---------------------------------------------------------------- verdict


def parse_send_response(
    spec: Response,
    response: HttpResponse,
    message_count: int,
    *,
    now: datetime | None = None,
) -> SendVerdict:
    """Decide what a provider's response means for each of the `message_count` messages.

    ACCEPTED: the status matches `success_status` and `success_when` (if set) holds.
    RETRY: the status matches `retry_status` (or is 408/425), or `retry_when` holds.
    REJECTED: anything else. A predicate whose path yields one value per message is
    judged per message, so one batch can mix outcomes. `now` anchors an HTTP-date
    Retry-After (default: the current time).
    """
    fast = _plain_json_answer(spec, response, message_count, now)
    if fast is not None:
        return fast
    return _general_verdict(spec, response, message_count, now=now)


def _general_verdict(
    spec: Response,
    response: HttpResponse,
    message_count: int,
    *,
    now: datetime | None = None,
) -> SendVerdict:
    """`parse_send_response` for every answer (the fast path's reference)."""
    count = max(1, message_count)
    body = decode_response_body(response)
    reader = _Reader(body, response.headers)
    notes: list[str] = []
    status = response.status

    retry_checks = _judge(spec.retry_when, reader, count, notes, absent=False)
    if _status_matches(status, spec.success_status):
        success_checks = _judge(spec.success_when, reader, count, notes, absent=True)
        outcomes = [
            SendOutcome.RETRY
            if retry
            else SendOutcome.ACCEPTED
            if success
            else SendOutcome.REJECTED
            for retry, success in zip(retry_checks, success_checks, strict=True)
        ]
    elif _status_matches(status, spec.retry_status) or status in ALWAYS_RETRY_STATUSES:
        outcomes = [SendOutcome.RETRY] * count
    else:
        outcomes = [SendOutcome.RETRY if r else SendOutcome.REJECTED for r in retry_checks]

    ids = _message_ids(spec.message_id, reader, count, notes)
    errors = _errors(spec, reader, response, outcomes, notes)
    results = tuple(
        MessageResult(
            outcome=outcome,
            provider_ids=ids[i] if outcome is SendOutcome.ACCEPTED else (),
            error=None if outcome is SendOutcome.ACCEPTED else errors[i],
        )
        for i, outcome in enumerate(outcomes)
    )
    retry_after = parse_retry_after(response.header("Retry-After"), now=now)
    return SendVerdict(
        results=results,
        retry_after_seconds=retry_after,
        status=status,
        summary=_summary(status, results, retry_after, notes),
    )


# ---------------------------------------------------------------- the common answer, fast


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the fast path may do with a `response` spec, worked out once per spec.

    `fast` is False when the spec has a predicate or a `message_id` that is not a plain
    path (names and `[*]` only): those answers go the general way. `success` holds every
    status (0..999) that `success_status` matches. `names` are the steps of a `message_id`
    made of names only (walked inline), else None (`message_id` finds the values).
    """

    spec: Response
    fast: bool
    success: frozenset[int]
    message_id: ValuePath | None
    names: tuple[str, ...] | None


# Keyed by the spec's identity (a frozen model holding lists is not hashable); the spec is
# kept in the plan, so an id is never reused while its entry exists.
_PLANS: dict[int, _Plan] = {}
_PLANS_MAX = 1024


def _plan(spec: Response) -> _Plan:
    plan = _PLANS.get(id(spec))
    if plan is not None and plan.spec is spec:
        return plan
    path: ValuePath | None = None
    names: tuple[str, ...] | None = None
    fast = spec.success_when is None and spec.retry_when is None
    if spec.message_id is not None:
        try:
            path = compile_value_path(spec.message_id)
        except PathSyntaxError:
            fast = False
        else:
            steps = path.steps if path.kind == "json" else None
            if steps is None:
                fast = False
            elif None not in steps:
                names = tuple(step for step in steps if step is not None)
    plan = _Plan(
        spec=spec,
        fast=fast,
        success=frozenset(s for s in range(1000) if _status_matches(s, spec.success_status)),
        message_id=path,
        names=names,
    )
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[id(spec)] = plan
    return plan


@lru_cache(maxsize=256)
def _reads_as_utf8(content_type: str) -> bool:
    """Whether `_decode_text` decodes a body of this (lowercased) content type as UTF-8."""
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type)
    if match is None:
        return True
    try:
        return codecs.lookup(match.group(1)).name == "utf-8"
    except LookupError:
        return True  # `_decode_text` falls back to UTF-8


# `json.loads` without its wrapper: the same decoding, then only JSON whitespace may follow.
_raw_decode = json.JSONDecoder().raw_decode
_JSON_BLANKS = " \t\n\r"
_ABSENT = object()


def _plain_json_answer(
    spec: Response, response: HttpResponse, message_count: int, now: datetime | None
) -> SendVerdict | None:
    """The verdict for messages answered with a JSON object or array and a success status,
    when no predicate is set and `message_id` is a plain path (every message is accepted);
    None otherwise.

    Exactly what the general path decides for such an answer (tests compare the two), with
    no document wrapper, reader, per-message predicates or error lookup.
    """
    plan = _plan(spec)
    status = response.status
    if not plan.fast or status not in plan.success:
        return None
    content_type = retry_after_header = None
    for key, value in response.headers.items():
        name = key.lower()
        if name == "content-type":
            if content_type is None:
                content_type = value
        elif name == "retry-after" and retry_after_header is None:
            retry_after_header = value
    if content_type is not None and not _reads_as_utf8(content_type.lower()):
        return None
    text = response.body.decode("utf-8", "replace")
    if not text.startswith(("{", "[")):
        return None  # other shapes (and leading blanks) go the general way
    try:
        document, end = _raw_decode(text)
    except (ValueError, RecursionError):
        return None
    if end != len(text) and text[end:].strip(_JSON_BLANKS):
        return None  # trailing data: not JSON
    count = max(1, message_count)
    found: list[str | None] | None = None
    names = plan.names
    if names is not None:
        node: Any = document
        for name in names:
            if type(node) is dict and name in node:
                node = node[name]
            else:
                node = _ABSENT
                break
        found = [] if node is _ABSENT else [_id_text(node)]
    elif plan.message_id is not None:
        found = [_id_text(value) for value in plan.message_id.find(document)]
    notes: list[str] = []
    per_message = [()] * count if found is None else _ids_per_message(found, count, notes)
    retry_after = (
        None if retry_after_header is None else parse_retry_after(retry_after_header, now=now)
    )
    summary = f"HTTP {status}; accepted" if count == 1 else f"HTTP {status}; {count} accepted"
    distinct = len({i for ids in per_message for i in ids})
    if distinct:
        summary += "; 1 id" if distinct == 1 else f"; {distinct} ids"
    if retry_after is not None:
        summary += f"; retry after {retry_after:g}s"
    if notes:
        summary += "; " + "; ".join(dict.fromkeys(notes))
    results = tuple([_new_result(_ACCEPTED, ids, None) for ids in per_message])
    return SendVerdict(results, retry_after, status, summary)


_ACCEPTED = SendOutcome.ACCEPTED
_new_result = positional_builder(MessageResult, ("outcome", "provider_ids", "error"))


class _Reader:
    """Reads `response` paths against one decoded body; bad paths read as nothing."""

    def __init__(self, body: ResponseDocument, headers: Mapping[str, str]) -> None:
        self.body = body
        self.headers = headers

    def find(self, expr: str, notes: list[str]) -> tuple[ValuePath | None, list[Any]]:
        try:
            path = compile_value_path(expr)
        except PathSyntaxError as exc:
            notes.append(f"path {expr!r} not usable: {exc}")
            return None, []
        try:
            values = path.find(self.body.document, text=self.body.text, headers=self.headers)
        except (ValueError, TypeError, RecursionError) as exc:
            notes.append(f"path {expr!r} could not be read: {exc}")
            return path, []
        return path, values


def _status_matches(status: int, specs: Sequence[StatusSpec]) -> bool:
    for spec in specs:
        if isinstance(spec, int):
            if status == spec:
                return True
        elif spec.endswith("xx"):
            if status // 100 == int(spec[0]):
                return True
        elif spec.isdigit() and status == int(spec):
            return True
    return False


def _judge(
    predicate: Predicate | None, reader: _Reader, count: int, notes: list[str], *, absent: bool
) -> list[bool]:
    """One verdict per message: per value when the path yields one per message, else once."""
    if predicate is None:
        return [absent] * count
    path, values = reader.find(predicate.path, notes)
    per_message = path is not None and not path.is_singular and len(values) == count
    if per_message:
        return [_holds(predicate, v, notes) for v in values]
    whole = bool(values) and all(_holds(predicate, v, notes) for v in values)
    return [whole] * count


def _holds(predicate: Predicate, value: Any, notes: list[str]) -> bool:
    if value is None:
        return False
    if predicate.equals is not None:
        return _same(value, predicate.equals)
    if predicate.in_ is not None:
        return any(_same(value, member) for member in predicate.in_)
    if predicate.matches is not None:
        pattern = _regex(predicate.matches)
        if pattern is None:
            notes.append(f"invalid regular expression {predicate.matches!r}")
            return False
        return pattern.search(value_text(value)) is not None
    return False


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _same(value: Any, expected: Any) -> bool:
    """Equal as data when both are numbers or both strings; else compare text forms."""
    numbers = (int, float)
    if isinstance(value, bool) or isinstance(expected, bool):
        return value_text(value) == value_text(expected)
    if isinstance(value, numbers) and isinstance(expected, numbers):
        return value == expected
    return value_text(value) == value_text(expected)


def value_text(value: Any) -> str:
    """A value as text: JSON spelling for booleans, null and containers, str() otherwise."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | dict | list):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (RecursionError, ValueError):
            return f"<{type(value).__name__} nested too deeply to show>"
    return str(value)


# ---------------------------------------------------------------- ids and errors


def _message_ids(
    expr: str | None, reader: _Reader, count: int, notes: list[str]
) -> list[tuple[str, ...]]:
    """Provider ids per message: all to one message, by position, or one shared by all."""
    if expr is None:
        return [()] * count
    _, values = reader.find(expr, notes)
    return _ids_per_message([_id_text(v) for v in values], count, notes)


def _ids_per_message(
    found: list[str | None], count: int, notes: list[str]
) -> list[tuple[str, ...]]:
    """The ids found (None: not usable as one) given to `count` messages."""
    if count == 1:
        return [tuple(i for i in found if i)]
    if len(found) == 1 and found[0]:
        return [(found[0],)] * count
    if len(found) != count:
        notes.append(f"{len(found)} ids for {count} messages, matched by position")
    per_message: list[tuple[str, ...]] = []
    for i in range(count):
        at = found[i] if i < len(found) else None
        per_message.append((at,) if at else ())
    missing = sum(1 for ids in per_message if not ids)
    if missing:
        notes.append(f"{missing} without id")
    return per_message


def _id_text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = value_text(value).strip()
    return text or None


def _errors(
    spec: Response,
    reader: _Reader,
    response: HttpResponse,
    outcomes: list[SendOutcome],
    notes: list[str],
) -> list[str | None]:
    count = len(outcomes)
    if all(o is SendOutcome.ACCEPTED for o in outcomes):
        return [None] * count
    if spec.error is not None:
        _, values = reader.find(spec.error, notes)
        texts = [_clip(value_text(v)) for v in values if v not in (None, "")]
        if len(texts) == count and count > 1:
            return list(texts)
        if texts:
            return ["; ".join(dict.fromkeys(texts))[:ERROR_SNIPPET_CHARS]] * count
    return [_body_snippet(response, reader.body.text)] * count


def _body_snippet(response: HttpResponse, text: str) -> str:
    snippet = " ".join(text.split())
    if not snippet:
        return f"HTTP {response.status} with an empty body"
    return _clip(f"HTTP {response.status}: {snippet}")


def _clip(text: str) -> str:
    if len(text) <= ERROR_SNIPPET_CHARS:
        return text
    return text[: ERROR_SNIPPET_CHARS - 1] + "…"


# ---------------------------------------------------------------- retry-after and summary


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now if now is not None else datetime.now(UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    return max(0.0, (when - reference).total_seconds())


def _summary(
    status: int,
    results: tuple[MessageResult, ...],
    retry_after: float | None,
    notes: list[str],
) -> str:
    parts = [f"HTTP {status}"]
    tally: dict[str, int] = {}
    for result in results:
        tally[result.outcome.value] = tally.get(result.outcome.value, 0) + 1
    if len(results) > 1 or len(tally) > 1:
        parts.append(", ".join(f"{n} {outcome}" for outcome, n in tally.items()))
    else:
        parts.append(results[0].outcome.value)
    ids = {i for r in results for i in r.provider_ids}
    if ids:
        parts.append(f"{len(ids)} id" + ("s" if len(ids) != 1 else ""))
    if retry_after is not None:
        parts.append(f"retry after {retry_after:g}s")
    parts.extend(dict.fromkeys(notes))
    return "; ".join(parts)
