"""Phone numbers: user input validated into E.164, E.164 written the way a provider wants."""

from __future__ import annotations

import pytest

from smsrelay.connectors.phone import InvalidPhoneNumber, format_phone, normalise_phone


@pytest.mark.parametrize(
    ("e164", "fmt", "expected"),
    [
        ("+4915112345678", "e164", "+4915112345678"),
        ("+4915112345678", "e164_digits", "4915112345678"),
        ("+4915112345678", "national", "015112345678"),
        ("+12015550123", "national", "2015550123"),
        ("+919876543210", "national", "09876543210"),
        ("+447700900123", "national", "07700900123"),
    ],
)
def test_format_phone(e164: str, fmt: str, expected: str) -> None:
    assert format_phone(e164, fmt) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+4915112345678", None, "+4915112345678"),
        ("+49 (151) 123-45678", None, "+4915112345678"),
        ("004915112345678", None, "+4915112345678"),
        ("015112345678", "DE", "+4915112345678"),
        ("015112345678", "de", "+4915112345678"),
        ("(201) 555-0123", "US", "+12015550123"),
        ("+447911123456", "DE", "+447911123456"),  # an explicit country code wins
    ],
)
def test_normalise_phone_returns_e164(raw: str, region: str | None, expected: str) -> None:
    assert normalise_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        (
            "015112345678",
            None,
            "missing country code: write +<country code><number> (e.g. +4915112345678) "
            "or set a default region",
        ),
        ("+491511", None, "not a valid number for DE"),
        ("+1201555", None, "not a valid number for country code +1 (too short)"),
        ("12", "DE", "not a valid number for DE"),
        ("call me", None, "is not a phone number: use digits, optionally with +, spaces, - or ()"),
        ("", None, "is empty; write the number as +<country code><number>"),
    ],
)
def test_normalise_phone_says_what_is_wrong(raw: str, region: str | None, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as refused:
        normalise_phone(raw, region)
    assert refused.value.reason == reason
    assert str(refused.value) == reason


def test_an_unknown_country_code_is_named_as_such() -> None:
    with pytest.raises(InvalidPhoneNumber, match=r"^unknown country code"):
        normalise_phone("+999123456")
