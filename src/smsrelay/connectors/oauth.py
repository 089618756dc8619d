"""OAuth2 client-credentials (RFC 6749 §4.4): the token request and what the answer means.

Pure: `token_request` builds the bytes, `parse_token_response` reads the answer; the
dispatcher (`dispatch.oauth_tokens`) performs the request and caches the token.

Client authentication follows `auth.send_as`:
- `header` (default): HTTP Basic `client_id:client_secret`, the values as given (as
  `curl -u` sends them, which is what Sinch and Infobip document), not form-encoded first;
- `body`: `client_id` and `client_secret` as form fields (RFC 6749 §2.3.1's alternative).
The access token itself is always sent to the provider as `Authorization: Bearer`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from smsrelay.connectors.definition import AuthOAuth2
from smsrelay.connectors.errors import MissingParameter, RenderError
from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.connectors.placeholders import Placeholder, TemplateSyntaxError, parse_template

DEFAULT_EXPIRES_IN = 3600.0
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_ERROR_TEXT_CHARS = 200


class TokenError(Exception):
    """The token endpoint refused or gave no usable token; the message names no secret."""


@dataclass(frozen=True, slots=True)
class OAuthToken:
    """An access token and the moment (epoch seconds) it stops being valid."""

    access_token: str
    expires_at: float
    token_type: str = "Bearer"

    def __repr__(self) -> str:
        # The token is a credential: keep it out of logs and tracebacks.
        return f"OAuthToken(access_token='***', expires_at={self.expires_at!r}, token_type={self.token_type!r})"

    @property
    def authorization(self) -> str:
        """The Authorization header value (`Bearer <token>`; RFC 6750 spells it so)."""
        scheme = "Bearer" if self.token_type.lower() == "bearer" else self.token_type
        return f"{scheme} {self.access_token}"


def fill_secret_template(text: str, secrets: Mapping[str, str], *, where: str) -> str:
    """Render a template that may reference `{{secret.NAME}}` only.

    Raises RenderError (`missing_parameter:secret.NAME` for an undefined secret) naming
    `where`, never the secret's value.
    """
    try:
        template = parse_template(text)
    except TemplateSyntaxError as exc:
        raise RenderError("invalid_template", f"{where}: {exc}") from None
    out: list[str] = []
    for part in template.parts:
        if not isinstance(part, Placeholder):
            out.append(part)
        elif not part.is_secret:
            raise RenderError(
                "invalid_template",
                f"{where}: only {{{{secret.NAME}}}} placeholders are allowed, not {{{{{part.name}}}}}",
            )
        elif part.key not in secrets:
            raise MissingParameter(part.name, where)
        else:
            out.append(secrets[part.key])
    return "".join(out)


def token_request(auth: AuthOAuth2, secrets: Mapping[str, str]) -> HttpRequest:
    """The client-credentials token request: a form POST to `auth.token_url`.

    Fields in order: grant_type, scope (if set), `extra`, then the client credentials
    when `send_as` is `body`. Raises RenderError when a referenced secret is missing.
    """
    url = fill_secret_template(auth.token_url, secrets, where="request.auth.token_url")
    client_id = fill_secret_template(auth.client_id, secrets, where="request.auth.client_id")
    client_secret = fill_secret_template(
        auth.client_secret, secrets, where="request.auth.client_secret"
    )
    fields: dict[str, str] = {"grant_type": "client_credentials"}
    if auth.scope:
        fields["scope"] = fill_secret_template(auth.scope, secrets, where="request.auth.scope")
    for key, value in auth.extra.items():
        fields[key] = fill_secret_template(value, secrets, where=f"request.auth.extra.{key}")
    headers: list[tuple[str, str]] = [
        ("Content-Type", FORM_CONTENT_TYPE),
        ("Accept", "application/json"),
    ]
    if auth.send_as == "body":
        fields["client_id"] = client_id
        fields["client_secret"] = client_secret
    else:
        credentials = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")
        headers.append(("Authorization", f"Basic {credentials}"))
    return HttpRequest(
        method="POST",
        url=url,
        headers=tuple(headers),
        body=urlencode(fields).encode("ascii"),
    )


def parse_token_response(response: HttpResponse, now: float) -> OAuthToken:
    """Read a token endpoint's answer; `expires_at` is `now` + expires_in (default 3600 s).

    Accepts the JSON answer of RFC 6749 §5.1 (and a form-encoded one, which some servers
    send). Raises TokenError on a non-2xx status or a missing access_token; the message
    carries the status and the standard `error`/`error_description`, never a token.
    """
    document = _token_document(response)
    if not 200 <= response.status < 300:
        raise TokenError(f"HTTP {response.status}{_oauth_error(document)}")
    token = document.get("access_token")
    if not isinstance(token, str) or not token.strip():
        keys = ", ".join(sorted(str(k) for k in document)) or "none"
        raise TokenError(
            f"HTTP {response.status} without an access_token in the answer (fields present: {keys})"
        )
    token_type = document.get("token_type")
    return OAuthToken(
        access_token=token.strip(),
        expires_at=now + _expires_in(document.get("expires_in")),
        token_type=token_type.strip()
        if isinstance(token_type, str) and token_type.strip()
        else "Bearer",
    )


def _token_document(response: HttpResponse) -> dict[str, Any]:
    text = response.body.decode("utf-8", "replace").strip()
    content_type = (response.header("Content-Type") or "").lower()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            return {}
        return document if isinstance(document, dict) else {}
    if FORM_CONTENT_TYPE in content_type:
        return dict(parse_qsl(text, keep_blank_values=True))
    return {}


def _expires_in(value: Any) -> float:
    if isinstance(value, bool):
        return DEFAULT_EXPIRES_IN
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return DEFAULT_EXPIRES_IN
    if not 0 < seconds < float("inf"):
        return DEFAULT_EXPIRES_IN
    return seconds


def _oauth_error(document: Mapping[str, Any]) -> str:
    parts = [
        str(document[key])
        for key in ("error", "error_description")
        if isinstance(document.get(key), str | int) and str(document[key]).strip()
    ]
    if not parts:
        return ""
    return ": " + ": ".join(parts)[:_ERROR_TEXT_CHARS]
