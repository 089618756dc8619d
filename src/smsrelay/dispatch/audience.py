"""Campaign audiences: reading a CSV in chunks, judging rows, personalising, removing duplicates.

Pure apart from reading the file it is given: the API streams an uploaded CSV through
`CsvAudience.chunks` (never the whole file in memory) into the store, and the campaign
runner judges each stored row with `AudienceLayout` and renders its texts with
`PersonalTemplate`. Row numbers are those a spreadsheet shows: the header is row 1.
"""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from smsrelay.connectors.errors import FieldError
from smsrelay.connectors.placeholders import (
    PARAM_PREFIX,
    Placeholder,
    TemplateSyntaxError,
    parse_template,
)

# Header names taken as the phone column when none is named, in this order.
PHONE_COLUMNS: tuple[str, ...] = ("phone", "to", "msisdn")
CHUNK_ROWS = 5000
MAX_COLUMNS = 100
MAX_BODY_CHARS = 4096
_DELIMITERS = ",;\t|"
# The header line is looked for within this many bytes.
_HEADER_BYTES = 1024 * 1024


class AudienceError(ValueError):
    """An audience cannot be used at all (no header, no phone column, not UTF-8...)."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that was skipped, and why."""

    row: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        """As kept with the campaign."""
        return {"row": self.row, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class AudienceChunk:
    """Consecutive records of an audience; `rows[i]` is row `first_row + i` (blank: `[]`)."""

    first_row: int
    rows: list[list[str]]


# ---------------------------------------------------------------- layout of the columns


@dataclass(frozen=True, slots=True)
class AudienceLayout:
    """Which cell of a record is the phone number, and which name each other cell has."""

    columns: tuple[str, ...]
    phone_index: int

    @property
    def phone_column(self) -> str:
        """The header of the phone column."""
        return self.columns[self.phone_index]

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attribute columns (everything but the phone), in file order."""
        return tuple(c for i, c in enumerate(self.columns) if i != self.phone_index)

    @classmethod
    def from_header(cls, header: Sequence[str], phone_column: str | None) -> AudienceLayout:
        """Check a header row and find the phone column (named, or phone/to/msisdn)."""
        columns = tuple(name.strip() for name in header)
        errors: list[FieldError] = []
        for position, name in enumerate(columns, start=1):
            if not name:
                errors.append(
                    FieldError("audience", f"column {position} of the header has no name")
                )
        seen: set[str] = set()
        for name in columns:
            if name and name in seen:
                errors.append(FieldError("audience", f"the header names column {name!r} twice"))
            seen.add(name)
        if len(columns) > MAX_COLUMNS + 1:
            errors.append(
                FieldError("audience", f"at most {MAX_COLUMNS} attribute columns are supported")
            )
        if errors:
            raise AudienceError(errors)
        index = _phone_index(columns, phone_column)
        return cls(columns=columns, phone_index=index)

    def recipient(self, cells: Sequence[str]) -> tuple[str, dict[str, str]]:
        """The raw phone number and the non-empty attributes of a record.

        Raises ValueError naming the problem when the record has more values than columns.
        """
        if len(cells) > len(self.columns) and any(c.strip() for c in cells[len(self.columns) :]):
            raise ValueError(
                f"has {len(cells)} values but the header has {len(self.columns)} columns"
            )
        phone = cells[self.phone_index] if self.phone_index < len(cells) else ""
        attributes = {
            name: value
            for index, (name, value) in enumerate(zip(self.columns, cells, strict=False))
            if index != self.phone_index and value != ""
        }
        return phone, attributes


def _phone_index(columns: Sequence[str], phone_column: str | None) -> int:
    if phone_column is not None:
        wanted = phone_column.strip()
        for index, name in enumerate(columns):
            if name == wanted:
                return index
        for index, name in enumerate(columns):
            if name.lower() == wanted.lower():
                return index
        raise AudienceError(
            [
                FieldError(
                    "phone_column",
                    f"the audience has no column {phone_column!r} (columns: {', '.join(columns)})",
                )
            ]
        )
    lowered = [name.lower() for name in columns]
    for candidate in PHONE_COLUMNS:
        if candidate in lowered:
            return lowered.index(candidate)
    raise AudienceError(
        [
            FieldError(
                "phone_column",
                "no phone column found: name one with phone_column, or call it "
                f"{', '.join(PHONE_COLUMNS)} (columns: {', '.join(columns)})",
            )
        ]
    )


# ---------------------------------------------------------------- reading a CSV


def detect_delimiter(header_line: str) -> str:
    """The delimiter of a CSV file, judged by its header line: `,` `;` tab or `|`."""
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


class CsvAudience:
    """A CSV audience read from a binary file in chunks of records, never whole.

    The file is UTF-8 (a byte-order mark is skipped); the first non-blank record is the
    header; the delimiter is detected from it. Construction reads the header only.
    """

    def __init__(self, binary: IO[bytes], *, phone_column: str | None = None) -> None:
        head = binary.read(_HEADER_BYTES).decode("utf-8-sig", errors="replace")
        binary.seek(0)
        first_line = next((line for line in head.splitlines() if line.strip()), "")
        self.delimiter = detect_delimiter(first_line)
        self._text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        self._reader = csv.reader(self._text, delimiter=self.delimiter)
        self._row = 0
        header: list[str] | None = None
        try:
            for cells in self._reader:
                self._row += 1
                if any(cell.strip() for cell in cells):
                    header = cells
                    break
        except UnicodeDecodeError as exc:
            raise AudienceError([FieldError("audience", _not_utf8(exc, self._row + 1))]) from exc
        except csv.Error as exc:
            raise AudienceError([FieldError("audience", f"row {self._row + 1}: {exc}")]) from exc
        if header is None:
            raise AudienceError(
                [FieldError("audience", "the file is empty; the first row names the columns")]
            )
        self.layout = AudienceLayout.from_header(header, phone_column)

    def chunks(self, size: int = CHUNK_ROWS) -> Iterator[AudienceChunk]:
        """The records after the header, `size` at a time (raises AudienceError on bad bytes)."""
        rows: list[list[str]] = []
        first = self._row + 1
        try:
            for cells in self._reader:
                self._row += 1
                rows.append(cells if any(cells) else [])
                if len(rows) >= size:
                    yield AudienceChunk(first, rows)
                    rows, first = [], self._row + 1
        except UnicodeDecodeError as exc:
            raise AudienceError([FieldError("audience", _not_utf8(exc, self._row + 1))]) from exc
        except csv.Error as exc:
            raise AudienceError([FieldError("audience", f"row {self._row + 1}: {exc}")]) from exc
        if rows:
            yield AudienceChunk(first, rows)


def _not_utf8(exc: UnicodeDecodeError, row: int) -> str:
    byte = exc.object[exc.start : exc.start + 1].hex()
    return (
        f"the file is not UTF-8: byte 0x{byte} near row {row} cannot be read; save it as CSV UTF-8"
    )


def list_audience(
    entries: Sequence[Mapping[str, Any]], size: int = CHUNK_ROWS
) -> tuple[AudienceLayout, Iterator[AudienceChunk]]:
    """An inline audience (`[{"to": ..., "params": {...}}]`) as a layout and chunks.

    Columns are `to` and every parameter name, in order of first appearance; row numbers
    are list positions counted from 1 (there is no header row).
    """
    names: dict[str, None] = {}
    for entry in entries:
        for key in entry.get("params") or {}:
            names.setdefault(str(key), None)
    columns = ("to", *names)
    layout = AudienceLayout(columns=columns, phone_index=0)
    index = {name: i for i, name in enumerate(columns)}

    def chunks() -> Iterator[AudienceChunk]:
        for start in range(0, len(entries), size):
            rows = []
            for entry in entries[start : start + size]:
                cells = [""] * len(columns)
                cells[0] = str(entry.get("to", ""))
                for key, value in (entry.get("params") or {}).items():
                    cells[index[str(key)]] = "" if value is None else str(value)
                rows.append(cells)
            yield AudienceChunk(start + 1, rows)

    return layout, chunks()


# ---------------------------------------------------------------- personalisation


class MissingValue(ValueError):
    """A personalisation placeholder had no value for a recipient."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"missing_parameter:{name}")


# Message fields a campaign text may use besides `{{params.NAME}}` / `$$NAME`.
PERSONAL_FIELDS = frozenset({"campaign_id"})


class PersonalTemplate:
    """A campaign text (body or template variable), parsed once and rendered per recipient."""

    def __init__(self, source: str, where: str) -> None:
        try:
            template = parse_template(source)
        except TemplateSyntaxError as exc:
            raise AudienceError([FieldError(where, str(exc))]) from exc
        bad = sorted(
            p.name
            for p in template.placeholders
            if not p.is_param and p.name not in PERSONAL_FIELDS
        )
        if bad:
            raise AudienceError(
                [
                    FieldError(
                        where,
                        f"{{{{{bad[0]}}}}} cannot be used in a campaign text; use "
                        "{{params.NAME}} (or $$NAME) for an audience column or campaign "
                        "parameter, or {{campaign_id}}",
                    )
                ]
            )
        self.source = source
        self._parts = template.parts
        self.params = frozenset(p.key for p in template.placeholders if p.is_param)
        self.is_literal = template.is_literal

    def render(self, params: Mapping[str, str], campaign_id: str) -> str:
        """The text for one recipient; raises MissingValue naming the first gap."""
        if self.is_literal:
            return self.source
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, Placeholder):
                out.append(_value(part, params, campaign_id))
            else:
                out.append(part)
        return "".join(out)


