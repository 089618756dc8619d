"""Quiet hours in the recipient's zone, and throttle slots: when a campaign message may go."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from smsrelay.dispatch.quiet_hours import (
    QuietHours,
    QuietHoursError,
    QuietRules,
    SendSlots,
    median_zone,
    parse_clock,
    recipient_time_zones,
)

NEW_YORK = ("America/New_York",)
BERLIN = ("Europe/Berlin",)
# 2030-01-15 is winter: New York is UTC-5, Berlin UTC+1.
DAY = datetime(2030, 1, 15, tzinfo=UTC)


def at(hour: int, minute: int = 0, *, day: datetime = DAY) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


rules = QuietRules(QuietHours())


# ---------------------------------------------------------------- zones of a number


def test_a_new_york_number_is_in_new_york() -> None:
    assert recipient_time_zones("+12125550123") == NEW_YORK


def test_a_german_mobile_number_is_in_berlin() -> None:
    assert recipient_time_zones("+4915112345678") == BERLIN


def test_a_number_of_a_country_spanning_zones_has_several() -> None:
    zones = recipient_time_zones("+61412345678")
    assert "Australia/Perth" in zones and "Australia/Sydney" in zones


# ---------------------------------------------------------------- quiet hours


def test_a_message_due_at_night_waits_until_nine_local() -> None:
    # 07:00 UTC is 02:00 in New York; quiet hours end at 09:00 EST = 14:00 UTC.
    assert rules.release(at(7), NEW_YORK) == at(14)


def test_a_message_due_in_the_day_goes_at_once() -> None:
    assert rules.release(at(15, 30), NEW_YORK) == at(15, 30)


def test_quiet_hours_start_inclusive_and_end_exclusive() -> None:
    # 21:00 Berlin = 20:00 UTC (quiet); 09:00 Berlin = 08:00 UTC (allowed).
    assert rules.release(at(20), BERLIN) == at(8, day=DAY + timedelta(days=1))
    assert rules.release(at(8), BERLIN) == at(8)
    assert rules.release(at(19, 59), BERLIN) == at(19, 59)


def test_a_message_due_before_midnight_waits_until_the_next_morning() -> None:
    # 23:30 in New York on the 15th is 04:30 UTC on the 16th; it goes 09:00 on the 16th.
    assert rules.release(at(28, 30), NEW_YORK) == at(38)


def test_daylight_saving_time_is_followed() -> None:
    summer = datetime(2030, 7, 15, tzinfo=UTC)
    # 02:00 EDT is 06:00 UTC; 09:00 EDT is 13:00 UTC.
    assert rules.release(at(6, day=summer), NEW_YORK) == at(13, day=summer)


def test_a_same_day_quiet_period_is_read_as_such() -> None:
    lunch = QuietRules(QuietHours(time(12, 0), time(14, 0)))
    # 12:30 Berlin = 11:30 UTC -> 14:00 Berlin = 13:00 UTC.
    assert lunch.release(at(11, 30), BERLIN) == at(13)
    assert lunch.release(at(20), BERLIN) == at(20)


def test_several_zones_are_read_the_most_restrictive_way() -> None:
    zones = recipient_time_zones("+61412345678")
    # 00:00 UTC is 11:00 in Sydney but 06:30 on the Cocos Islands (UTC+6:30), also listed
    # for Australian mobiles: the message waits until 09:00 there, 02:30 UTC.
    assert rules.release(at(0), zones) == at(2, 30)
    released = rules.release(at(0), zones)
    for name in zones:
        local = released.astimezone(ZoneInfo(name)).time()
        assert time(9, 0) <= local < time(21, 0), name


def test_all_of_north_america_still_has_a_common_window() -> None:
    zones = recipient_time_zones("+15005550006")  # non-geographic: every NANP zone
    assert len(zones) > 20
    released = rules.release(at(5), zones)
    # From Guam (UTC+10) to Newfoundland (UTC-3:30) it is day only 23:00-00:30 UTC.
    assert released == at(23)
    for name in zones:
        local = released.astimezone(ZoneInfo(name)).time()
        assert time(9, 0) <= local < time(21, 0), name


def test_zones_without_a_common_window_are_judged_by_the_median_zone() -> None:
    zones = recipient_time_zones("+15005550006")
    long_nights = QuietHours(time(17, 0), time(10, 0))
    moment = at(5)
    median = median_zone([ZoneInfo(z) for z in zones], moment)
    released = QuietRules(long_nights).release(moment, zones)
    assert released == QuietRules(long_nights).release(moment, (str(median),))
    assert released.astimezone(median).time() == time(10, 0)


def test_an_unknown_zone_is_judged_in_the_fallback_zone() -> None:
    tokyo = QuietRules(QuietHours(fallback_time_zone="Asia/Tokyo"))
    # 13:00 UTC is 22:00 in Tokyo: wait until 09:00 Tokyo = 00:00 UTC.
    assert tokyo.release(at(13), ("Etc/Unknown",)) == at(24)
    assert rules.release(at(22), ("Etc/Unknown",)) == at(33)  # UTC by default


@pytest.mark.parametrize("text", ["9", "24:00", "21:60", "nine", ""])
def test_clock_times_are_hh_mm(text: str) -> None:
    with pytest.raises(QuietHoursError):
        parse_clock(text)


def test_quiet_hours_need_a_period_and_a_known_fallback_zone() -> None:
    with pytest.raises(QuietHoursError):
        QuietHours(time(9), time(9))
    with pytest.raises(QuietHoursError, match="Mars/Olympus"):
        QuietHours(fallback_time_zone="Mars/Olympus")


def test_quiet_hours_round_trip_as_json() -> None:
    quiet = QuietHours(time(22, 30), time(7, 15), "Europe/Paris")
    assert QuietHours.from_json(quiet.to_json()) == quiet


# ---------------------------------------------------------------- throttle slots


def test_without_a_throttle_every_message_goes_at_the_start() -> None:
    slots = SendSlots(at(10))
    assert [slots.take() for _ in range(3)] == [at(10)] * 3


def test_a_throttle_spaces_messages_evenly() -> None:
    slots = SendSlots(at(10), per_minute=600)
    times = [slots.take() for _ in range(1200)]
    gaps = {round((b - a).total_seconds(), 6) for a, b in itertools.pairwise(times)}
    assert gaps == {0.1}
    assert times[600] == at(10, 1)


def test_a_deferred_message_takes_the_first_free_slot_after_its_time() -> None:
    slots = SendSlots(at(10), per_minute=2)  # a slot every 30 s
    assert slots.take() == at(10)
    assert slots.take(earliest=at(10, 0) + timedelta(seconds=20)) == at(10, 0) + timedelta(
        seconds=30
    )
    assert slots.take() == at(10, 1)
    assert slots.take(earliest=at(10, 3) + timedelta(seconds=1)) == at(10, 3) + timedelta(
        seconds=30
    )
    # The slots passed over stay free for messages that may go earlier.
    assert [slots.take() for _ in range(3)] == [
        at(10, 1) + timedelta(seconds=30),
        at(10, 2),
        at(10, 2) + timedelta(seconds=30),
    ]
    assert slots.take() == at(10, 4)


def test_slots_passed_over_in_a_minute_are_not_given_later() -> None:
    slots = SendSlots(at(10), per_minute=6)  # every 10 s
    assert slots.take(earliest=at(10, 0) + timedelta(seconds=25)) == at(10) + timedelta(seconds=30)
    # 10:00:00-10:00:20 were passed over in that minute; the next slot is 10:00:40.
    assert slots.take() == at(10) + timedelta(seconds=40)


def max_in_window(times: list[datetime], seconds: float) -> int:
    ordered = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(ordered):
        while (moment - ordered[start]).total_seconds() >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_quiet_hours_and_throttle_together_never_exceed_the_rate() -> None:
    rng = random.Random(7)
    zones = [NEW_YORK, BERLIN, ("Asia/Tokyo",), ("Australia/Sydney",)]
    slots = SendSlots(at(6), per_minute=120)
    taken = []
    for _ in range(5000):
        recipient = rng.choice(zones)
        slot = slots.take(release=lambda moment, z=recipient: rules.release(moment, z))
        assert rules.release(slot, recipient) == slot  # never inside quiet hours
        taken.append(slot)
    assert max_in_window(taken, 60) <= 120
    assert min(taken) == at(6)


def test_a_schedule_continues_from_its_stored_state() -> None:
    whole = SendSlots(at(10), per_minute=7)
    expected = [whole.take(earliest=at(10, i % 5)) for i in range(50)]
    first = SendSlots(at(10), per_minute=7)
    got = [first.take(earliest=at(10, i % 5)) for i in range(20)]
    second = SendSlots(at(10), per_minute=7, state=first.state())
    got += [second.take(earliest=at(10, i % 5)) for i in range(20, 50)]
    assert got == expected


def test_a_schedule_needs_an_aware_anchor_and_a_positive_throttle() -> None:
    with pytest.raises(ValueError):
        SendSlots(datetime(2030, 1, 1))
    with pytest.raises(ValueError):
        SendSlots(at(1), per_minute=0)
