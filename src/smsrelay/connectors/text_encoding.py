"""SMS text encoding: GSM-7 or UCS-2, units and segment count (3GPP TS 23.038 / 23.040).

A body is GSM-7 when every character is in the GSM 03.38 default alphabet or its extension
table (extension characters cost two septets: ESC + code); otherwise the whole message is
sent as UCS-2 and counted in UTF-16 code units (a character outside the BMP, such as most
emoji, is two units).

Segment sizes: GSM-7 fits 160 septets in one SMS and 153 per part of a concatenated SMS;
UCS-2 fits 70 units in one SMS and 67 per part. Two rules follow what handsets and SMSCs do:
- an escape pair is never split across parts, so a part whose last free septet would hold
  the ESC of an extension character carries 152 septets and the pair starts the next part;
- a surrogate pair is never split across UCS-2 parts, so such a part carries 66 units.
An empty body is one segment (providers bill an empty SMS as one message).

National language shift tables (Turkish, Spanish, Indian languages...) are not used: a
provider may choose them and send fewer segments, never more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# GSM 03.38 default alphabet in code order 0x00-0x7F. 0x1B is the escape to the extension
# table, not a character: a U+001B in a body cannot be sent as GSM-7, so it is left out.
GSM7_BASIC_ALPHABET = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ" + "ÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

# The extension table: each of these is sent as ESC + one code, two septets.
GSM7_EXTENSION = "\f^{}\\[~]|€"

GSM7_BASIC: frozenset[str] = frozenset(GSM7_BASIC_ALPHABET)
GSM7_EXTENDED: frozenset[str] = frozenset(GSM7_EXTENSION)
GSM7_CHARACTERS: frozenset[str] = GSM7_BASIC | GSM7_EXTENDED

GSM7_SINGLE = 160
GSM7_PART = 153
UCS2_SINGLE = 70
UCS2_PART = 67

# One C-level scan each instead of a Python loop per character.
_NOT_GSM7 = re.compile("[^" + re.escape("".join(sorted(GSM7_CHARACTERS))) + "]")
_EXTENDED = re.compile("[" + re.escape(GSM7_EXTENSION) + "]")

Encoding = Literal["gsm7", "ucs2"]


@dataclass(frozen=True, slots=True)
class TextEncoding:
    """How a body goes over the air: encoding, size in units and number of segments.

    `units` are septets for GSM-7 (extension characters count two) and UTF-16 code units
    for UCS-2.
    """

    encoding: Encoding
    unicode: bool
    units: int
    segments: int


def analyse_text(body: str) -> TextEncoding:
    """Choose the encoding of an SMS body and count its units and segments."""
    if _NOT_GSM7.search(body) is None:
        extended = len(_EXTENDED.findall(body))
        septets = len(body) + extended
        if septets <= GSM7_SINGLE:
            segments = 1
        elif not extended:
            segments = -(-septets // GSM7_PART)
        else:
            segments = _gsm7_segments_keeping_escapes(body)
        return _result("gsm7", septets, segments)
    # An ASCII body here has a character GSM-7 lacks (` or a control): one unit each.
    # surrogatepass keeps a lone surrogate countable instead of failing.
    units = len(body) if body.isascii() else len(body.encode("utf-16-le", "surrogatepass")) // 2
    if units <= UCS2_SINGLE:
        segments = 1
    elif units == len(body):  # BMP only: no surrogate pair to keep whole
        segments = -(-units // UCS2_PART)
    else:
        segments = _ucs2_segments_keeping_pairs(body)
    return _result("ucs2", units, segments)


# Results are small immutable values shared between messages of the same size, which
# saves building a frozen dataclass per message; long bodies are rare and not cached.
_RESULTS: dict[tuple[str, int, int], TextEncoding] = {}
_CACHED_UNITS = 2048


def _result(encoding: Encoding, units: int, segments: int) -> TextEncoding:
    key = (encoding, units, segments)
    found = _RESULTS.get(key)
    if found is None:
        found = TextEncoding(encoding, encoding == "ucs2", units, segments)
        if units < _CACHED_UNITS:
            _RESULTS[key] = found
    return found


def _gsm7_segments_keeping_escapes(body: str) -> int:
    segments = 1
    used = 0
    for char in body:
        size = 2 if char in GSM7_EXTENDED else 1
        if used + size > GSM7_PART:
            segments += 1
            used = 0
        used += size
    return segments


def _ucs2_segments_keeping_pairs(body: str) -> int:
    segments = 1
    used = 0
    for char in body:
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > UCS2_PART:
            segments += 1
            used = 0
        used += size
    return segments
