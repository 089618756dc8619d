"""CleverTap's error codes are chosen from the failure reason by a documented table."""

from __future__ import annotations

import pytest

from smsrelay.compat.failure_codes import FAILURE_RULES, clevertap_failure


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("DND failure", "901"),
        ("Number is in DND", "901"),
        ("NDNC rejected", "913"),
        ("spam content detected", "902"),
        ("blacklisted", "903"),
        ("recipient opted out", "903"),
        ("retries_exhausted: HTTP 500", "904"),
        ("absent_subscriber", "905"),
        ("Sender ID (header) blocked by DLT", "906"),
        ("Entity ID not registered", "907"),
        ("DLT template mismatch", "908"),
        ("DLT consent not found", "909"),
        ("invalid destination", "910"),
        ("Unknown subscriber", "910"),
        ("memory capacity exceeded", "912"),
        ("undelivered", "914"),
        ("dropped by operator", "915"),
        ("EXPIRED", "916"),
        ("force_expired", "917"),
        ("duplicate message", "918"),
        ("DLT scrubbing failure", "919"),
        ("URL not whitelisted", "920"),
    ],
)
def test_a_known_reason_gets_its_code(reason: str, code: str) -> None:
    assert clevertap_failure(reason)[0] == code


def test_an_unknown_reason_is_900_with_the_reason_as_description() -> None:
    assert clevertap_failure("carrier said no") == ("900", "carrier said no")


def test_an_undelivered_message_without_reason_is_914() -> None:
    assert clevertap_failure(None, undelivered=True) == ("914", "Undelivered")
    assert clevertap_failure(None)[0] == "900"


def test_the_error_code_is_read_too() -> None:
    assert clevertap_failure(None, "EXPIRED")[0] == "916"


def test_the_table_uses_only_clevertaps_codes() -> None:
    codes = [rule.code for rule in FAILURE_RULES]
    assert len(codes) == len(set(codes))
    assert set(codes) == {str(c) for c in range(901, 921)} - {"911"}
