"""OAuth2 client credentials: the token request on the wire and reading the answer."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qsl

import pytest

from smsrelay.connectors.definition import AuthOAuth2
from smsrelay.connectors.errors import RenderError
from smsrelay.connectors.exchange import HttpResponse
from smsrelay.connectors.oauth import OAuthToken, TokenError, parse_token_response, token_request

SECRETS = {"key_id": "d4e5-key", "key_secret": "p@ss/with+odd=chars", "project": "proj-1"}


def oauth(**fields: Any) -> AuthOAuth2:
    return AuthOAuth2.model_validate(
        {
            "type": "oauth2",
            "token_url": "https://auth.sinch.com/oauth2/token",
            "client_id": "{{secret.key_id}}",
            "client_secret": "{{secret.key_secret}}",
            **fields,
        }
    )


def form(body: bytes) -> list[tuple[str, str]]:
    return parse_qsl(body.decode(), keep_blank_values=True)


def test_token_request_is_a_form_post_with_basic_client_credentials() -> None:
    request = token_request(oauth(), SECRETS)
    assert (request.method, request.url) == ("POST", "https://auth.sinch.com/oauth2/token")
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    assert form(request.body) == [("grant_type", "client_credentials")]
    authorization = request.header("Authorization")
    assert authorization is not None and authorization.startswith("Basic ")
    assert base64.b64decode(authorization[6:]).decode() == "d4e5-key:p@ss/with+odd=chars"


def test_scope_and_extra_fields_follow_the_grant_type_in_order() -> None:
    request = token_request(
        oauth(scope="sms:send", extra={"audience": "{{secret.project}}", "resource": "sms"}),
        SECRETS,
    )
    assert form(request.body) == [
        ("grant_type", "client_credentials"),
        ("scope", "sms:send"),
        ("audience", "proj-1"),
        ("resource", "sms"),
    ]


def test_credentials_go_in_the_body_when_asked() -> None:
    request = token_request(oauth(send_as="body"), SECRETS)
    assert request.header("Authorization") is None
    assert dict(form(request.body)) == {
        "grant_type": "client_credentials",
        "client_id": "d4e5-key",
        "client_secret": "p@ss/with+odd=chars",
    }


def test_missing_secret_is_a_render_error_naming_the_field_not_the_value() -> None:
    with pytest.raises(RenderError) as caught:
        token_request(oauth(), {"key_id": "d4e5-key"})
    assert caught.value.reason == "missing_parameter:secret.key_secret"
    assert "request.auth.client_secret" in str(caught.value)
    assert "d4e5-key" not in str(caught.value)


def token_answer(
    status: int, document: Any, content_type: str = "application/json"
) -> HttpResponse:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return HttpResponse(status, {"Content-Type": content_type}, body)


def test_token_answer_gives_token_and_absolute_expiry() -> None:
    answer = token_answer(
        200, {"access_token": "eyJ.abc", "expires_in": 3599, "scope": "", "token_type": "bearer"}
    )
    token = parse_token_response(answer, now=1000.0)
    assert token == OAuthToken(access_token="eyJ.abc", expires_at=4599.0, token_type="bearer")
    assert token.authorization == "Bearer eyJ.abc"


@pytest.mark.parametrize("expires_in", [None, "soon", -5, True])
def test_unusable_expires_in_defaults_to_an_hour(expires_in: Any) -> None:
    document = (
        {"access_token": "t"}
        if expires_in is None
        else {"access_token": "t", "expires_in": expires_in}
    )
    assert parse_token_response(token_answer(200, document), now=0.0).expires_at == 3600.0


def test_expires_in_as_text_is_read() -> None:
    token = parse_token_response(
        token_answer(200, {"access_token": "t", "expires_in": "120"}), now=10.0
    )
    assert (token.expires_at, token.token_type) == (130.0, "Bearer")


def test_form_encoded_token_answer_is_read() -> None:
    answer = token_answer(
        200,
        b"access_token=t0k&token_type=bearer&expires_in=60",
        "application/x-www-form-urlencoded",
    )
    assert parse_token_response(answer, now=0.0).access_token == "t0k"


def test_refused_token_request_reports_the_oauth_error() -> None:
    answer = token_answer(
        401, {"error": "invalid_client", "error_description": "Client authentication failed"}
    )
    with pytest.raises(
        TokenError, match=r"^HTTP 401: invalid_client: Client authentication failed$"
    ):
        parse_token_response(answer, now=0.0)


def test_success_without_access_token_names_the_fields_present_but_no_values() -> None:
    answer = token_answer(200, {"token": "leaky-value", "expires_in": 60})
    with pytest.raises(TokenError) as caught:
        parse_token_response(answer, now=0.0)
    assert "without an access_token" in str(caught.value)
    assert "expires_in, token" in str(caught.value)
    assert "leaky-value" not in str(caught.value)


def test_non_json_error_answer_is_reported_by_status_only() -> None:
    with pytest.raises(TokenError, match=r"^HTTP 503$"):
        parse_token_response(token_answer(503, b"<html>down</html>", "text/html"), now=0.0)


def test_token_repr_hides_the_token() -> None:
    assert "eyJ.secret" not in repr(OAuthToken("eyJ.secret", 1.0))
