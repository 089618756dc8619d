"""The HTTP/1.1 client's wire format: request heads and the response parser (pure)."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from smsrelay.dispatch.http11 import (
    MAX_HEAD_BYTES,
    HttpProtocolError,
    ResponseParser,
    ServerDisconnected,
    request_bytes,
    request_head,
)

# ---------------------------------------------------------------- requests


def test_head_has_the_target_host_and_default_headers_in_order() -> None:
    head = request_head(
        "POST",
        URL("http://127.0.0.1:8600/send/sms?x=a%20b", encoded=True),
        (("Content-Type", "application/json"), ("Authorization", "Bearer k")),
    )
    assert head.decode().split("\r\n") == [
        "POST /send/sms?x=a%20b HTTP/1.1",
        "Host: 127.0.0.1:8600",
        "Accept: */*",
        "Accept-Encoding: gzip, deflate",
        "Content-Type: application/json",
        "Authorization: Bearer k",
        "",
    ]


def test_head_leaves_the_default_port_out_and_brackets_ipv6() -> None:
    assert b"Host: api.example.com\r\n" in request_head("GET", URL("https://api.example.com"), ())
    assert request_head("GET", URL("https://api.example.com"), ()).startswith(b"GET / HTTP/1.1")
    assert b"Host: [::1]:8080\r\n" in request_head("GET", URL("http://[::1]:8080/x"), ())


def test_headers_given_replace_the_defaults_and_lengths_are_ours() -> None:
    head = request_head(
        "POST",
        URL("http://127.0.0.1:1/"),
        (
            ("host", "provider.example"),
            ("Accept", "application/json"),
            ("Content-Length", "999"),
            ("Transfer-Encoding", "chunked"),
        ),
    )
    lines = head.decode().split("\r\n")
    assert "host: provider.example" in lines
    assert "Accept: application/json" in lines
    assert not any(line.lower().startswith(("host: 127", "accept: */*")) for line in lines)
    assert "Content-Length" not in head.decode() and "Transfer-Encoding" not in head.decode()
    assert request_bytes("POST", head, b"abc").endswith(b"Content-Length: 3\r\n\r\nabc")


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-A", "one\r\nX-Injected: yes"), ("X-A", "nul\0"), ("X A", "v"), ("X:A", "v"), ("", "v")],
)
def test_a_header_that_would_break_the_head_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="cannot be sent"):
        request_head("GET", URL("http://127.0.0.1:1/"), ((name, value),))


def test_bodies_and_their_lengths() -> None:
    head = request_head("POST", URL("http://127.0.0.1:1/"), ())
    assert request_bytes("POST", head, None).endswith(b"\r\nContent-Length: 0\r\n\r\n")
    assert request_bytes("POST", head, b"").endswith(b"\r\nContent-Length: 0\r\n\r\n")
    get = request_head("GET", URL("http://127.0.0.1:1/"), ())
    assert request_bytes("GET", get, None) == get + b"\r\n"


# ---------------------------------------------------------------- answers


def parse(data: bytes, *, head_request: bool = False, cap: int = 1 << 20) -> ResponseParser:
    parser = ResponseParser(head_request=head_request, cap=cap)
    assert parser.feed(data), "the answer should be complete"
    return parser


def test_an_answer_with_a_length() -> None:
    parser = parse(b'HTTP/1.1 201 Created\r\nContent-Length: 11\r\nX-Id: 7\r\n\r\n{"id": "7"}')
    assert (parser.status, parser.body, parser.keep_alive) == (201, b'{"id": "7"}', True)
    assert parser.headers == {"Content-Length": "11", "X-Id": "7"}


def test_an_answer_is_not_complete_before_its_body() -> None:
    parser = ResponseParser()
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
    assert parser.feed(b"cd")
    assert parser.body == b"abcd"


def test_repeated_headers_are_joined_and_folded_lines_continue() -> None:
    parser = parse(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Long: one\r\n two\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert parser.headers["Set-Cookie"] == "a=1, b=2"
    assert parser.headers["X-Long"] == "one two"


def test_chunked_answers_with_extensions_and_trailers() -> None:
    parser = parse(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    assert parser.body == b"hello world" and parser.keep_alive


def test_a_body_read_to_the_end_of_the_connection() -> None:
    parser = ResponseParser()
    assert not parser.feed(b"HTTP/1.0 200 OK\r\n\r\npart one, ")
    assert not parser.feed(b"part two")
    assert parser.eof()
    assert parser.body == b"part one, part two" and not parser.keep_alive


def test_interim_answers_are_skipped() -> None:
    parser = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert (parser.status, parser.body) == (200, b"ok")


@pytest.mark.parametrize("status", [204, 304])
def test_answers_without_a_body(status: int) -> None:
    parser = parse(f"HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n".encode())
    assert parser.body == b"" and parser.keep_alive


def test_a_head_request_reads_no_body() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", head_request=True)
    assert parser.body == b"" and parser.keep_alive


@pytest.mark.parametrize(
    ("connection", "version", "kept"),
    [
        ("", "1.1", True),
        ("Connection: close\r\n", "1.1", False),
        ("Connection: Close\r\n", "1.1", False),
        ("", "1.0", False),
        ("Connection: keep-alive\r\n", "1.0", True),
    ],
)
def test_which_connections_may_be_reused(connection: str, version: str, kept: bool) -> None:
    answer = f"HTTP/{version} 200 OK\r\n{connection}Content-Length: 2\r\n\r\nok".encode()
    assert parse(answer).keep_alive is kept


def test_bytes_after_a_complete_answer_spoil_the_connection() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    assert parser.body == b"ok" and not parser.keep_alive


def test_a_long_body_is_cut_at_the_cap_and_ends_the_connection() -> None:
    parser = ResponseParser(cap=10)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 30)
    assert parser.body == b"x" * 10 and parser.truncated and not parser.keep_alive
    chunked = ResponseParser(cap=4)
    assert chunked.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\nde")
    assert chunked.body == b"abcd" and chunked.truncated and not chunked.keep_alive


def test_a_body_of_exactly_the_cap_is_whole() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd", cap=4)
    assert parser.body == b"abcd" and not parser.truncated and parser.keep_alive


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, no zlib wrapper
    ],
)
def test_compressed_bodies_are_decoded(coding: str, encode: object) -> None:
    assert callable(encode)
    packed: bytes = encode(b'{"status": "queued"}' * 10)
    answer = (
        f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {len(packed)}\r\n\r\n"
    ).encode() + packed
    assert parse(answer).body == b'{"status": "queued"}' * 10


def test_a_compressed_body_is_cut_at_the_cap_once_decoded() -> None:
    packed = gzip.compress(b"0" * 100_000)
    answer = (
        f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(packed)}\r\n\r\n"
    ).encode() + packed
    parser = parse(answer, cap=1000)
    assert parser.body == b"0" * 1000 and parser.truncated and not parser.keep_alive


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n continuation first\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
    ],
)
def test_malformed_answers_are_refused(answer: bytes) -> None:
    with pytest.raises(HttpProtocolError):
        ResponseParser().feed(answer)


def test_an_endless_head_is_refused() -> None:
    parser = ResponseParser()
    assert not parser.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(HttpProtocolError, match="longer than"):
        parser.feed(b"X-Filler: " + b"a" * MAX_HEAD_BYTES)


def test_a_closed_connection_before_the_answer_ends() -> None:
    with pytest.raises(ServerDisconnected, match="without answering"):
        ResponseParser().eof()
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ServerDisconnected, match="middle"):
        parser.eof()


# Any answer, cut into any pieces, parses as it does whole.
_ANSWERS = st.one_of(
    st.binary(max_size=300).map(
        lambda body: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    ),
    st.lists(st.binary(min_size=1, max_size=40), max_size=6).map(
        lambda chunks: (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
            + b"0\r\n\r\n"
        )
    ),
    st.binary(max_size=300).map(
        lambda body: (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    ),
)


@given(answer=_ANSWERS, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_an_answer_in_pieces_parses_as_it_does_whole(answer: bytes, cuts: list[int]) -> None:
    whole = parse(answer)
    points = sorted({min(cut, len(answer)) for cut in cuts})
    pieces = [answer[a:b] for a, b in zip([0, *points], [*points, len(answer)], strict=True)]
    parser = ResponseParser()
    completed = [parser.feed(piece) for piece in pieces]
    # Complete with its last byte, not before.
    last = max(i for i, piece in enumerate(pieces) if piece)
    assert completed.index(True) == last and all(completed[last:])
    assert (parser.status, parser.headers, parser.body, parser.keep_alive) == (
        whole.status,
        whole.headers,
        whole.body,
        whole.keep_alive,
    )
