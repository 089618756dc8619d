"""What every HTTP face of smsrelay shares: RFC 9457 problems and API-key authentication.

The native API (`api/`) and the MoEngage and CleverTap faces (`compat/`) raise the same
`Problem` and authenticate with the same bearer keys; this module sits below both, so
neither imports the other. `api.problems` installs the handlers that answer a Problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from smsrelay.connectors.errors import FieldError
from smsrelay.runtime import Runtime
from smsrelay.store.api_keys import ApiKey, authenticate_api_key

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    502: "Provider error",
    503: "Unavailable",
}


class Problem(Exception):
    """An error answered as `application/problem+json`; raise it from any handler."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.title = title or _TITLES.get(status, "Error")
        self.type = type_
        self.headers = headers or {}
        self.extra = extra or {}

    def to_response(self, instance: str | None = None) -> JSONResponse:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [{"path": e.path, "message": e.message} for e in self.errors]
        body.update(self.extra)
        return JSONResponse(
            body, status_code=self.status, media_type=PROBLEM_JSON, headers=self.headers
        )


def not_found(what: str, key: str) -> Problem:
    """A 404 problem naming what was looked up."""
    return Problem(404, f"{what} {key!r} does not exist")


# ---------------------------------------------------------------- API keys


def get_runtime(request: Request) -> Runtime:
    """The Runtime of the app serving this request."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def require_api_key(request: Request, runtime: Runtime = Depends(get_runtime)) -> ApiKey:
    """Resolve the bearer key to an ApiKey, or answer 401 saying what is missing."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="smsrelay"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            401,
            "missing API key: send the header 'Authorization: Bearer <key>' "
            "(create a key with `smsrelay apikey create`)",
            headers=challenge,
        )
    key = await authenticate_api_key(runtime.database, token.strip())
    if key is None:
        raise Problem(401, "the API key is unknown or revoked", headers=challenge)
    return key
