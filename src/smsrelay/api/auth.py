"""API-key authentication: `Authorization: Bearer <key>`, keys stored hashed."""

from __future__ import annotations

from fastapi import Depends, Request

from smsrelay.api.problems import Problem
from smsrelay.runtime import Runtime
from smsrelay.store.api_keys import ApiKey, authenticate_api_key


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
