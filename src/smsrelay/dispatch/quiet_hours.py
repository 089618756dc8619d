"""When a campaign message may go: quiet hours in the recipient's time zone, and throttle slots.

Pure: no database, no clock. The campaign runner asks `SendSlots.take` for each recipient in
audience order and stores the answer as the message's `send_at` / `next_attempt_at`, so the
dispatcher needs no notion of campaigns, throttles or quiet hours.

Quiet hours are read in the recipient's local time, derived from the number
(`recipient_time_zones`). A number can map to several zones (a whole country, or a prefix
that spans zones); the most restrictive reading is used: a message goes only at an instant
that is outside quiet hours in *every* candidate zone. When the candidate zones have no
such instant in common (zones spread wider than the allowed window: North America's from
Guam to Newfoundland with quiet hours 17:00-10:00), the number is judged by the candidate
zone with the median UTC offset.
A number with no known zone is judged in the campaign's fallback zone (UTC by default).

Throttle: send times sit on a grid spaced `60 / per_minute` seconds from the schedule's
anchor (the campaign start), cut into one-minute buckets of `per_minute` positions. A
message takes the first free position at or after its earliest allowed time; positions
passed over stay unused. So no minute-long window ever holds more than the throttle,
including messages deferred past quiet hours (they take the first free position after the
quiet period ends) and parts queued later than their slots (the runner never asks for a
time before now).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezone

# The default quiet period, in the recipient's local time (start inclusive, end exclusive).
DEFAULT_QUIET_START = time(21, 0)
DEFAULT_QUIET_END = time(9, 0)
DEFAULT_FALLBACK_TIME_ZONE = "UTC"

UNKNOWN_TIME_ZONE = "Etc/Unknown"
BUCKET_SECONDS = 60
# A quiet calendar covers local days around the instant asked about; wide enough that a
# merged quiet period is never cut at its edges.
_DAYS_BEFORE = 2
_DAYS_AFTER = 4
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class QuietHoursError(ValueError):
    """A quiet-hours setting was refused; the message says what would be accepted."""


def parse_clock(text: str) -> time:
    """Read a local clock time written `HH:MM` (24-hour)."""
    match = _CLOCK.match(text.strip())
    if match is None:
        raise QuietHoursError(f"{text!r} is not a time of day; write HH:MM, e.g. 21:00")
    return time(int(match.group(1)), int(match.group(2)))


def load_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or QuietHoursError naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise QuietHoursError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin or UTC"
        ) from None


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily quiet period in local time: from `start` until `end` (overnight if end < start)."""

    start: time = DEFAULT_QUIET_START
    end: time = DEFAULT_QUIET_END
    fallback_time_zone: str = DEFAULT_FALLBACK_TIME_ZONE

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise QuietHoursError("quiet hours start and end at the same time; give a period")
        load_zone(self.fallback_time_zone)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> QuietHours:
        """From `{"start": "21:00", "end": "09:00", "fallback_time_zone": "UTC"}`."""
        return cls(
            start=parse_clock(str(document.get("start", "21:00"))),
            end=parse_clock(str(document.get("end", "09:00"))),
            fallback_time_zone=str(
                document.get("fallback_time_zone") or DEFAULT_FALLBACK_TIME_ZONE
            ),
        )

    def to_json(self) -> dict[str, str]:
        """As stored with a campaign and shown by the API."""
        return {
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
            "fallback_time_zone": self.fallback_time_zone,
        }

    def periods(self, zone: ZoneInfo, first: date, last: date) -> list[tuple[datetime, datetime]]:
        """The quiet periods that start on local days `first`..`last`, as UTC intervals."""
        periods = []
        day = first
        while day <= last:
            begins = datetime.combine(day, self.start, tzinfo=zone)
            end_day = day + timedelta(days=1) if self.end < self.start else day
            ends = datetime.combine(end_day, self.end, tzinfo=zone)
            periods.append((begins.astimezone(UTC), ends.astimezone(UTC)))
            day += timedelta(days=1)
        return periods


# ---------------------------------------------------------------- zones of a number


# phonenumbers keys its zone data by prefixes of at most this many digits.
_ZONE_PREFIX_DIGITS: int = getattr(phone_timezone, "TIMEZONE_LONGEST_PREFIX", 9)
_ZONE_CACHE_SIZE = 65536
_zones_by_prefix: dict[str, tuple[str, ...]] = {}


