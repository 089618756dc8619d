"""The delivery-mapping assistant: propose `delivery` paths from one sample callback.

Pure heuristics over recognised field names and status values, all kept as tables below,
so a new provider is taught by adding a row, not a branch. The proposal is a fragment of a
`delivery` mapping (only keys it could fill); the user reviews it beside `list_fields`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smsrelay.connectors.paths import key_segment

# Field-name tables: normalised names (lower case, letters and digits only), best first.
# An entry with a dot also names the parent key (`status.name` is Infobip's status.name).
ID_FIELDS = (
    "messagesid",
    "smssid",
    "messageuuid",
    "messageid",
    "msgid",
    "umid",
    "apimessageid",
    "externalid",
    "requestid",
    "batchid",
    "id",
    "uuid",
    "sid",
)
# Our own id echoed back as a client reference: proposes `match: message_id`.
CLIENT_REFERENCE_FIELDS = (
    "customid",
    "clientmessageid",
    "clientref",
    "clientreference",
    "callbackdata",
    "usersuppliedid",
    "referenceid",
    "reference",
    "custref",
    "customstring",
    "context",
    "custom",
)
STATUS_FIELDS = (
    "messagestatus",
    "smsstatus",
    "deliverystatus",
    "status.name",
    "status.state",
    "status.type",
    "status.groupname",
    "status",
    "state",
    "dlrstatus",
)
REASON_FIELDS = (
    "errormessage",
    "failurereason",
    "reason",
    "errortext",
    "cause",
    "status.detail",
    "error.description",
    "status.description",
    "messagestatusdescription",
    "statusdescription",
    "description",
    "desc",
    "detail",
    "error",
)
ERROR_CODE_FIELDS = ("errorcode", "errcode", "error.code", "error.id", "errorid", "code")
RECIPIENT_FIELDS = (
    "to",
    "recipient",
    "msisdn",
    "number",
    "destination",
    "destinationphonenumber",
    "phonenumber",
    "mobile",
    "dest",
    "phone",
)
TIMESTAMP_FIELDS = (
    "donedate",
    "doneat",
    "deliveredat",
    "status.timestamp",
    "timestamp",
    "messagetimestamp",
    "scts",
    "datetime",
    "date",
    "completedat",
    "occurredat",
    "time",
    "ts",
)
# A report holding an array of numbers under one of these keys is one report per number
# (Sinch batch reports: `statuses[*].recipients[*]`).
RECIPIENT_LIST_FIELDS = ("recipients", "numbers", "msisdns")

ROLES: tuple[tuple[str, Sequence[str]], ...] = (
    ("message_id", ID_FIELDS + CLIENT_REFERENCE_FIELDS),
    ("recipient", RECIPIENT_FIELDS),
    ("reason", REASON_FIELDS),
    ("error_code", ERROR_CODE_FIELDS),
    ("timestamp", TIMESTAMP_FIELDS),
)


@dataclass(frozen=True, slots=True)
class StatusVocabulary:
    """One provider family's status values, as a `delivery` mapping would list them."""

    providers: str
    delivered: tuple[str, ...]
    failed: tuple[str, ...]
    pending: tuple[str, ...] = ()

    def entries(self) -> tuple[str, ...]:
        """Every listed value, delivered first."""
        return self.delivered + self.failed + self.pending