def _value(part: Placeholder, params: Mapping[str, str], campaign_id: str) -> str:
    if part.name == "campaign_id":
        return campaign_id
    found = params.get(part.key)
    if found is None:
        raise MissingValue(part.name)
    return found


def missing_campaign_params(
    needed: Iterable[str], columns: Iterable[str], campaign_params: Mapping[str, str]
) -> list[str]:
    """Parameter names (sorted) that neither an audience column nor the campaign supplies."""
    supplied = set(columns) | set(campaign_params)
    return sorted({name for name in needed if name not in supplied})


def connector_params(names: Iterable[str]) -> set[str]:
    """The `params.NAME` placeholders of a connector, as bare names."""
    return {n[len(PARAM_PREFIX) :] for n in names if n.startswith(PARAM_PREFIX)}


# ---------------------------------------------------------------- duplicates


class PhoneSet:
    """A set of E.164 numbers in 8 bytes each: an open-addressing table of int64.

    A Python set of a million E.164 strings takes ~95 MB and of ints ~70 MB; this table
    stays under 17 MB (25 MB while it grows) for the same million, at ~5 µs an insert.
    """

    __slots__ = ("_mask", "_shift", "_size", "_table")

    def __init__(self, capacity: int = 1024) -> None:
        slots = 1024
        while slots < capacity * 2:
            slots *= 2
        self._table = array("q", bytes(8 * slots))
        self._mask = slots - 1
        self._shift = 64 - (slots.bit_length() - 1)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """The memory the table takes."""
        return self._table.itemsize * len(self._table)

    @staticmethod
    def key(e164: str) -> int:
        """A number's key: its E.164 digits as an integer (never 0: no leading zeros)."""
        return int(e164[1:] if e164.startswith("+") else e164)

    def add(self, e164: str) -> bool:
        """Add a number; False when it was already there (a duplicate)."""
        return self._add(self.key(e164))

    def __contains__(self, e164: object) -> bool:
        if not isinstance(e164, str):
            return False
        number = self.key(e164)
        table, mask = self._table, self._mask
        index = _slot(number, self._shift)
        while True:
            value = table[index]
            if value == 0:
                return False
            if value == number:
                return True
            index = (index + 1) & mask

    def _add(self, number: int) -> bool:
        table, mask = self._table, self._mask
        index = _slot(number, self._shift)
        while True:
            value = table[index]
            if value == 0:
                table[index] = number
                self._size += 1
                if self._size * 2 > mask:
                    self._grow()
                return True
            if value == number:
                return False
            index = (index + 1) & mask

    def _grow(self) -> None:
        old = self._table
        self._table = array("q", bytes(16 * len(old)))
        self._mask = len(self._table) - 1
        self._shift -= 1
        self._size = 0
        for value in old:
            if value:
                self._add(value)


_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def _slot(number: int, shift: int) -> int:
    # Fibonacci hashing: the top bits of number * 2^64/phi spread numbers of any pattern
    # (consecutive, or a common stride) evenly over the table.
    return ((number * _GOLDEN) & _MASK64) >> shift
