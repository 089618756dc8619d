"""Inbound protection in front of every route: rate limit, body size cap, strict JSON.

One ASGI middleware (`InboundLimits`), so every router gets the same rules without a line of
its own:

- **Rate limit per API key**: a token bucket per bearer key (`SMSRELAY_API_RATE_LIMIT_PER_SECOND`,
  `SMSRELAY_API_RATE_LIMIT_BURST`); over it, 429 with `Retry-After`. Buckets are keyed by a
  hash of the key, and a key the API refuses (401) leaves no bucket behind, so guessed keys
  cannot fill the table.
- **Body size cap**: a declared `Content-Length` over the cap is refused before the app
  runs, a chunked body as soon as it passes the cap: 413 (`SMSRELAY_API_MAX_BODY_BYTES`;
  batch and campaign endpoints `SMSRELAY_API_MAX_BATCH_BODY_BYTES`).
- **Strict JSON**: decided when the application first reads the body, because only then is
  the route known (`scope["route"]`). A route that takes only JSON (a pydantic body, or a
  documented request body that is JSON only) answers another content type with 415; a JSON
  body that does not parse, has NaN/Infinity, a duplicate key, is nested too deeply or is
  not UTF-8 is 422 naming the line, column and character where it breaks.

Refusals met while the body is read are raised as `InboundRefused` (FastAPI passes
HTTPExceptions raised during body reading through) and answered by the handler
`install_inbound_limits` registers, so every refusal is the same RFC 9457 problem.

The DLR intake (`/dlr/…`: its own cap `SMSRELAY_DLR_MAX_BYTES`, any content type, no API
key) is left alone, and so is a sandbox body with a declared length: the sandbox's
connection-reset chaos needs the server's own receive channel.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request, params
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smsrelay.connectors.errors import FieldError
from smsrelay.http_common import Problem
from smsrelay.settings import Settings

# Paths whose own code caps and reads the body (DLR intake), or which must see the server's
# receive channel untouched (the sandbox's reset chaos).
DLR_PREFIX = "/dlr/"
SANDBOX_PREFIX = "/sandbox"
# Buckets kept at most; the least recently used goes first (a backstop: 401s leave none).
MAX_BUCKETS = 10_000
# How much of an oversized body is still read (and dropped) so the client sees the 413
# instead of a reset connection; past this the connection is closed.
DRAIN_LIMIT = 1024 * 1024

Clock = Callable[[], float]


class TokenBuckets:
    """One token bucket per key: `rate` tokens a second, up to `burst` saved up."""

    def __init__(
        self, rate: float, burst: int, *, clock: Clock = time.monotonic, max_keys: int = MAX_BUCKETS
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, float(burst))
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def take(self, key: bytes) -> float:
        """Take one token for `key`: 0 when allowed, else the seconds until one is available."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def forget(self, key: bytes) -> None:
        """Drop the bucket of `key` (a key the API refused)."""
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)


class StrictJsonError(ValueError):
    """A JSON body smsrelay refuses although Python's parser would take it."""


def _refuse_constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not a JSON number")


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise StrictJsonError(f"the key {key!r} appears twice in one object")
        document[key] = value
    return document


