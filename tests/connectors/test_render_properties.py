"""Properties of rendering: no value can change a request's structure, and counts are right.

Whatever a body, sender or custom parameter holds (quotes, backslashes, newlines, NUL,
`&`, `=`, `%`, `+`, `{{…}}`, emoji), decoding the rendered request the way the provider
will gives back exactly those values: rendering is injection-proof in every context.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import gsm0338  # noqa: F401  (registers the 'gsm03.38' codec used as the oracle)
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smsrelay.connectors.definition import parse_definition
from smsrelay.connectors.errors import RenderError
from smsrelay.connectors.exchange import HttpRequest, OutboundMessage
from smsrelay.connectors.rendering import (
    CompiledConnector,
    RenderEnvironment,
    compile_connector,
    render_request,
)
from smsrelay.connectors.text_encoding import GSM7_BASIC_ALPHABET, GSM7_EXTENSION, analyse_text

# Any Unicode text but lone surrogates, which no UTF-8 request can carry.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
# Texts rich in the characters that break naive templating.
NASTY = st.text(
    st.sampled_from(list("\"\\'\n\r\t\x00&=%+?#/<>{}[]$ é€😀"))
    | st.characters(exclude_categories=["Cs"]),
    max_size=40,
)
VALUES = TEXT | NASTY
ENV = RenderEnvironment(secrets={"key": 'k"e&y'}, callback_url="https://relay.example/dlr/t")


def compiled(request: dict[str, Any]) -> CompiledConnector:
    """Compile a connector from its request section."""
    document = {"name": "p", "request": request, "secrets": {"key": 'k"e&y'}}
    return compile_connector(parse_definition(document))


def render(connector: CompiledConnector, body: str, sender: str, extra: str) -> HttpRequest:
    """Render one message carrying the three values."""
    message = OutboundMessage(
        message_id="m-1", to="+4915112345678", body=body, sender=sender, params={"x": extra}
    )
    return render_request(connector, [message], ENV)


JSON_CONNECTOR = compiled(
    {
        "url": "https://sms.example.com/send",
        "body": {
            "json": {
                "to": "{{to}}",
                "text": "{{body}}",
                "from": "{{sender}}",
                "meta": {"x": "{{params.x}}", "both": "<{{sender}}|{{params.x}}>"},
            }
        },
    }
)
FORM_CONNECTOR = compiled(
    {
        "url": "https://sms.example.com/send",
        "body": {"form": {"to": "{{to}}", "text": "{{body}}", "from": "{{sender}}", "x": "$$x"}},
    }
)
QUERY_CONNECTOR = compiled(
    {
        "method": "GET",
        "url": "https://sms.example.com/send?fixed=1",
        "query": {"to": "{{to}}", "text": "{{body}}", "from": "{{sender}}", "x": "$$x"},
    }
)
PATH_CONNECTOR = compiled(
    {
        "url": "https://sms.example.com/{{sender}}/{{params.x}}/send",
        "query": {"to": "{{to}}", "text": "{{body}}"},
    }
)
XML_CONNECTOR = compiled(
    {
        "url": "https://sms.example.com/send",
        "body": {
            "raw": "<sms><to>{{to}}</to><text>{{body}}</text><from a='{{params.x}}'>{{sender}}</from></sms>",
            "escape": "xml",
            "content_type": "application/xml",
        },
    }
)
RAW_JSON_CONNECTOR = compiled(
    {
        "url": "https://sms.example.com/send",
        "body": {"raw": '{"to":"{{to}}","text":"{{body}}","x":"{{params.x}}"}', "escape": "json"},
    }
)
RAW_FORM_CONNECTOR = compiled(
    {
        "url": "https://sms.example.com/send",
        "body": {
            "raw": "to={{to}}&text={{body}}&x={{params.x}}",
            "escape": "url",
            "content_type": "application/x-www-form-urlencoded",
        },
    }
)
HEADER_CONNECTOR = compiled(
    {
        "url": "https://sms.example.com/send",
        "headers": {"X-Sender": "{{sender}}"},
        "query": {"to": "{{to}}", "text": "{{body}}"},
    }
)


@given(body=VALUES, sender=VALUES, extra=VALUES)
@example(body='"}, "admin": true, "x": {"', sender="\\", extra="{{secret.key}}")
def test_json_body_decodes_to_the_values(body: str, sender: str, extra: str) -> None:
    document = json.loads(render(JSON_CONNECTOR, body, sender, extra).body.decode("utf-8"))
    assert document == {
        "to": "+4915112345678",
        "text": body,
        "from": sender,
        "meta": {"x": extra, "both": f"<{sender}|{extra}>"},
    }


@given(body=VALUES, sender=VALUES, extra=VALUES)
@example(body="a&to=+1999", sender="=", extra="%41+")
def test_form_body_decodes_to_the_values(body: str, sender: str, extra: str) -> None:
    request = render(FORM_CONNECTOR, body, sender, extra)
    fields = parse_qsl(request.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    assert fields == [("to", "+4915112345678"), ("text", body), ("from", sender), ("x", extra)]


@given(body=VALUES, sender=VALUES, extra=VALUES)
@example(body="#frag", sender="a&to=x", extra="?q=1")
def test_query_decodes_to_the_values(body: str, sender: str, extra: str) -> None:
    url = urlsplit(render(QUERY_CONNECTOR, body, sender, extra).url)
    assert (url.scheme, url.netloc, url.path, url.fragment) == (
        "https",
        "sms.example.com",
        "/send",
        "",
    )
    assert parse_qsl(url.query, keep_blank_values=True, strict_parsing=True) == [
        ("fixed", "1"),
        ("to", "+4915112345678"),
        ("text", body),
        ("from", sender),
        ("x", extra),
    ]


@given(sender=VALUES, extra=VALUES)
@example(sender="..", extra="a/b?c#d")
def test_url_path_substitutions_stay_one_segment(sender: str, extra: str) -> None:
    url = urlsplit(render(PATH_CONNECTOR, "b", sender, extra).url)
    assert url.netloc == "sms.example.com"
    assert url.fragment == ""
    segments = url.path.split("/")
    assert len(segments) == 4
    assert [unquote(s, errors="strict") for s in segments] == ["", sender, extra, "send"]


# XML 1.0 cannot carry most control characters (not even escaped) nor U+FFFE/U+FFFF.
XML_TEXT = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="\ufffe\uffff")
    | st.sampled_from(list("\t\n\r&<>\"'")),
    max_size=60,
)


@given(body=XML_TEXT, sender=XML_TEXT, extra=XML_TEXT)
@example(body="</text><admin/>", sender="a\r\nb", extra="' onload='x")
def test_raw_xml_body_parses_to_the_values(body: str, sender: str, extra: str) -> None:
    root = ElementTree.fromstring(render(XML_CONNECTOR, body, sender, extra).body)
    assert [child.tag for child in root] == ["to", "text", "from"]
    assert (root.findtext("text") or "") == body
    sent_from = root.find("from")
    assert sent_from is not None
    assert (sent_from.text or "", sent_from.get("a")) == (sender, extra)


@given(body=VALUES, extra=VALUES)
def test_raw_json_escaping_keeps_the_document_valid(body: str, extra: str) -> None:
    document = json.loads(render(RAW_JSON_CONNECTOR, body, "s", extra).body.decode("utf-8"))
    assert document == {"to": "+4915112345678", "text": body, "x": extra}


@given(body=VALUES, extra=VALUES)
def test_raw_url_escaping_keeps_form_fields_apart(body: str, extra: str) -> None:
    fields = parse_qsl(
        render(RAW_FORM_CONNECTOR, body, "s", extra).body.decode("ascii"),
        keep_blank_values=True,
        strict_parsing=True,
    )
    assert fields == [("to", "+4915112345678"), ("text", body), ("x", extra)]


@given(sender=VALUES)
def test_header_values_are_verbatim_or_refused(sender: str) -> None:
    try:
        request = render(HEADER_CONNECTOR, "b", sender, "")
    except RenderError as refused:
        assert refused.reason == "invalid_header_value"
        assert any(c in sender for c in "\r\n\x00")
    else:
        assert request.header("X-Sender") == sender


# ---------------------------------------------------------------- segment counts


GSM_HEAVY = st.text(st.sampled_from(list(GSM7_BASIC_ALPHABET + GSM7_EXTENSION * 4)), max_size=500)
UCS2_HEAVY = st.text(
    st.sampled_from(list("жé😀🇩🇪a€")) | st.characters(exclude_categories=["Cs"]), max_size=300
)


def oracle_parts(units: list[bytes], single: int, per_part: int) -> int:
    """Pack encoded characters into parts; a character's units never straddle two parts."""
    if sum(len(u) for u in units) <= single:
        return 1
    parts, used = 1, 0
    for unit in units:
        if used + len(unit) > per_part:
            parts, used = parts + 1, 0
        used += len(unit)
    return parts