# Provider vocabularies from provider-notes §3.3. A sample status picks the first family
# that lists it exactly (same case first), then the first whose `re:` entry matches.
STATUS_VOCABULARIES: tuple[StatusVocabulary, ...] = (
    StatusVocabulary(
        "Twilio, Vonage, Plivo, Telnyx, MessageBird, 8x8, karix.io",
        delivered=("delivered",),
        failed=(
            "failed",
            "undelivered",
            "rejected",
            "expired",
            "canceled",
            "delivery_failed",
            "sending_failed",
        ),
        pending=(
            "queued",
            "sending",
            "sent",
            "accepted",
            "scheduled",
            "buffered",
            "submitted",
            "unknown",
            "delivery_unconfirmed",
        ),
    ),
    StatusVocabulary(
        "Infobip status.name",
        delivered=("DELIVERED_TO_HANDSET",),
        failed=("re:^(UNDELIVERABLE|EXPIRED|REJECTED)",),
        pending=("DELIVERED_TO_OPERATOR", "re:^PENDING"),
    ),
    StatusVocabulary(
        "BulkSMS, Gupshup",
        delivered=("DELIVERED", "SUCCESS"),
        failed=("FAILED", "UNDELIVERED", "REJECTED", "EXPIRED"),
        pending=("ACCEPTED", "SCHEDULED", "SENT", "UNKNOWN"),
    ),
    StatusVocabulary(
        "Sinch, Kaleyra",
        delivered=("Delivered",),
        failed=("Aborted", "Cancelled", "Rejected", "Deleted", "Failed", "Expired", "Undelivered"),
        pending=("Queued", "Dispatched", "Unknown", "Sent"),
    ),
    StatusVocabulary(
        "Africa's Talking",
        delivered=("Success",),
        failed=("Rejected", "Failed"),
        pending=("Sent", "Submitted", "Buffered"),
    ),
    StatusVocabulary(
        "SMPP receipts (Mobtexting)",
        delivered=("DELIVRD",),
        failed=("UNDELIV", "REJECTD", "EXPIRED", "DELETED"),
        pending=("ACCEPTD", "ENROUTE", "AWAITING-DLR"),
    ),
    StatusVocabulary(
        "AWS End User Messaging",
        delivered=("TEXT_DELIVERED", "TEXT_SUCCESSFUL"),
        failed=(
            "TEXT_BLOCKED",
            "TEXT_TTL_EXPIRED",
            "TEXT_CARRIER_UNREACHABLE",
            "TEXT_INVALID",
            "TEXT_UNREACHABLE",
            "TEXT_SPAM",
            "TEXT_UNKNOWN",
        ),
        pending=("TEXT_QUEUED", "TEXT_PENDING"),
    ),
    StatusVocabulary(
        "Clickatell",
        delivered=("DEVICE_ACK", "READ", "RECEIVED_BY_RECIPIENT"),
        failed=("EXPIRED", "DELIVERY_FAILURE", "ROUTING_ERROR", "RECIPIENT_DOES_NOT_EXIST"),
        pending=("QUEUED", "SCHEDULED", "SENT_TO_SUPPLIER"),
    ),
    StatusVocabulary("MSG91", delivered=("1",), failed=("2", "9", "16", "17", "25")),
    StatusVocabulary("Textlocal", delivered=("D",), failed=("U", "I"), pending=("?",)),
    StatusVocabulary(
        "Textmagic (legacy)",
        delivered=("d",),
        failed=("e", "f", "j"),
        pending=("q", "r", "a", "b", "s", "u"),
    ),
    StatusVocabulary(
        "Termii",
        delivered=("re:^delivered",),
        failed=("re:failed|dnd|rejected|expired",),
        pending=("re:sent",),
    ),
)

_DECODE_ROUNDS = 3

# A path as keys (str) and indices (int); ANY_INDEX (None) stands for `[*]`.
Segment = str | int | None
Path = tuple[Segment, ...]
ANY_INDEX = None


@dataclass(frozen=True, slots=True)
class _Leaf:
    """A leaf with its path as segments; array indices generalised to `*`."""

    segments: Path
    value: Any
    order: int


