"""Phone numbers: validate input into E.164, and format E.164 the way a provider wants it."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

PhoneFormat = Literal["e164", "e164_digits", "national"]


class InvalidPhoneNumber(ValueError):
    """A number was refused; `reason` says what was wrong and what would be accepted."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def format_phone(e164: str, fmt: PhoneFormat) -> str:
    """Write an E.164 number (`+4915112345678`) in a provider's format.

    `e164` keeps the `+`, `e164_digits` drops it (`4915112345678`), `national` is the
    national dialling form with only digits (`015112345678`).
    """
    if fmt == "e164":
        return e164
    if fmt == "e164_digits":
        return e164[1:] if e164.startswith("+") else e164
    return _national(e164)


# Parsing with phonenumbers costs tens of microseconds; recipients repeat across messages.
@lru_cache(maxsize=8192)
def _national(e164: str) -> str:
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException as exc:
        raise InvalidPhoneNumber(f"{_describe_parse_error(exc)}; expected E.164") from exc
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    return "".join(ch for ch in national if ch.isdigit())


def normalise_phone(raw: str, default_region: str | None = None) -> str:
    """Validate a number as typed by a user and return it in E.164.

    A number without `+` needs `default_region` (ISO 3166 code such as `DE`); with no
    region, a leading `00` is read as the international prefix (`0049…` = `+49…`).
    """
    text = raw.strip()
    if not text:
        raise InvalidPhoneNumber("is empty; write the number as +<country code><number>")
    if not any(ch.isdigit() for ch in text):
        raise InvalidPhoneNumber(_NOT_A_NUMBER)
    region = default_region.upper() if default_region else None
    if region is None and text.startswith("00"):
        text = "+" + text[2:]
    if region is None and not text.startswith("+"):
        raise InvalidPhoneNumber(
            "missing country code: write +<country code><number> (e.g. +4915112345678) "
            "or set a default region"
        )
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        raise InvalidPhoneNumber(_describe_parse_error(exc)) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber(_describe_invalid(number))
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


_NOT_A_NUMBER = "is not a phone number: use digits, optionally with +, spaces, - or ()"


def _describe_parse_error(exc: NumberParseException) -> str:
    kind = exc.error_type
    if kind == NumberParseException.INVALID_COUNTRY_CODE:
        return (
            "unknown country code: write +<country code><number> (e.g. +4915112345678), "
            "or a national number with a valid default region"
        )
    if kind == NumberParseException.NOT_A_NUMBER:
        return _NOT_A_NUMBER
    if kind in (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD):
        return "is too short to be a phone number"
    if kind == NumberParseException.TOO_LONG:
        return "is too long to be a phone number"
    return "is not a phone number"


def _describe_invalid(number: phonenumbers.PhoneNumber) -> str:
    country_code = number.country_code or 0
    regions = phonenumbers.region_codes_for_country_code(country_code)
    region = phonenumbers.region_code_for_number(number)
    if region is None:
        region = regions[0] if len(regions) == 1 else f"country code +{country_code}"
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible == ValidationResult.TOO_SHORT:
        detail = " (too short)"
    elif possible == ValidationResult.TOO_LONG:
        detail = " (too long)"
    else:
        detail = ""
    return f"not a valid number for {region}{detail}"