@settings(max_examples=200)
@given(body=GSM_HEAVY | UCS2_HEAVY | TEXT)
@example(body="a" * 152 + "€" + "a" * 152)
@example(body="ж" * 66 + "😀" + "ж" * 66)
@example(body="")
def test_segments_agree_with_the_gsm0338_codec(body: str) -> None:
    """The gsm0338 codec decides GSM-7 and the septets; UTF-16 gives the UCS-2 units.

    The oracle packs each character's encoded form (one or two septets from the codec, one
    or two UTF-16 units) into 153/67-unit parts without splitting it, which is the rule
    handsets need (an ESC or high surrogate alone at the end of a part corrupts the next).
    U+001B is left to UCS-2: the codec passes it through as the ESC byte, which a message
    cannot carry as a character.
    """
    result = analyse_text(body)
    try:
        if "\x1b" in body:
            raise UnicodeEncodeError("gsm03.38", body, 0, 1, "ESC is not a character")
        septets = [char.encode("gsm03.38") for char in body]
    except UnicodeEncodeError:
        units = [char.encode("utf-16-be") for char in body]
        assert result.encoding == "ucs2"
        assert result.unicode is True
        assert result.units == sum(len(u) for u in units) // 2
        halves = [b"\0" * (len(u) // 2) for u in units]  # one byte per UTF-16 unit
        assert result.segments == oracle_parts(halves, 70, 67)
    else:
        assert result.encoding == "gsm7"
        assert result.unicode is False
        assert result.units == sum(len(s) for s in septets) == len(body.encode("gsm03.38"))
        assert result.segments == oracle_parts(septets, 160, 153)
