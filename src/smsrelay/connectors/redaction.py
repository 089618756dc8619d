"""Redaction: take secrets out of requests and texts before they are shown or stored.

A secret can reach a request in many spellings: as written, percent-encoded (URL, query,
form), JSON- or XML-escaped, or inside a Basic credential's base64. Every spelling of every
non-empty secret is replaced with `***`, longest first so a secret that contains another is
replaced whole. Credentials in an `Authorization` or `Proxy-Authorization` header are masked
whatever they are (the scheme word, such as `Basic` or `Bearer`, stays readable).

Redaction is textual: a very short secret (`1`, `ab`) also masks every unrelated occurrence
of those characters. That over-redacts a trace; it never leaks the secret.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from urllib.parse import quote, quote_plus

from smsrelay.connectors.exchange import HttpRequest

MASK = "***"
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})


def redact_request(
    request: HttpRequest, secrets: Mapping[str, str], *, extra: Sequence[str] = ()
) -> HttpRequest:
    """A copy of `request` with every secret value (and each of `extra`) replaced by `***`.

    Use `extra` for values that are secret but not connector secrets, such as an OAuth2
    access token.
    """
    values = [v for v in (*secrets.values(), *extra) if v]
    spellings = _spellings(values)
    if not spellings:
        return request
    headers = tuple(
        (
            name,
            _mask_credentials(value)
            if name.lower() in _CREDENTIAL_HEADERS
            else _mask_base64_words(value, values),
        )
        for name, value in request.headers
    )
    return replace(
        request,
        url=_replace_all(request.url, spellings),
        headers=tuple((name, _replace_all(value, spellings)) for name, value in headers),
        body=_replace_all_bytes(request.body, spellings),
    )


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """`text` with every spelling of each non-empty secret replaced by `***`.

    Base64 runs that decode to text holding a secret (a Basic credential echoed back in a
    provider's error or header) are masked whole.
    """
    values = tuple(secret for secret in secrets if secret)
    if not values:
        return text
    return redactor(values).text(text)


def redact_body(body: bytes, secrets: Iterable[str]) -> bytes:
    """A request body with every spelling of each non-empty secret replaced by `***`
    (the body part of `redact_request`)."""
    values = tuple(secret for secret in secrets if secret)
    if not values:
        return body
    return redactor(values).body(body)


# Redacting is a pure function of the text and the secrets; the dispatcher redacts the same
# short texts (`application/json`, `keep-alive`) for every request it sends.
_CACHED_TEXT_CHARS = 128
_CACHED_TEXTS = 1024


class Redactor:
    """Redaction for one set of secrets (a connector's), with what it needs worked out once:
    the spellings (as text and as UTF-8) and the short texts already redacted."""

    __slots__ = ("_encoded", "_memo", "secrets", "spellings")

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.secrets = tuple(secret for secret in secrets if secret)
        self.spellings = _spellings_of(self.secrets)
        self._encoded = tuple(
            (spelling.encode("utf-8", "surrogatepass"), MASK.encode())
            for spelling in self.spellings
        )
        self._memo: dict[str, str] = {}

    def text(self, text: str) -> str:
        """`redact_text(text, secrets)`."""
        if not self.spellings:
            return text
        memo = self._memo
        found = memo.get(text)
        if found is not None:
            return found
        shown = text
        if _BASE64_RUN.search(shown) is not None:
            shown = _mask_base64_runs(shown, self.secrets)
        shown = _replace_all(shown, self.spellings)
        if len(text) <= _CACHED_TEXT_CHARS:
            if len(memo) >= _CACHED_TEXTS:
                memo.clear()
            memo[text] = shown
        return shown

    def body(self, body: bytes) -> bytes:
        """A request body with every spelling replaced (as `redact_request` does)."""
        if not body:
            return body
        for spelling, mask in self._encoded:
            if spelling in body:
                body = body.replace(spelling, mask)
        return body


@functools.lru_cache(maxsize=64)
def redactor(secrets: tuple[str, ...]) -> Redactor:
    """The `Redactor` for these secrets (one per connector and token, kept)."""
    return Redactor(secrets)


def _spellings(secrets: Iterable[str]) -> tuple[str, ...]:
    return _spellings_of(tuple(secrets))


@functools.lru_cache(maxsize=256)
def _spellings_of(secrets: tuple[str, ...]) -> tuple[str, ...]:
    # Computed once per set of secrets (a connector's), not once per request and text.
    found: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        found.add(secret)
        found.add(quote(secret, safe=""))
        found.add(quote(secret))  # `/` kept, as in a URL path
        found.add(quote_plus(secret, safe=""))
        found.add(json.dumps(secret, ensure_ascii=False)[1:-1])
        found.add(json.dumps(secret)[1:-1])
        found.add(_xml_escaped(secret))
    found.discard("")
    return tuple(sorted(found, key=len, reverse=True))


def _xml_escaped(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
        .replace("\r", "&#13;")
        .replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )


def _replace_all(text: str, spellings: tuple[str, ...]) -> str:
    for spelling in spellings:
        if spelling in text:
            text = text.replace(spelling, MASK)
    return text


def _replace_all_bytes(body: bytes, spellings: tuple[str, ...]) -> bytes:
    if not body:
        return body
    mask = MASK.encode()
    for spelling in spellings:
        encoded = spelling.encode("utf-8", "surrogatepass")
        if encoded in body:
            body = body.replace(encoded, mask)
    return body


def _mask_base64_words(value: str, secrets: Sequence[str]) -> str:
    # `user:password` in base64 outside Authorization (X-Auth: Basic ...) hides the secret
    # from plain matching; decode each word that could be base64 and look inside.
    words = value.split(" ")
    changed = False
    for i, word in enumerate(words):
        if len(word) < 4 or len(word) % 4:
            continue
        try:
            decoded = base64.b64decode(word, validate=True).decode("utf-8")
        except ValueError:  # not base64, not ASCII, or not UTF-8 inside
            continue
        if any(secret in decoded for secret in secrets):
            words[i] = MASK
            changed = True
    return " ".join(words) if changed else value


_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")


def _mask_base64_runs(text: str, secrets: Sequence[str]) -> str:
    def mask(match: re.Match[str]) -> str:
        run = match.group(0)
        padded = run.rstrip("=") + "=" * (-len(run.rstrip("=")) % 4)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                decoded = decode(padded).decode("utf-8")
            except ValueError:  # not base64, or not UTF-8 inside
                continue
            if any(secret in decoded for secret in secrets):
                return MASK
        return run

    return _BASE64_RUN.sub(mask, text)


def _mask_credentials(value: str) -> str:
    # `Basic <base64>`, `Bearer <token>`, `App <key>`: keep the scheme, mask the rest.
    # A single word (Clickatell's bare key) is all credential.
    scheme, sep, credentials = value.strip().partition(" ")
    if not sep or not credentials.strip():
        return MASK
    return f"{scheme} {MASK}"
