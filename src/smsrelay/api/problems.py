"""RFC 9457 problem responses, produced in one place for every error the API returns."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from smsrelay.api.problem_docs import install_problem_docs
from smsrelay.connectors.errors import DefinitionError, FieldError
from smsrelay.http_common import Problem

log = logging.getLogger("smsrelay.api")


# SQLSTATE classes of a database that is away: connection exception, operator intervention
# (shutdown, starting up), insufficient resources (disk full, out of memory).
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53")
_DISK_FULL = ("database or disk is full", "no space left on device", "could not extend file")


def database_problem(exc: BaseException) -> Problem | None:
    """A 503 problem when `exc` says the database is unreachable or full; None otherwise."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = str(getattr(original, "sqlstate", None) or getattr(original, "pgcode", None) or "")
    text = str(original).lower()
    full = sqlstate == "53100" or any(words in text for words in _DISK_FULL)
    away = (
        isinstance(exc, OperationalError | InterfaceError | ConnectionError)
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        or sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    )
    if full:
        return Problem(
            503,
            "the database has no disk space left, so nothing was saved; free disk space on "
            "the database server and try again",
            headers={"Retry-After": "30"},
        )
    if away:
        return Problem(
            503,
            "the database is unreachable right now, so the request could not be completed; "
            "try again shortly",
            headers={"Retry-After": "5"},
        )
    return None


def _validation_path(loc: Sequence[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error through Problem so all answers share one shape (and document it)."""
    install_problem_docs(app)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.to_response(request.url.path)

    @app.exception_handler(DefinitionError)
    async def _definition(request: Request, exc: DefinitionError) -> JSONResponse:
        problem = Problem(422, "the connector definition is invalid", errors=exc.errors)
        return problem.to_response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            message = str(err.get("msg", "invalid"))
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            if err.get("type") == "json_invalid":
                message = "the body is not valid JSON: " + str(err.get("ctx", {}).get("error", ""))
            errors.append(FieldError(_validation_path(loc), message))
        problem = Problem(422, "the request is invalid; see errors", errors=errors)
        return problem.to_response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        problem = Problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        return problem.to_response(request.url.path)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(ConnectionError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        problem = database_problem(exc)
        if problem is None:
            return await _unexpected(request, exc)
        # No traceback and no SQL (its parameters hold numbers and texts): what went wrong.
        log.error("%s %s: %s", request.method, request.url.path, problem.detail)
        return problem.to_response(request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        problem = Problem(500, "an internal error occurred; it has been logged")
        return problem.to_response(request.url.path)