def suggest_delivery_mapping(document: Any) -> dict[str, Any]:
    """Propose a `delivery` mapping for a sample callback document (as decode_callback gives).

    Proposes `decode` for JSON held in strings, `reports` when the reports sit in an
    array, the per-report paths it recognises and the delivered/failed/pending values of
    the provider family the sample status belongs to. Keys it cannot fill are left out.
    """
    document, decode = _decode_embedded_json(document)
    leaves = _leaves(document)
    status = _best(leaves, STATUS_FIELDS)
    report = _report_prefix(status.segments) if status else ()
    levels = _enclosing_levels(document, report)

    found: dict[str, tuple[str, _Leaf | None]] = {}
    if status is not None:
        found["status"] = (_relative(status.segments, report, 0), status)
    for role, names in ROLES:
        chosen = _find_role(leaves, names, report, levels, status)
        if chosen is not None:
            found[role] = chosen

    recipient_list = _recipient_list_key(document, report)
    if recipient_list is not None:
        report = (*report, recipient_list, ANY_INDEX)
        found = {role: (_one_level_up(path), leaf) for role, (path, leaf) in found.items()}
        found["recipient"] = ("$", None)

    suggestion: dict[str, Any] = {}
    if decode:
        suggestion["decode"] = decode
    suggestion["reports"] = _path_text(report)
    for role in ("message_id", "recipient", "status", "reason", "error_code", "timestamp"):
        if role in found:
            suggestion[role] = found[role][0]
    id_leaf = found.get("message_id", ("", None))[1]
    if id_leaf is not None and _rank(id_leaf.segments, ID_FIELDS) is None:
        suggestion["match"] = "message_id"  # only a client reference was found
    if status is not None and (vocabulary := _vocabulary_for(status.value)) is not None:
        suggestion["delivered"] = list(vocabulary.delivered)
        suggestion["failed"] = list(vocabulary.failed)
        suggestion["pending"] = list(vocabulary.pending)
    return suggestion


# ---------------------------------------------------------------- document shape


def _decode_embedded_json(document: Any) -> tuple[Any, list[str]]:
    """Parse strings holding a JSON object or array (MSG91 `data`, SNS `Message`)."""
    document = _copy_json(document)
    decode: list[str] = []
    for _ in range(_DECODE_ROUNDS):
        changed = False
        for segments, value in _concrete_leaves(document):
            if not isinstance(value, str) or not value.lstrip().startswith(("{", "[")):
                continue
            try:
                parsed = json.loads(value)
            except (ValueError, RecursionError):
                continue
            if not isinstance(parsed, dict | list):
                continue
            if not segments:
                document = parsed
            else:
                _first_instance(document, segments[:-1])[segments[-1]] = parsed
            path = _path_text(_general(segments))
            if path not in decode:
                decode.append(path)
            changed = True
        if not changed:
            break
    return document, decode


def _copy_json(document: Any) -> Any:
    """A deep copy of a JSON document, without recursion (samples may nest deeply)."""
    if not isinstance(document, dict | list):
        return document
    root: Any = {} if isinstance(document, dict) else []
    stack: list[tuple[Any, Any]] = [(document, root)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, value in items:
            copied = {} if isinstance(value, dict) else [] if isinstance(value, list) else value
            if isinstance(target, dict):
                target[key] = copied
            else:
                target.append(copied)
            if isinstance(value, dict | list):
                stack.append((value, copied))
    return root


def _general(segments: Sequence[Segment]) -> Path:
    return tuple(ANY_INDEX if isinstance(s, int) else s for s in segments)


def _concrete_leaves(document: Any) -> list[tuple[Path, Any]]:
    """Every leaf with its path as keys and real indices, in document order."""
    found: list[tuple[Path, Any]] = []
    stack: list[tuple[Path, Any]] = [((), document)]
    while stack:
        at, node = stack.pop()
        if isinstance(node, dict) and node:
            stack.extend(((*at, str(k)), v) for k, v in reversed(node.items()))
        elif isinstance(node, list) and node:
            stack.extend(((*at, i), v) for i, v in reversed(list(enumerate(node))))
        else:
            found.append((at, node))
    return found


def _leaves(document: Any) -> list[_Leaf]:
    return [
        _Leaf(_general(segments), value, order)
        for order, (segments, value) in enumerate(_concrete_leaves(document))
    ]


def _report_prefix(segments: Path) -> Path:
    """The reports array: everything up to the last array index above the status."""
    for i in range(len(segments) - 1, -1, -1):
        if segments[i] is ANY_INDEX:
            return segments[: i + 1]
    return ()


def _first_instance(document: Any, segments: Sequence[Segment]) -> Any:
    node = document
    for segment in segments:
        if not isinstance(segment, str):
            index = 0 if segment is ANY_INDEX else segment
            if not isinstance(node, list) or not -len(node) <= index < len(node):
                return None
            node = node[index]
        elif isinstance(node, dict) and segment in node:
            node = node[segment]
        else:
            return None
    return node


def _enclosing_levels(document: Any, report: Path) -> list[Path]:
    """The objects enclosing the report, nearest first: what `^`, `^^`, ... read."""
    levels = []
    for end in range(len(report) - 1, -1, -1):
        if isinstance(_first_instance(document, report[:end]), dict):
            levels.append(report[:end])
    return levels


def _recipient_list_key(document: Any, report: Path) -> str | None:
    node = _first_instance(document, report)
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        if (
            _normalise(key) in RECIPIENT_LIST_FIELDS
            and isinstance(value, list)
            and value
            and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value)
        ):
            return str(key)
    return None