def strict_json_problem(body: bytes) -> Problem | None:
    """Why `body` is not strict JSON (RFC 8259, UTF-8, unique keys), or None when it is."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Problem(
            422,
            f"the body is not valid UTF-8 (byte {exc.start})",
            errors=[FieldError("body", f"invalid UTF-8 at byte {exc.start}")],
            extra={"position": exc.start},
        )
    try:
        json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno} (character {exc.pos})"
        return Problem(
            422,
            f"the body is not valid JSON: {exc.msg} at {where}",
            errors=[FieldError("body", f"{exc.msg} at {where}")],
            extra={"line": exc.lineno, "column": exc.colno, "position": exc.pos},
        )
    except StrictJsonError as exc:
        return Problem(
            422, f"the body is not valid JSON: {exc}", errors=[FieldError("body", str(exc))]
        )
    except RecursionError:
        return Problem(
            422,
            "the body is not valid JSON: nested too deeply",
            errors=[FieldError("body", "nested too deeply")],
        )
    return None


def is_json_media_type(content_type: str) -> bool:
    """True for application/json and application/<anything>+json, whatever the parameters."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _bearer_token(scope: Scope) -> str | None:
    scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _json_rule(scope: Scope) -> str | None:
    """How strictly the chosen route takes JSON: "only", "also" (beside forms…) or None.

    Asked when the body is first read, after routing: `scope["route"]` is the route then.
    A route reading a pydantic model takes only JSON; a route reading the request itself
    says what it takes in its documented request body (`openapi_extra`).
    """
    route = scope.get("route")
    if not isinstance(route, APIRoute):
        return None
    field = route.body_field
    if field is not None:
        return None if isinstance(field.field_info, params.Form) else "only"
    documented = (route.openapi_extra or {}).get("requestBody") or {}
    media_types = list(documented.get("content") or {})
    json_types = [media for media in media_types if is_json_media_type(media)]
    if not json_types:
        return None
    return "only" if len(json_types) == len(media_types) else "also"


class InboundRefused(HTTPException):
    """Raised while a body is read: answered as `problem` (FastAPI re-raises HTTPExceptions
    met while reading a body, so this reaches the handler installed below)."""

    def __init__(self, problem: Problem, *, unread_body: bool = False) -> None:
        super().__init__(status_code=problem.status, detail=problem.detail)
        self.problem = problem
        self.unread_body = unread_body


async def _drain(receive: Receive, limit: int) -> bool:
    """Read and drop up to `limit` more bytes of the body; True when it ended in that."""
    dropped = 0
    while dropped <= limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return True
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


class _GuardedBody:
    """The receive channel of a request with a body: capped; strict JSON for JSON models.

    Nothing is read before the application asks; its first read decides by the route.
    """

    def __init__(self, scope: Scope, receive: Receive, cap: int, drain_limit: int) -> None:
        self.scope = scope
        self.receive = receive
        self.cap = cap
        self.drain_limit = drain_limit
        self.size = 0
        self.first = True

    async def __call__(self) -> Message:
        if self.first:
            self.first = False
            rule = _json_rule(self.scope)
            content_type = _header(self.scope, b"content-type") or ""
            if rule == "only" and not is_json_media_type(content_type):
                # Read the body (within the cap) so the client sees the answer: closing on
                # unread bytes makes the kernel reset the connection before it is read.
                ended = await _drain(self.receive, self.cap)
                raise InboundRefused(_unsupported(content_type), unread_body=not ended)
            # Routes that also take forms read a body without a content type as JSON.
            if rule is not None and (is_json_media_type(content_type) or not content_type):
                return await self._json_body()
        message = await self.receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.cap:
                await self._refuse_too_large(message)
        return message

    async def _json_body(self) -> Message:
        chunks: list[bytes] = []
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return message
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self.cap:
                await self._refuse_too_large(message)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        invalid = strict_json_problem(body) if body.strip() else None
        if invalid is not None:
            raise InboundRefused(invalid)
        return {"type": "http.request", "body": body, "more_body": False}

    async def _refuse_too_large(self, message: Message) -> None:
        # Read the rest (up to a bound) so the client, still sending, sees the answer.
        ended = not message.get("more_body", False) or await _drain(self.receive, self.drain_limit)
        raise InboundRefused(_too_large(self.cap), unread_body=not ended)


