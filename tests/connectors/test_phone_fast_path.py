"""The fast path for canonical E.164 input answers exactly as phonenumbers does."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone


def phonenumbers_answer(text: str) -> str | None:
    """What the full parse says of `text`: its E.164 form, or None when it is refused."""
    try:
        number = phonenumbers.parse(text, None)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def our_answer(text: str) -> str | None:
    try:
        return normalise_phone(text)
    except InvalidPhoneNumber:
        return None


def sample_numbers(count: int, seed: int) -> list[str]:
    """Random `+<country code><digits>` of every country code, and real mobile examples."""
    chance = random.Random(seed)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    numbers = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
        if example is not None:
            numbers.append(phonenumbers.format_number(example, PhoneNumberFormat.E164))
    while len(numbers) < count:
        code = str(chance.choice(codes))
        length = chance.randint(max(1, 7 - len(code)), 15 - len(code))
        numbers.append("+" + code + "".join(chance.choice("0123456789") for _ in range(length)))
    return numbers


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_canonical_numbers_get_the_answer_phonenumbers_gives(seed: int) -> None:
    numbers = sample_numbers(6000, seed)
    differing = [(n, our_answer(n), phonenumbers_answer(n)) for n in numbers]
    differing = [d for d in differing if d[1] != d[2]]
    assert differing == []
    # The sample exercises both answers, and the fast path more than rarely.
    accepted = sum(1 for n in numbers if our_answer(n) is not None)
    assert 500 < accepted < len(numbers) - 500


def test_german_mobiles_are_accepted_as_given() -> None:
    numbers = [f"+49151{n:08d}" for n in range(0, 10**8, 9_999_991)]
    assert [normalise_phone(n) for n in numbers] == numbers