def recipient_time_zones(e164: str) -> tuple[str, ...]:
    """The IANA zones a number may be in, from phonenumbers' time-zone data.

    phonenumbers keys its zones by prefixes of at most nine digits, plus the number type
    (which decides between the prefix's and the whole country's zones); numbers sharing
    their first nine digits share their type in practice, so the answer is cached per
    prefix (a lookup costs ~75 µs a number otherwise).
    Returns `("Etc/Unknown",)` when nothing is known.
    """
    digits = e164[1:] if e164.startswith("+") else e164
    prefix = digits[:_ZONE_PREFIX_DIGITS]
    zones = _zones_by_prefix.get(prefix)
    if zones is None:
        try:
            number = phonenumbers.parse("+" + digits, None)
        except phonenumbers.NumberParseException:
            return (UNKNOWN_TIME_ZONE,)
        zones = tuple(phone_timezone.time_zones_for_number(number)) or (UNKNOWN_TIME_ZONE,)
        if len(_zones_by_prefix) >= _ZONE_CACHE_SIZE:
            _zones_by_prefix.clear()
        _zones_by_prefix[prefix] = zones
    return zones


# ---------------------------------------------------------------- quiet calendar


class _QuietCalendar:
    """Quiet periods of a set of zones, merged into UTC intervals over a window of days."""

    def __init__(self, quiet: QuietHours, zones: Sequence[ZoneInfo]) -> None:
        self._quiet = quiet
        self.zones = tuple(zones)
        # Days for which the merged periods are known with a margin on both sides.
        self._safe_from = date.max
        self._safe_to = date.min
        self._starts: list[datetime] = []
        self._ends: list[datetime] = []
        # False when the zones' quiet periods join into a day or more: no common window.
        self.feasible = True

    def _cover(self, moment: datetime) -> None:
        day = moment.date()
        if self._safe_from <= day <= self._safe_to:
            return
        first, last = day - timedelta(days=_DAYS_BEFORE), day + timedelta(days=_DAYS_AFTER)
        periods = sorted(p for zone in self.zones for p in self._quiet.periods(zone, first, last))
        starts: list[datetime] = []
        ends: list[datetime] = []
        for begins, finishes in periods:
            if ends and begins <= ends[-1]:
                ends[-1] = max(ends[-1], finishes)
            else:
                starts.append(begins)
                ends.append(finishes)
        self._safe_from = first + timedelta(days=1)
        self._safe_to = last - timedelta(days=2)
        self._starts, self._ends = starts, ends
        self.feasible = all(e - s < timedelta(hours=24) for s, e in zip(starts, ends, strict=True))

    def release(self, moment: datetime) -> datetime:
        """`moment` if it is outside every quiet period, else the end of the one holding it."""
        self._cover(moment)
        index = bisect.bisect_right(self._starts, moment) - 1
        if index >= 0 and moment < self._ends[index]:
            return self._ends[index]
        return moment


class QuietRules:
    """Quiet hours applied to recipients: the earliest instant a message may go to a number.

    One merged calendar is kept per set of candidate zones (a campaign meets few distinct
    sets), so a lookup is a dictionary hit and a bisection.
    """

    def __init__(self, quiet: QuietHours) -> None:
        self.quiet = quiet
        self._fallback = load_zone(quiet.fallback_time_zone)
        self._calendars: dict[tuple[str, ...], _QuietCalendar] = {}

    def _zone(self, name: str) -> ZoneInfo:
        if name == UNKNOWN_TIME_ZONE:
            return self._fallback
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return self._fallback

    def _calendar(self, zones: tuple[str, ...], moment: datetime) -> _QuietCalendar:
        calendar = self._calendars.get(zones)
        if calendar is None:
            candidates = {self._zone(name) for name in zones} or {self._fallback}
            calendar = _QuietCalendar(self.quiet, sorted(candidates, key=str))
            calendar.release(moment)
            if not calendar.feasible:
                calendar = _QuietCalendar(self.quiet, [median_zone(calendar.zones, moment)])
            self._calendars[zones] = calendar
        return calendar

    def release(self, moment: datetime, zones: tuple[str, ...]) -> datetime:
        """`moment` if no candidate zone is in quiet hours then, else when the last one's end."""
        return self._calendar(zones, moment).release(moment)


