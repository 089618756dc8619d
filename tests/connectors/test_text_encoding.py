"""SMS encoding and segment counting with the real GSM 03.38 alphabet (SPEC §3)."""

from __future__ import annotations

import gsm0338  # noqa: F401  (registers the 'gsm03.38' codec used as the oracle)
import pytest

from smsrelay.connectors.text_encoding import (
    GSM7_BASIC,
    GSM7_EXTENDED,
    TextEncoding,
    analyse_text,
)


def test_every_bmp_character_is_classified_like_the_gsm0338_codec() -> None:
    """A character is GSM-7 exactly when the codec encodes it; its septets are its bytes.

    U+001B is the one exception: the codec passes it through as the ESC byte, but ESC is
    the escape to the extension table, not a character a message can contain.
    """
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF or code == 0x1B:
            continue
        char = chr(code)
        try:
            septets = len(char.encode("gsm03.38"))
        except UnicodeEncodeError:
            septets = 0
        result = analyse_text(char)
        if septets:
            assert (result.encoding, result.units) == ("gsm7", septets), repr(char)
        else:
            assert (result.encoding, result.units) == ("ucs2", 1), repr(char)


def test_escape_character_itself_forces_ucs2() -> None:
    assert analyse_text("a\x1bb").encoding == "ucs2"


def test_alphabet_sizes() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes minus ESC
    assert frozenset("\f^{}\\[~]|€") == GSM7_EXTENDED


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", TextEncoding("gsm7", False, 0, 1)),
        ("Hello", TextEncoding("gsm7", False, 5, 1)),
        ("Grüße aus Köln", TextEncoding("gsm7", False, 14, 1)),  # ü ß ö are in the alphabet
        ("Köln – Bonn", TextEncoding("ucs2", True, 11, 1)),  # the en dash is not
        ("Ça coûte 5€", TextEncoding("ucs2", True, 11, 1)),  # û is not in GSM 03.38
        ("Ça coute 5€", TextEncoding("gsm7", False, 12, 1)),  # € is two septets
        ("price {5}", TextEncoding("gsm7", False, 11, 1)),
        ("`backtick`", TextEncoding("ucs2", True, 10, 1)),
        ("ç", TextEncoding("ucs2", True, 1, 1)),  # only capital Ç is in the alphabet
        ("😀", TextEncoding("ucs2", True, 2, 1)),  # one emoji is two UTF-16 units
    ],
)
def test_encoding_and_units(body: str, expected: TextEncoding) -> None:
    assert analyse_text(body) == expected


@pytest.mark.parametrize(
    ("length", "segments"),
    [(160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_fits_160_alone_and_153_per_part(length: int, segments: int) -> None:
    assert analyse_text("a" * length).segments == segments


@pytest.mark.parametrize(
    ("length", "segments"),
    [(70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_fits_70_alone_and_67_per_part(length: int, segments: int) -> None:
    assert analyse_text("ж" * length).segments == segments


def test_extension_characters_count_twice_towards_the_single_limit() -> None:
    assert analyse_text("€" * 80) == TextEncoding("gsm7", False, 160, 1)
    assert analyse_text("€" * 80 + "a") == TextEncoding("gsm7", False, 161, 2)


def test_an_escape_pair_is_never_split_across_parts() -> None:
    # 152 + 2 + 152 = 306 septets would fill two parts of 153 exactly, but the euro's ESC
    # would be the 153rd septet of part one: the pair moves to part two, which overflows.
    body = "a" * 152 + "€" + "a" * 152
    assert analyse_text(body) == TextEncoding("gsm7", False, 306, 3)
    # with the euro one character earlier the pair ends part one exactly
    assert analyse_text("a" * 151 + "€" + "a" * 153).segments == 2


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    # 66 + 2 + 66 = 134 units would fill two parts of 67, but the emoji would straddle them.
    body = "ж" * 66 + "😀" + "ж" * 66
    assert analyse_text(body) == TextEncoding("ucs2", True, 134, 3)
    assert analyse_text("ж" * 65 + "😀" + "ж" * 67).segments == 2


def test_emoji_only_messages_count_two_units_each() -> None:
    assert analyse_text("😀" * 35) == TextEncoding("ucs2", True, 70, 1)
    assert analyse_text("😀" * 36) == TextEncoding("ucs2", True, 72, 2)
