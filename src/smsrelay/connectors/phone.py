"""Phone numbers: validate input into E.164, and format E.164 the way a provider wants it."""

from __future__ import annotations

import re
from dataclasses import dataclass
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
    fast = _valid_canonical_e164(text)
    if fast is not None:
        return fast
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

# ---------------------------------------------------------------- the fast path
#
# A batch of 10 000 numbers already in E.164 (the usual API input) spends most of its
# intake in phonenumbers: `parse` walks the text character by character and
# `is_valid_number` tries every number type's pattern. For canonical input whose country
# code has one region, no national prefix to strip and no leading zero, parsing reduces
# to splitting off the country code, and a number matching the region's general and
# mobile patterns is valid whatever else it might match (phonenumbers finds a type for
# it). Anything else takes the full path, so the answer is always the same.

_CANONICAL_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_Desc = tuple[re.Pattern[str], frozenset[int]]


@dataclass(frozen=True, slots=True)
class _CountryRule:
    """What the fast path needs of a country code with one region: patterns and sizes."""

    code_size: int
    general: re.Pattern[str]
    general_lengths: frozenset[int]
    mobile: re.Pattern[str]
    mobile_lengths: frozenset[int]
    national_prefix: re.Pattern[str] | None


# By the first three digits after `+`, which always hold the whole country code (codes
# are prefix-free and at most three digits): None when the fast path does not apply.
_RULES: dict[str, _CountryRule | None] = {}


def _valid_canonical_e164(text: str) -> str | None:
    """`text` if it is canonical E.164 and a valid mobile number; None: decide the long way."""
    if not _CANONICAL_E164.fullmatch(text):
        return None
    lead = text[1:4]
    try:
        rule = _RULES[lead]
    except KeyError:
        rule = _RULES[lead] = _country_rule(lead)
    if rule is None:
        return None
    national = text[1 + rule.code_size :]
    if national.startswith("0"):
        return None
    if rule.national_prefix is not None and rule.national_prefix.match(national):
        return None  # parse might strip it as a national prefix
    size = len(national)
    if (
        (not rule.general_lengths or size in rule.general_lengths)
        and (not rule.mobile_lengths or size in rule.mobile_lengths)
        and rule.general.fullmatch(national) is not None
        and rule.mobile.fullmatch(national) is not None
    ):
        return text
    return None


def _country_rule(lead: str) -> _CountryRule | None:
    for size in (1, 2, 3):
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(lead[:size]))
        if regions:
            break
    else:
        return None
    if len(regions) != 1:
        return None
    patterns = _region_patterns(regions[0])
    if patterns is None:
        return None
    (general, general_lengths), (mobile, mobile_lengths), national_prefix = patterns
    return _CountryRule(size, general, general_lengths, mobile, mobile_lengths, national_prefix)


@lru_cache(maxsize=512)
def _region_patterns(region: str) -> tuple[_Desc, _Desc, re.Pattern[str] | None] | None:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return None
    descs = []
    for desc in (metadata.general_desc, metadata.mobile):
        if desc is None or not desc.national_number_pattern:
            return None
        descs.append((re.compile(desc.national_number_pattern), frozenset(desc.possible_length)))
    prefix = metadata.national_prefix_for_parsing
    return descs[0], descs[1], re.compile(prefix) if prefix else None


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