# ---------------------------------------------------------------- choosing fields


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _names_of(segments: Path) -> tuple[str, ...]:
    """The leaf's own name and `parent.name`, normalised (indices skipped)."""
    keys = [_normalise(s) for s in segments if isinstance(s, str)]
    if not keys:
        return ()
    names = [keys[-1]]
    if len(keys) > 1:
        names.insert(0, f"{keys[-2]}.{keys[-1]}")
    return tuple(names)


def _rank(segments: Path, table: Sequence[str]) -> int | None:
    ranks = [table.index(n) for n in _names_of(segments) if n in table]
    return min(ranks) if ranks else None


def _scalar(value: Any) -> bool:
    return value is not None and not isinstance(value, dict | list) and value != ""


def _best(leaves: list[_Leaf], table: Sequence[str]) -> _Leaf | None:
    ranked = [
        (rank, len(leaf.segments), leaf.order, leaf)
        for leaf in leaves
        if _scalar(leaf.value) and (rank := _rank(leaf.segments, table)) is not None
    ]
    return min(ranked, key=lambda r: r[:3])[3] if ranked else None


def _find_role(
    leaves: list[_Leaf],
    table: Sequence[str],
    report: Path,
    levels: list[Path],
    status: _Leaf | None,
) -> tuple[str, _Leaf] | None:
    """The best leaf for a role, in the report first, then in enclosing objects."""
    candidates = []
    scopes = [(0, report), *((n + 1, level) for n, level in enumerate(levels))]
    for leaf in leaves:
        if status is not None and leaf.segments == status.segments:
            continue
        if not _scalar(leaf.value):
            continue
        rank = _rank(leaf.segments, table)
        if rank is None:
            continue
        for up, scope in scopes:
            rest = leaf.segments[len(scope) :]
            if leaf.segments[: len(scope)] == scope and ANY_INDEX not in rest:
                shared = _shared_prefix(leaf.segments, status.segments) if status else 0
                candidates.append((rank, up, len(rest), -shared, leaf.order, leaf, scope))
                break
    if not candidates:
        return None
    _, up, *_, leaf, scope = min(candidates, key=lambda c: c[:5])
    return _relative(leaf.segments, scope, up), leaf


def _shared_prefix(a: Path, b: Path) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _relative(segments: Path, scope: Path, up: int) -> str:
    rest = "".join(_segment_text(s) for s in segments[len(scope) :])
    if up == 0:
        return "$" + rest
    return "^" * up + rest


def _segment_text(segment: Segment) -> str:
    return "[*]" if segment is ANY_INDEX else key_segment(segment)


def _path_text(segments: Path) -> str:
    return "$" + "".join(_segment_text(s) for s in segments)


def _one_level_up(path: str) -> str:
    """A report-relative path re-read from one level deeper (the report's array items)."""
    return "^" + path[1:] if path.startswith("$") else "^" + path


def _vocabulary_for(sample: Any) -> StatusVocabulary | None:
    if isinstance(sample, bool) or not _scalar(sample):
        return None
    text = str(sample).strip()
    if not text:
        return None
    for same_case in (True, False):
        for vocabulary in STATUS_VOCABULARIES:
            entries = [e for e in vocabulary.entries() if not e.startswith("re:")]
            if any(e == text if same_case else e.casefold() == text.casefold() for e in entries):
                return vocabulary
    for vocabulary in STATUS_VOCABULARIES:
        for entry in vocabulary.entries():
            if entry.startswith("re:") and re.search(entry[3:], text, re.IGNORECASE):
                return vocabulary
    return None
