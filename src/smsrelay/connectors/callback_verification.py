"""Is a delivery-report callback really from the provider? (`delivery.verify`, SPEC §8)

Four checks: none, HTTP Basic credentials, a static header, or an HMAC signature in a
header computed over the raw body or, Twilio's way, over the full URL followed by the POST
form parameters sorted by name, each name immediately followed by its value. Every
comparison is constant-time; reasons name headers and schemes, never a secret or the
expected signature.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from smsrelay.connectors.definition import (
    Verify,
    VerifyBasic,
    VerifyHeader,
    VerifyHmac,
    VerifyNone,
)
from smsrelay.connectors.errors import RenderError
from smsrelay.connectors.exchange import InboundCallback
from smsrelay.connectors.oauth import fill_secret_template

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """Whether a callback passed verification, and why (safe to log and show)."""

    ok: bool
    reason: str


def verify_callback(
    verify: Verify, callback: InboundCallback, secrets: Mapping[str, str]
) -> VerificationResult:
    """Check a callback against the connector's `delivery.verify` setting."""
    try:
        if isinstance(verify, VerifyNone):
            return VerificationResult(True, "no verification configured")
        if isinstance(verify, VerifyBasic):
            return _verify_basic(verify, callback, secrets)
        if isinstance(verify, VerifyHeader):
            return _verify_header(verify, callback, secrets)
        if isinstance(verify, VerifyHmac):
            return _verify_hmac(verify, callback, secrets)
    except RenderError as exc:
        # The configuration, not the caller, is at fault; refuse rather than let it through.
        return VerificationResult(False, f"verification is misconfigured: {exc}")
    return VerificationResult(False, f"unknown verification type {verify.type!r}")


def _same(given: str | bytes, expected: str | bytes) -> bool:
    given_bytes = given.encode("utf-8") if isinstance(given, str) else given
    expected_bytes = expected.encode("utf-8") if isinstance(expected, str) else expected
    return hmac.compare_digest(given_bytes, expected_bytes)


def _verify_basic(
    verify: VerifyBasic, callback: InboundCallback, secrets: Mapping[str, str]
) -> VerificationResult:
    username = fill_secret_template(verify.username, secrets, where="delivery.verify.username")
    password = fill_secret_template(verify.password, secrets, where="delivery.verify.password")
    header = callback.header("Authorization")
    if header is None:
        return VerificationResult(False, "no Authorization header (Basic credentials expected)")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return VerificationResult(False, f"Authorization scheme is {scheme[:20]!r}, expected Basic")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return VerificationResult(False, "Authorization Basic credentials are not valid base64")
    given_user, colon, given_password = decoded.partition(b":")
    user_ok = _same(given_user, username)
    password_ok = _same(given_password, password)
    if not colon or not (user_ok and password_ok):
        return VerificationResult(False, "Basic credentials do not match")
    return VerificationResult(True, "Basic credentials match")


def _verify_header(
    verify: VerifyHeader, callback: InboundCallback, secrets: Mapping[str, str]
) -> VerificationResult:
    expected = fill_secret_template(verify.value, secrets, where="delivery.verify.value")
    given = callback.header(verify.name)
    if given is None:
        return VerificationResult(False, f"no {verify.name} header")
    if not _same(given.strip(), expected):
        return VerificationResult(
            False, f"header {verify.name} does not match the configured value"
        )
    return VerificationResult(True, f"header {verify.name} matches")


def _verify_hmac(
    verify: VerifyHmac, callback: InboundCallback, secrets: Mapping[str, str]
) -> VerificationResult:
    secret = fill_secret_template(verify.secret, secrets, where="delivery.verify.secret")
    what = f"HMAC-{verify.algorithm.upper()} ({verify.encoding}) over {verify.over}"
    header = callback.header(verify.header)
    if header is None:
        return VerificationResult(False, f"no {verify.header} header ({what} signature expected)")
    given_text = header.strip()
    if verify.prefix:
        if given_text[: len(verify.prefix)].lower() != verify.prefix.lower():
            return VerificationResult(
                False, f"{verify.header} does not start with {verify.prefix!r}"
            )
        given_text = given_text[len(verify.prefix) :].strip()
    given = _signature_bytes(given_text, verify.encoding)
    if given is None:
        return VerificationResult(False, f"{verify.header} is not a {verify.encoding} signature")
    expected = hmac.new(
        secret.encode("utf-8"), signed_content(verify, callback), verify.algorithm
    ).digest()
    if not hmac.compare_digest(given, expected):
        return VerificationResult(False, f"{verify.header} does not match the {what} signature")
    return VerificationResult(True, f"{what} signature matches")


def signed_content(verify: VerifyHmac, callback: InboundCallback) -> bytes:
    """The bytes a provider signs: the raw body, or URL + sorted form params (Twilio)."""
    if verify.over == "body":
        return callback.body
    content = callback.url
    content_type = (callback.content_type or callback.header("Content-Type") or "").lower()
    if callback.method.upper() != "GET" and content_type.startswith(FORM_CONTENT_TYPE):
        params = parse_qsl(
            callback.body.decode("utf-8", "replace"), keep_blank_values=True, errors="replace"
        )
        # Sorted by name, then value, each distinct pair once: what Twilio's own
        # validators compute (a repeated name contributes each different value once).
        content += "".join(key + value for key, value in sorted(set(params)))
    return content.encode("utf-8")


def _signature_bytes(text: str, encoding: str) -> bytes | None:
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