def median_zone(zones: Sequence[ZoneInfo], moment: datetime) -> ZoneInfo:
    """The zone whose UTC offset at `moment` is the median of the given zones' offsets."""
    by_offset = sorted(zones, key=lambda zone: (moment.astimezone(zone).utcoffset(), str(zone)))
    return by_offset[(len(by_offset) - 1) // 2]


# ---------------------------------------------------------------- throttle slots

_MICROS_PER_BUCKET = BUCKET_SECONDS * 1_000_000
# A slot re-checked this many times against quiet hours is taken as it is (never reached
# with quiet windows of more than a minute; it bounds the loop whatever the input).
_MAX_RELEASES = 64


class SendSlots:
    """Hands out send times in audience order: throttled slots, deferred past quiet hours.

    Without a throttle every message goes at the anchor, or when its quiet hours end. With
    one, see the module docstring. `state()` is the JSON the runner stores with the
    campaign so that another process continues the same schedule.
    """

    def __init__(
        self,
        anchor: datetime,
        per_minute: int | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        if anchor.tzinfo is None:
            raise ValueError("the schedule anchor needs a time zone")
        if per_minute is not None and per_minute < 1:
            raise ValueError("a throttle is at least one message per minute")
        self.anchor = anchor
        self.per_minute = per_minute
        self._first_open = int((state or {}).get("first_open", 0))
        raw_counts: Mapping[str, int] = (state or {}).get("counts", {})
        self._counts: dict[int, int] = {int(k): int(v) for k, v in raw_counts.items()}
        # Full bucket -> a bucket at or before the next open one (path-compressed).
        self._skip: dict[int, int] = {}

    def state(self) -> dict[str, Any]:
        """The allocation so far, as JSON: buckets below `first_open` are all full."""
        return {
            "first_open": self._first_open,
            "counts": {str(k): v for k, v in sorted(self._counts.items())},
        }

    def _free_slot(self, wanted: datetime) -> tuple[int, int]:
        """The first free grid position at or after `wanted`: (bucket, position in it)."""
        assert self.per_minute is not None
        micros = max(0, (wanted - self.anchor) // timedelta(microseconds=1))
        bucket, offset = divmod(micros, _MICROS_PER_BUCKET)
        # Positions sit at `position * 60 s / per_minute` from the bucket's start.
        position = -(-offset * self.per_minute // _MICROS_PER_BUCKET)
        if bucket < self._first_open:
            bucket, position = self._first_open, 0
        path = []
        while max(position, self._counts.get(bucket, 0)) >= self.per_minute:
            path.append(bucket)
            bucket, position = self._skip.get(bucket, bucket + 1), 0
        for full in path:
            if self._counts.get(full, 0) >= self.per_minute:
                self._skip[full] = bucket
        return bucket, max(position, self._counts.get(bucket, 0))

    def _slot_time(self, bucket: int, position: int) -> datetime:
        assert self.per_minute is not None
        offset = bucket * _MICROS_PER_BUCKET + position * _MICROS_PER_BUCKET // self.per_minute
        return self.anchor + timedelta(microseconds=offset)

    def take(
        self,
        earliest: datetime | None = None,
        release: Callable[[datetime], datetime] | None = None,
    ) -> datetime:
        """The send time of the next message: not before `earliest` (nor the anchor).

        `release(t)` answers `t` when a message may go at `t`, else the end of the quiet
        period holding `t`.
        """
        wanted = self.anchor if earliest is None else max(self.anchor, earliest)
        if self.per_minute is None:
            return release(wanted) if release is not None else wanted
        for _ in range(_MAX_RELEASES):
            bucket, position = self._free_slot(wanted)
            slot = self._slot_time(bucket, position)
            allowed = release(slot) if release is not None else slot
            if allowed <= slot:
                break
            wanted = allowed
        # Positions skipped to reach `wanted` stay unused: the grid's spacing is kept.
        self._counts[bucket] = position + 1
        while self._counts.get(self._first_open, 0) >= self.per_minute:
            self._counts.pop(self._first_open)
            self._skip.pop(self._first_open, None)
            self._first_open += 1
        return slot
