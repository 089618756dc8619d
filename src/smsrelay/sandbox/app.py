"""The sandbox's HTTP face: send endpoints in four shapes, the state API and the inbox.

`create_sandbox_app` builds a FastAPI app around one `Sandbox`; it runs standalone or
mounted (e.g. under `/sandbox`). It has no lifespan of its own: whoever hosts it calls
`sandbox.start()` and `sandbox.close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError

from smsrelay.sandbox.inbox import InboxPage
from smsrelay.sandbox.intake import (
    Api,
    FieldProblem,
    IntakeError,
    parse_json_batch,
    parse_json_send,
    parse_query_send,
    parse_twilio_form,
    read_json,
)
from smsrelay.sandbox.messages import RawRequest, SandboxMessage, iso_utc
from smsrelay.sandbox.outcomes import OUTCOME_RULES
from smsrelay.sandbox.provider import Refusal, Sandbox, Submission
from smsrelay.sandbox.settings import ChaosSettings

# Twilio's own error codes, so Twilio-shaped clients see familiar answers.
TWILIO_FIELD_CODES = {"To": 21211, "Body": 21602, "From": 21603, "StatusCallback": 21609}
TWILIO_REFUSAL_CODES = {400: 21211, 429: 20429, 500: 20500}


def create_sandbox_app(sandbox: Sandbox) -> FastAPI:
    """Build the sandbox web app (API and inbox) around one `Sandbox`."""
    app = FastAPI(
        title="smsrelay sandbox",
        description="A fake SMS provider: outcomes by recipient number, DLR callbacks, chaos.",
        redoc_url=None,
    )
    inbox = InboxPage()

    async def invalid_input(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(
            [
                FieldProblem(".".join(str(p) for p in err["loc"][1:]) or None, err["msg"])
                for err in exc.errors()
            ]
        )

    app.add_exception_handler(RequestValidationError, invalid_input)

    # ---------------------------------------------------------------- send endpoints

    @app.post("/api/messages", tags=["send"])
    async def send_message(request: Request) -> Response:
        """Send one message: JSON `{to, from, body, client_ref, callback_url}`."""
        raw, body = await capture(request)
        try:
            item = parse_json_send(read_json(body))
        except IntakeError as exc:
            return problem_response(exc.problems)
        submission = await sandbox.submit(Api.JSON, [item], raw)
        if (early := await early_answer(request, submission)) is not None:
            return early
        message = submission.messages[0]
        return JSONResponse(
            {
                "id": message.id,
                "to": message.to,
                "status": "accepted",
                "segments": message.segments,
                "client_ref": message.client_ref,
            }
        )

    @app.post("/api/messages/batch", tags=["send"])
    async def send_batch(request: Request) -> Response:
        """Send many messages: `{from, callback_url, messages: [{to, body, client_ref}]}`."""
        raw, body = await capture(request)
        try:
            items = parse_json_batch(read_json(body))
        except IntakeError as exc:
            return problem_response(exc.problems)
        submission = await sandbox.submit(Api.BATCH, items, raw)
        if (early := await early_answer(request, submission)) is not None:
            return early
        return JSONResponse({"messages": [batch_element(m) for m in submission.messages]})

    @app.post("/api/twilio/Accounts/{account_sid}/Messages.json", tags=["send"])
    async def send_twilio(account_sid: str, request: Request) -> Response:
        """Send one message the way Twilio's API takes it: a form with To, From, Body."""
        raw, _ = await capture(request)
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            item = parse_twilio_form(fields)
        except IntakeError as exc:
            first = exc.problems[0].field or ""
            return problem_response(
                exc.problems,
                extra={"code": TWILIO_FIELD_CODES.get(first, 21600), "status": 400},
            )
        submission = await sandbox.submit(Api.TWILIO, [item], raw, account_sid=account_sid)
        if submission.reset:
            return await drop_connection(request)
        if submission.refusal is not None:
            return twilio_refusal(submission.refusal)
        return JSONResponse(twilio_message(submission.messages[0], account_sid), status_code=201)

    @app.get("/api/http/send", tags=["send"])
    async def send_http(request: Request) -> Response:
        """Send one message by query string: `?to=&from=&text=&ref=&dlr_url=`; answers `OK <id>`."""
        raw, _ = await capture(request)
        try:
            item = parse_query_send(dict(request.query_params))
        except IntakeError as exc:
            return problem_response(exc.problems)
        submission = await sandbox.submit(Api.HTTP, [item], raw)
        if (early := await early_answer(request, submission)) is not None:
            return early
        return PlainTextResponse(f"OK {submission.messages[0].id}")

    # ---------------------------------------------------------------- state

    @app.get("/api/messages", tags=["state"])
    async def list_messages(
        to: Annotated[str | None, Query(description="only messages to this number")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Kept messages, newest first, each with the raw request received."""
        found = sandbox.messages(to=to or None, limit=limit)
        return {"messages": [m.to_json() for m in found], "total": len(sandbox.log)}

    @app.get("/api/messages/{message_id}", tags=["state"])
    async def get_message(message_id: str) -> Response:
        """One kept message by id."""
        message = sandbox.message(message_id)
        if message is None:
            return JSONResponse(
                {"error": f"no message with id {message_id!r}", "field": "id"}, status_code=404
            )
        return JSONResponse(message.to_json())

    @app.delete("/api/messages", tags=["state"])
    async def delete_messages() -> dict[str, int]:
        """Forget every message and the per-number counts of 0500 / 0429 numbers."""
        return {"deleted": sandbox.clear()}

    @app.get("/api/phones", tags=["state"])
    async def list_phones() -> dict[str, Any]:
        """Every number with kept messages and how many, most recent first."""
        return {"phones": [p.to_json() for p in sandbox.phones()]}

    @app.get("/api/outcomes", tags=["state"])
    async def list_outcomes() -> dict[str, Any]:
        """The outcome table: what each number ending does."""
        return {
            "outcomes": [
                {
                    "ending": rule.ending,
                    "outcome": str(rule.outcome),
                    "send_answer": rule.send_answer,
                    "delivery_reports": rule.delivery_reports,
                }
                for rule in OUTCOME_RULES
            ]
        }

    @app.get("/api/chaos", tags=["chaos"])
    async def get_chaos() -> dict[str, Any]:
        """The chaos probabilities in force."""
        return sandbox.chaos.model_dump()

    @app.put("/api/chaos", tags=["chaos"])
    async def put_chaos(request: Request) -> Response:
        """Replace the chaos settings (omitted rates become 0); a seed replays the draws."""
        try:
            chaos = ChaosSettings.model_validate(read_json(await request.body()))
        except IntakeError as exc:
            return problem_response(exc.problems)
        except ValidationError as exc:
            return problem_response(
                [
                    FieldProblem(".".join(str(p) for p in err["loc"]) or None, err["msg"])
                    for err in exc.errors()
                ]
            )
        sandbox.set_chaos(chaos)
        return JSONResponse(chaos.model_dump())

    # ---------------------------------------------------------------- inbox

    @app.get("/", response_class=HTMLResponse, tags=["inbox"])
    async def inbox_page(to: str | None = None) -> HTMLResponse:
        """The web inbox: numbers, messages as bubbles, the outcome table, chaos settings."""
        return HTMLResponse(inbox.render(sandbox, selected=to or None))

    @app.get("/inbox.js", include_in_schema=False)
    async def inbox_script() -> Response:
        return Response(inbox.script, media_type="text/javascript; charset=utf-8")

    @app.get("/inbox.css", include_in_schema=False)
    async def inbox_style() -> Response:
        return Response(inbox.style, media_type="text/css; charset=utf-8")

    return app


async def capture(request: Request) -> tuple[RawRequest, bytes]:
    """The request as received, for the inbox and the API, and its body bytes."""
    body = await request.body()
    raw = RawRequest.capture(
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        headers=[(k, v) for k, v in request.headers.items()],
        body=body,
    )
    return raw, body


def problem_response(
    problems: list[FieldProblem], *, extra: dict[str, Any] | None = None
) -> JSONResponse:
    """400 naming the field: `{error, field, errors: [{field, message}]}`."""
    first = problems[0] if problems else FieldProblem(None, "malformed request")
    label = f"{first.field}: " if first.field else ""
    doc: dict[str, Any] = {
        "error": label + first.message,
        "field": first.field,
        "errors": [p.to_json() for p in problems],
        **(extra or {}),
    }
    return JSONResponse(doc, status_code=400)


async def early_answer(request: Request, submission: Submission) -> Response | None:
    """The answer of a reset or refused request in the sandbox's JSON shape; None if accepted."""
    if submission.reset:
        return await drop_connection(request)
    refusal = submission.refusal
    if refusal is None:
        return None
    headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after is not None else {}
    return JSONResponse(
        {
            "error": refusal.error,
            "code": refusal.code,
            "field": "to" if refusal.http_status == 400 else None,
        },
        status_code=refusal.http_status,
        headers=headers,
    )


def batch_element(message: SandboxMessage) -> dict[str, Any]:
    """One element of a batch answer; a rejected element has no id and says why."""
    if message.status == "rejected":
        return {
            "id": None,
            "to": message.to,
            "status": "rejected",
            "error": message.reason,
            "client_ref": message.client_ref,
        }
    return {
        "id": message.id,
        "to": message.to,
        "status": "accepted",
        "segments": message.segments,
        "client_ref": message.client_ref,
    }


def twilio_message(message: SandboxMessage, account_sid: str) -> dict[str, Any]:
    """The Message resource Twilio answers a create with."""
    created = format_datetime(message.received_at, usegmt=True)
    return {
        "sid": message.id,
        "account_sid": account_sid,
        "to": message.to,
        "from": message.sender,
        "body": message.body,
        "status": "queued",
        "num_segments": str(message.segments),
        "num_media": "0",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "date_created": created,
        "date_updated": created,
        "date_sent": None,
        "error_code": None,
        "error_message": None,
        "price": None,
        "price_unit": "USD",
        "messaging_service_sid": None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{message.id}.json",
        "sandbox_received_at": iso_utc(message.received_at),
    }


def twilio_refusal(refusal: Refusal) -> JSONResponse:
    """A refusal in Twilio's error shape: `{code, message, more_info, status}`."""
    code = TWILIO_REFUSAL_CODES.get(refusal.http_status, 20500)
    headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after is not None else {}
    return JSONResponse(
        {
            "code": code,
            "message": refusal.error,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": refusal.http_status,
        },
        status_code=refusal.http_status,
        headers=headers,
    )


async def drop_connection(request: Request) -> Response:
    """Drop the client's TCP connection with a reset, sending no answer at all.

    ASGI has no way to do this; under uvicorn the connection's transport is reachable
    from the request's receive channel, and closing it with SO_LINGER 0 sends a TCP RST.
    Where that is not possible (another server, or middleware wrapping the channel) the
    request is answered 500 with code `reset_unsupported` instead.
    """
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return JSONResponse(
            {
                "error": "connection reset (sandbox chaos) not possible here",
                "code": "reset_unsupported",
            },
            status_code=500,
        )
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let the server notice the lost connection, so it drops our answer quietly.
    await asyncio.sleep(0)
    return Response(status_code=500)