class InboundLimits:
    """ASGI middleware: per-key rate limit, body size cap and strict JSON (module docstring)."""

    def __init__(self, app: ASGIApp, *, settings: Settings, clock: Clock = time.monotonic) -> None:
        self.app = app
        self.max_body = settings.api_max_body_bytes
        self.max_batch_body = settings.api_max_batch_body_bytes
        rate = settings.api_rate_limit_per_second
        self.buckets = (
            TokenBuckets(rate, settings.api_rate_limit_burst, clock=clock) if rate > 0 else None
        )

    def body_cap(self, path: str) -> int:
        """The body size cap of a path: batch and campaign endpoints take more."""
        if path.endswith("/batch") or "/campaigns" in path:
            return max(self.max_body, self.max_batch_body)
        return self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(DLR_PREFIX):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        sandbox = path == SANDBOX_PREFIX or path.startswith(SANDBOX_PREFIX + "/")
        key = None if sandbox else self._rate_key(scope)
        wait = self.buckets.take(key) if key is not None and self.buckets is not None else 0.0
        cap = self.body_cap(path)
        declared = _header(scope, b"content-length")
        chunked = _header(scope, b"transfer-encoding") is not None
        length = int(declared) if declared is not None and declared.strip().isdigit() else None
        has_body = chunked or bool(length)
        if wait > 0:
            ended = not has_body or await _drain(receive, cap)
            await _answer(scope, send, self._too_many(wait), unread_body=not ended)
            return
        if length is not None and length > cap:
            ended = length <= cap + DRAIN_LIMIT and await _drain(receive, DRAIN_LIMIT)
            await _answer(scope, send, _too_large(cap), unread_body=not ended)
            return
        if has_body and not (sandbox and not chunked):
            # A sandbox body with a declared length is left alone: its reset chaos needs
            # the server's own receive channel (see the module docstring).
            receive = _GuardedBody(scope, receive, cap, DRAIN_LIMIT)
        await self.app(scope, receive, self._watch_refusal(key, send))

    def _rate_key(self, scope: Scope) -> bytes | None:
        token = _bearer_token(scope)
        return hashlib.sha256(token.encode("utf-8", "replace")).digest() if token else None

    def _watch_refusal(self, key: bytes | None, send: Send) -> Send:
        buckets = self.buckets
        if key is None or buckets is None:
            return send

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                buckets.forget(key)  # not a key of ours: keep no state for it
            await send(message)

        return watched

    def _too_many(self, wait: float) -> Problem:
        seconds = max(1, math.ceil(wait))
        return Problem(
            429,
            "too many requests with this API key; slow down and retry after "
            f"{seconds} s (SMSRELAY_API_RATE_LIMIT_PER_SECOND)",
            headers={"Retry-After": str(seconds)},
            extra={"retry_after_seconds": round(wait, 3)},
        )


def _too_large(cap: int) -> Problem:
    return Problem(
        413,
        f"the request body is larger than {cap} bytes (SMSRELAY_API_MAX_BODY_BYTES, "
        "batch and campaign endpoints SMSRELAY_API_MAX_BATCH_BODY_BYTES)",
    )


def _unsupported(content_type: str) -> Problem:
    given = content_type.split(";", 1)[0].strip() or "none"
    return Problem(
        415,
        f"this endpoint takes JSON; send 'Content-Type: application/json' (got {given})",
        errors=[FieldError("header.Content-Type", "must be application/json")],
    )


def _refusal_response(problem: Problem, path: str | None, *, unread_body: bool) -> Response:
    response = problem.to_response(path)
    if unread_body:
        # The rest of the body is not read: end the connection rather than wait for it.
        response.headers["Connection"] = "close"
    return response


async def _answer(scope: Scope, send: Send, problem: Problem, *, unread_body: bool) -> None:
    response = _refusal_response(problem, scope.get("path"), unread_body=unread_body)
    await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def install_inbound_limits(app: FastAPI, settings: Settings) -> None:
    """Put `InboundLimits` in front of every route of `app`, and answer its refusals."""

    @app.exception_handler(InboundRefused)
    async def _refused(request: Request, exc: InboundRefused) -> Response:
        return _refusal_response(exc.problem, request.url.path, unread_body=exc.unread_body)

    app.add_middleware(InboundLimits, settings=settings)


__all__ = [
    "InboundLimits",
    "InboundRefused",
    "TokenBuckets",
    "install_inbound_limits",
    "is_json_media_type",
    "strict_json_problem",
]
