"""Verifying that a delivery-report callback comes from the provider (`delivery.verify`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import urlencode

import pytest

from smsrelay.connectors.callback_verification import verify_callback
from smsrelay.connectors.definition import Delivery, parse_definition
from smsrelay.connectors.exchange import InboundCallback

SECRETS = {"dlr_user": "acme", "dlr_password": "s3cr3t:pass", "token": "tok-123", "signing": "k3y"}
BODY = b'{"id":"m-1","status":"delivered"}'


def verify_setting(verify: dict[str, Any]) -> Any:
    """The `delivery.verify` section as validated inside a minimal connector."""
    definition = parse_definition(
        {
            "name": "provider",
            "request": {
                "url": "https://sms.example.com/send",
                "body": {"json": {"to": "{{to}}", "text": "{{body}}"}},
            },
            "delivery": {"message_id": "id", "status": "status", "verify": verify},
            "secrets": SECRETS,
        }
    )
    delivery = definition.delivery
    assert isinstance(delivery, Delivery)
    return delivery.verify


def callback(
    headers: dict[str, str],
    body: bytes = BODY,
    *,
    url: str = "https://relay.example.com/dlr/k3y",
    method: str = "POST",
    content_type: str = "application/json",
) -> InboundCallback:
    return InboundCallback(method, url, (), headers, body, content_type)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------- none, basic, header


def test_no_verification_accepts_everything() -> None:
    result = verify_callback(verify_setting({"type": "none"}), callback({}), SECRETS)
    assert result.ok


BASIC = {"type": "basic", "username": "{{secret.dlr_user}}", "password": "{{secret.dlr_password}}"}


def test_basic_credentials_that_match_are_accepted() -> None:
    result = verify_callback(
        verify_setting(BASIC), callback({"Authorization": basic("acme", "s3cr3t:pass")}), SECRETS
    )
    assert result.ok, result.reason


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "no Authorization header"),
        (basic("acme", "wrong"), "do not match"),
        (basic("other", "s3cr3t:pass"), "do not match"),
        ("Bearer s3cr3t:pass", "expected Basic"),
        ("Basic ***not-base64***", "not valid base64"),
        ("Basic " + base64.b64encode(b"acme").decode(), "do not match"),
    ],
)
def test_basic_credentials_that_do_not_match_are_refused(
    authorization: str | None, reason: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    result = verify_callback(verify_setting(BASIC), callback(headers), SECRETS)
    assert not result.ok
    assert reason in result.reason
    assert "s3cr3t" not in result.reason


HEADER = {"type": "header", "name": "X-Dlr-Token", "value": "{{secret.token}}"}


def test_static_header_matches_case_insensitively_by_name() -> None:
    result = verify_callback(verify_setting(HEADER), callback({"x-dlr-token": "tok-123"}), SECRETS)
    assert result.ok


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "no X-Dlr-Token header"),
        ({"X-Dlr-Token": "tok-124"}, "does not match"),
        ({"X-Dlr-Token": "tøk"}, "does not match"),
    ],
)
def test_static_header_missing_or_wrong_is_refused(headers: dict[str, str], reason: str) -> None:
    result = verify_callback(verify_setting(HEADER), callback(headers), SECRETS)
    assert not result.ok
    assert reason in result.reason
    assert "tok-123" not in result.reason


def test_undefined_secret_refuses_without_crashing() -> None:
    setting = verify_setting(HEADER)
    result = verify_callback(setting, callback({"X-Dlr-Token": "tok-123"}), {})
    assert not result.ok
    assert "misconfigured" in result.reason


# ---------------------------------------------------------------- hmac over the body


def signature(algorithm: str, encoding: str, message: bytes, key: bytes = b"k3y") -> str:
    digest = hmac.new(key, message, getattr(hashlib, algorithm)).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_hmac_over_the_raw_body(algorithm: str, encoding: str) -> None:
    setting = verify_setting(
        {
            "type": "hmac",
            "header": "X-Signature",
            "algorithm": algorithm,
            "secret": "{{secret.signing}}",
            "encoding": encoding,
        }
    )
    good = signature(algorithm, encoding, BODY)
    assert verify_callback(setting, callback({"X-Signature": good}), SECRETS).ok
    tampered = callback({"X-Signature": good}, body=BODY.replace(b"delivered", b"failed"))
    refused = verify_callback(setting, tampered, SECRETS)
    assert not refused.ok
    assert "does not match" in refused.reason
    assert good not in refused.reason


def test_termii_style_sha512_hex_signature() -> None:
    setting = verify_setting(
        {
            "type": "hmac",
            "header": "X-Termii-Signature",
            "algorithm": "sha512",
            "secret": "{{secret.signing}}",
        }
    )
    # HMAC-SHA512 of BODY keyed "k3y", from `openssl dgst -sha512 -hmac k3y`.
    expected = (
        "12aeb6fe7667b945df5d14aa08e3c860984e65fc6a476a31295d362860a29392"
        "2ab53fe78bd044560aaecde500aeb54e9e79ca7550739d220103fb0a03ccba2a"
    )
    assert verify_callback(setting, callback({"X-Termii-Signature": expected.upper()}), SECRETS).ok


def test_hmac_prefix_is_required_and_stripped() -> None:
    setting = verify_setting(
        {
            "type": "hmac",
            "header": "X-Hub-Signature-256",
            "secret": "{{secret.signing}}",
            "prefix": "sha256=",
        }
    )
    good = signature("sha256", "hex", BODY)
    assert verify_callback(setting, callback({"X-Hub-Signature-256": "sha256=" + good}), SECRETS).ok
    bare = verify_callback(setting, callback({"X-Hub-Signature-256": good}), SECRETS)
    assert not bare.ok
    assert "does not start with 'sha256='" in bare.reason


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "no X-Signature header"),
        ({"X-Signature": "zz-not-hex"}, "not a hex signature"),
        ({"X-Signature": ""}, "does not match"),
        ({"X-Signature": "00" * 32}, "does not match"),
    ],
)
def test_missing_or_malformed_hmac_is_refused(headers: dict[str, str], reason: str) -> None:
    setting = verify_setting(
        {"type": "hmac", "header": "X-Signature", "secret": "{{secret.signing}}"}
    )
    result = verify_callback(setting, callback(headers), SECRETS)
    assert not result.ok
    assert reason in result.reason
    assert "k3y" not in result.reason


# ---------------------------------------------------------------- Twilio: url + params

TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
# The vector published with Twilio's request validator (auth token "12345").
TWILIO_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def twilio_setting() -> Any:
    return verify_setting(
        {
            "type": "hmac",
            "header": "X-Twilio-Signature",
            "algorithm": "sha1",
            "secret": "{{secret.signing}}",
            "over": "url+params",
            "encoding": "base64",
        }
    )


def twilio_callback(
    params: dict[str, str], signature_value: str, url: str = TWILIO_URL
) -> InboundCallback:
    # Field order on the wire differs from the sorted order that is signed.
    body = urlencode(list(reversed(params.items()))).encode()
    return callback(
        {"X-Twilio-Signature": signature_value},
        body,
        url=url,
        content_type="application/x-www-form-urlencoded",
    )


def test_twilio_published_signature_vector_verifies() -> None:
    result = verify_callback(
        twilio_setting(), twilio_callback(TWILIO_PARAMS, TWILIO_SIGNATURE), {"signing": "12345"}
    )
    assert result.ok, result.reason


def test_twilio_signature_computed_independently_verifies() -> None:
    params = {
        "MessageSid": "SM1",
        "MessageStatus": "delivered",
        "To": "+15558675310",
        "ErrorCode": "",
    }
    url = "https://relay.example.com/dlr/k3y"
    signed = (
        url
        + "ErrorCode"
        + "MessageSid"
        + "SM1"
        + "MessageStatus"
        + "delivered"
        + "To"
        + "+15558675310"
    )
    expected = base64.b64encode(hmac.new(b"k3y", signed.encode(), hashlib.sha1).digest()).decode()
    assert verify_callback(twilio_setting(), twilio_callback(params, expected, url), SECRETS).ok


@pytest.mark.parametrize(
    ("params", "url"),
    [
        ({**TWILIO_PARAMS, "Digits": "9999"}, TWILIO_URL),
        (TWILIO_PARAMS, "https://mycompany.com/myapp.php?foo=1&bar=3"),
        ({k: v for k, v in TWILIO_PARAMS.items() if k != "Caller"}, TWILIO_URL),
    ],
)
def test_twilio_signature_over_changed_content_is_refused(params: dict[str, str], url: str) -> None:
    result = verify_callback(
        twilio_setting(), twilio_callback(params, TWILIO_SIGNATURE, url), {"signing": "12345"}
    )
    assert not result.ok


def test_twilio_signature_with_the_wrong_token_is_refused() -> None:
    result = verify_callback(
        twilio_setting(), twilio_callback(TWILIO_PARAMS, TWILIO_SIGNATURE), {"signing": "54321"}
    )
    assert not result.ok
    assert "54321" not in result.reason
