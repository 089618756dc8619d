"""The `smsrelay` command line."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from smsrelay.connectors.definition import ConnectorDefinition, load_definition
from smsrelay.connectors.errors import DefinitionError, RenderError

app = typer.Typer(
    help="smsrelay: configure any HTTP SMS provider as a connector, send, and track delivery.",
    no_args_is_help=True,
    add_completion=False,
)
connectors_app = typer.Typer(
    help="Manage connectors, and check, render and debug connector definitions offline.",
    no_args_is_help=True,
)
app.add_typer(connectors_app, name="connectors")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _read_definition(path: Path) -> ConnectorDefinition:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return load_definition(text)
    except DefinitionError as exc:
        lines = [f"{path}: the connector definition is invalid:"]
        lines += [f"  {e}" for e in exc.errors]
        raise _fail("\n".join(lines)) from exc


def _parse_pairs(pairs: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(f"{option} {pair!r}: expected NAME=VALUE")
        out[key] = value
    return out


@app.command()
def version() -> None:
    """Print the smsrelay version."""
    from smsrelay import __version__

    typer.echo(__version__)


@connectors_app.command("check")
def connectors_check(
    file: Annotated[Path, typer.Argument(help="Connector definition, JSON or YAML.")],
) -> None:
    """Validate a connector definition; exit 1 listing every problem with its field path."""
    definition = _read_definition(file)
    typer.echo(f"{file}: connector {definition.name!r} is valid")


@connectors_app.command("render")
def connectors_render(
    file: Annotated[Path, typer.Argument(help="Connector definition, JSON or YAML.")],
    to: Annotated[str | None, typer.Option(help="Recipient, E.164 (+4915112345678).")] = None,
    body: Annotated[str | None, typer.Option(help="Message text.")] = None,
    sender: Annotated[str | None, typer.Option(help="Sender ID.")] = None,
    template_id: Annotated[str | None, typer.Option(help="DLT/provider template id.")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Custom parameter NAME=VALUE (repeatable).")
    ] = None,
    secret: Annotated[
        list[str] | None, typer.Option(help="Override a secret NAME=VALUE (repeatable).")
    ] = None,
    batch: Annotated[
        Path | None,
        typer.Option(help="JSON lines, one message per line ({to, body, sender, params, ...})."),
    ] = None,
    callback_url: Annotated[str, typer.Option(help="Value of {{callback_url}}.")] = (
        "http://127.0.0.1:8000/dlr/TOKEN"
    ),
    show_secrets: Annotated[
        bool, typer.Option(help="Print secrets in clear instead of ***.")
    ] = False,
) -> None:
    """Print the exact HTTP request(s) the connector would send, as JSON; nothing is sent."""
    from smsrelay.connectors.exchange import OutboundMessage
    from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone
    from smsrelay.connectors.redaction import redact_request
    from smsrelay.connectors.rendering import (
        RenderEnvironment,
        batch_key,
        compile_connector,
        render_request,
    )

    definition = _read_definition(file)
    compiled = compile_connector(definition)
    secrets = {**definition.secrets, **_parse_pairs(secret or [], "--secret")}
    messages: list[OutboundMessage] = []
    rows: list[dict[str, Any]] = []
    if batch is not None:
        for n, line in enumerate(batch.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise _fail(f"{batch}:{n}: not JSON: {exc.msg}") from exc
                if not isinstance(row, dict):
                    raise _fail(f"{batch}:{n}: each line must be a JSON object")
                rows.append(row)
    else:
        if to is None:
            raise _fail("give --to NUMBER (and --body TEXT), or --batch MESSAGES.jsonl")
        rows.append(
            {
                "to": to,
                "body": body,
                "sender": sender,
                "template_id": template_id,
                "params": _parse_pairs(param or [], "--param"),
            }
        )
    for n, row in enumerate(rows, 1):
        try:
            number = normalise_phone(str(row.get("to", "")))
        except InvalidPhoneNumber as exc:
            raise _fail(f"message {n}: to: {exc}") from exc
        messages.append(
            OutboundMessage(
                message_id=str(row.get("message_id") or f"msg_{n:06d}"),
                to=number,
                body=row.get("body"),
                sender=row.get("sender", sender),
                template_id=row.get("template_id"),
                template_variables=tuple(str(v) for v in row.get("template_variables", ())),
                entity_id=row.get("entity_id"),
                campaign_id=row.get("campaign_id"),
                params={str(k): str(v) for k, v in (row.get("params") or {}).items()},
            )
        )
    env = RenderEnvironment(secrets=secrets, callback_url=callback_url, access_token="OAUTH2_TOKEN")
    groups: dict[tuple[object, ...], list[OutboundMessage]] = {}
    size = definition.batch.size if definition.batch else 1
    requests = []
    for message in messages:
        key = batch_key(compiled, message) if definition.batch else (message.message_id,)
        group = groups.setdefault(key, [])
        group.append(message)
        if len(group) == size:
            requests.append(list(group))
            group.clear()
    requests += [g for g in groups.values() if g]
    out = []
    for group in requests:
        try:
            request = render_request(compiled, group, env)
        except RenderError as exc:
            raise _fail(f"cannot render: {exc.reason}: {exc.detail}") from exc
        if not show_secrets:
            request = redact_request(request, secrets)
        out.append(request.as_trace() | {"message_ids": list(request.message_ids)})
    typer.echo(
        json.dumps(out[0] if len(out) == 1 and batch is None else out, indent=2, ensure_ascii=False)
    )


@connectors_app.command("parse-dlr")
def connectors_parse_dlr(
    file: Annotated[Path, typer.Argument(help="Connector definition, JSON or YAML.")],
    method: Annotated[str, typer.Option(help="HTTP method of the callback.")] = "POST",
    content_type: Annotated[
        str | None, typer.Option(help="Content-Type of the callback body.")
    ] = None,
    query: Annotated[str, typer.Option(help="Query string of the callback URL (a=1&b=2).")] = "",
    body: Annotated[
        str, typer.Option(help="Callback body text, or @path to read it from a file ('-' = stdin).")
    ] = "",
    header: Annotated[
        list[str] | None,
        typer.Option(help="Callback header NAME=VALUE (repeatable), for verification."),
    ] = None,
) -> None:
    """Parse a delivery-report callback with the connector's mapping; print the reports as JSON."""
    from urllib.parse import parse_qsl

    from smsrelay.connectors.callback_verification import verify_callback
    from smsrelay.connectors.delivery import parse_delivery_callback
    from smsrelay.connectors.errors import CallbackError
    from smsrelay.connectors.exchange import InboundCallback

    definition = _read_definition(file)
    if definition.delivery is None:
        raise _fail(f"{file}: connector {definition.name!r} has no delivery mapping")
    if body == "-":
        raw = sys.stdin.buffer.read()
    elif body.startswith("@"):
        raw = Path(body[1:]).read_bytes()
    else:
        raw = body.encode("utf-8")
    headers = _parse_pairs(header or [], "--header")
    if content_type:
        headers.setdefault("Content-Type", content_type)
    callback = InboundCallback(
        method=method.upper(),
        url="http://127.0.0.1:8000/dlr/TOKEN" + (f"?{query}" if query else ""),
        query=tuple(parse_qsl(query, keep_blank_values=True)),
        headers=headers,
        body=raw,
        content_type=content_type,
    )
    verdict = verify_callback(definition.delivery.verify, callback, definition.secrets)
    try:
        reports = parse_delivery_callback(definition.delivery, callback)
    except CallbackError as exc:
        raise _fail(f"cannot read the callback: {exc}") from exc
    result = {
        "verified": verdict.ok,
        "verification": verdict.reason,
        "reports": [
            {
                "key": r.key,
                "recipient": r.recipient,
                "outcome": r.outcome.value,
                "raw_status": r.raw_status,
                "reason": r.reason,
                "error_code": r.error_code,
                "timestamp": r.timestamp,
            }
            for r in reports
        ],
    }
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
    if not verdict.ok:
        raise typer.Exit(1)


# ---------------------------------------------------------------- running


def _settings(**overrides: Any) -> Any:
    from smsrelay.settings import load_settings

    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    try:
        return load_settings(None, **given)
    except ValueError as exc:
        raise _fail(f"configuration: {exc}") from exc


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [SMSRELAY_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [SMSRELAY_PORT].")] = None,
    sandbox: Annotated[
        bool | None,
        typer.Option(
            "--sandbox/--no-sandbox",
            help="Mount the sandbox provider [SMSRELAY_SANDBOX; default: on with SQLite only].",
        ),
    ] = None,
    dispatcher: Annotated[
        bool | None,
        typer.Option(
            "--dispatcher/--no-dispatcher",
            help="Run the dispatcher in this process [SMSRELAY_DISPATCHER].",
        ),
    ] = None,
) -> None:
    """Run the API, the delivery-report intake and (by default) the dispatcher and sandbox.

    Prometheus metrics are at /metrics. The sandbox is on by default with SQLite only.
    """
    import asyncio

    import uvicorn

    from smsrelay.app import create_app
    from smsrelay.setup import ensure_local_api_key
    from smsrelay.store.database import open_database

    settings = _settings(host=host, port=port, sandbox=sandbox, dispatcher=dispatcher)
    _configure_logging(settings.log_level)

    async def show_local_key() -> str:
        db = open_database(settings.database_url)
        try:
            await db.migrate()
            return await ensure_local_api_key(db)
        finally:
            await db.close()

    if settings.is_sqlite:
        key = asyncio.run(show_local_key())
        typer.echo(f"smsrelay {settings.base_url}")
        typer.echo(
            f"  dashboard:      {settings.base_url}/ui/   (first: .venv/bin/smsrelay user create NAME)"
        )
        if settings.sandbox:
            typer.echo(f"  sandbox inbox:  {settings.base_url}/sandbox/")
        typer.echo(f"  API docs:       {settings.base_url}/docs")
        typer.echo(f"  local API key:  {key}   (also in ./smsrelay.local-key)")
        typer.echo('  try:           .venv/bin/smsrelay send --to +15005550006 --body "hi"')
    uvicorn.run(
        create_app(settings, tune_gc=True),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        # uvicorn[standard]: the C parser and event loop roughly triple what one core
        # answers (the pure-Python h11 parser capped DLR intake below 1 000/s).
        loop="uvloop",
        http="httptools",
    )


@app.command()
def worker() -> None:
    """Run the background work only: dispatcher, delivery mapper, webhooks and campaigns.

    With SMSRELAY_METRICS_PORT set it serves its Prometheus metrics on that port.
    """
    import asyncio
    import signal

    from smsrelay.compat.webhook_formats import register_platform_formats
    from smsrelay.dispatch.background import background_work
    from smsrelay.dispatch.transport import outbound_transport
    from smsrelay.gc_tuning import tune_garbage_collector
    from smsrelay.metrics import serve_metrics
    from smsrelay.store.database import open_database
    from smsrelay.store.secret_box import load_secret_box

    settings = _settings()
    _configure_logging(settings.log_level)
    register_platform_formats()  # webhooks in MoEngage and CleverTap formats
    if settings.metrics_port:
        address = f"{settings.host}:{settings.metrics_port}"
        try:
            serve_metrics(settings.host, settings.metrics_port)
        except OSError as exc:
            raise _fail(
                f"SMSRELAY_METRICS_PORT: cannot serve metrics on {address}: {exc.strerror or exc}"
            ) from None
        typer.echo(f"metrics on http://{address}/metrics")

    async def run() -> None:
        db = open_database(settings.database_url)
        await db.migrate()
        transport = outbound_transport(settings.http_client, allow_hosts=settings.allow_hosts)
        work = background_work(db, load_secret_box(settings), transport, settings)
        tune_garbage_collector()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, work.stop_event.set)
        work.start()
        try:
            await work.wait()
        finally:
            await transport.aclose()
            await db.close()

    asyncio.run(run())


@app.command()
def migrate() -> None:
    """Apply the database migrations (also done on every start)."""
    import asyncio

    from smsrelay.store.database import open_database

    settings = _settings()

    async def run() -> None:
        db = open_database(settings.database_url)
        try:
            await db.migrate()
        finally:
            await db.close()

    asyncio.run(run())
    typer.echo("database is up to date")


@app.command("sandbox")
def sandbox_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8025,
    dlr_delay: Annotated[
        float, typer.Option(help="Seconds before a delivery report is sent.")
    ] = 0.5,
    chaos: Annotated[
        list[str] | None,
        typer.Option(
            help="Chaos setting NAME=VALUE, e.g. error_rate=0.1 (repeatable; see the inbox page)."
        ),
    ] = None,
) -> None:
    """Run the sandbox provider alone: a fake SMS provider with a web inbox."""
    import asyncio

    from pydantic import ValidationError

    from smsrelay.sandbox import ChaosSettings, SandboxSettings, serve_sandbox

    try:
        settings = SandboxSettings(
            dlr_delay_seconds=dlr_delay,
            chaos=ChaosSettings.model_validate(_parse_pairs(chaos or [], "--chaos")),
        )
    except ValidationError as exc:
        raise _fail(f"--chaos: {exc}") from exc
    typer.echo(f"sandbox inbox: http://{host}:{port}/")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_sandbox(host, port, settings))


def _configure_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


# ---------------------------------------------------------------- talking to a server

messages_app = typer.Typer(help="Read messages and their history.", no_args_is_help=True)
apikey_app = typer.Typer(
    help="Create, list and revoke API keys (works on the database).", no_args_is_help=True
)
app.add_typer(messages_app, name="messages")
app.add_typer(apikey_app, name="apikey")

ServerOption = Annotated[
    str | None,
    typer.Option("--server", help="smsrelay base URL [SMSRELAY_SERVER, default http://HOST:PORT]."),
]
KeyOption = Annotated[
    str | None,
    typer.Option("--api-key", help="API key [SMSRELAY_API_KEY, else ./smsrelay.local-key]."),
]


class ApiClient:
    """A small synchronous client of the native API, for the CLI."""

    def __init__(self, server: str | None, api_key: str | None) -> None:
        import os

        settings = _settings()
        self.base = (server or os.environ.get("SMSRELAY_SERVER") or settings.base_url).rstrip("/")
        key = api_key or os.environ.get("SMSRELAY_API_KEY")
        if not key:
            from smsrelay.setup import LOCAL_KEY_FILE

            path = Path(LOCAL_KEY_FILE)
            key = path.read_text(encoding="utf-8").strip() if path.is_file() else None
        if not key:
            raise _fail(
                "no API key: pass --api-key, set SMSRELAY_API_KEY, or run `smsrelay serve` here once"
            )
        self.key = key

    def call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> Any:
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            request.add_header(k, v)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                problem = json.loads(raw)
            except ValueError:
                raise _fail(f"{method} {path}: HTTP {exc.code}") from exc
            lines = [f"{method} {path}: HTTP {exc.code}: {problem.get('detail', '')}"]
            lines += [
                f"  {e.get('path') or '(body)'}: {e.get('message')}"
                for e in problem.get("errors", [])
            ]
            raise _fail("\n".join(lines)) from exc
        except urllib.error.URLError as exc:
            raise _fail(
                f"cannot reach smsrelay at {self.base}: {exc.reason} (is `smsrelay serve` running?)"
            ) from exc
        return json.loads(raw) if raw else None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


@app.command()
def send(
    to: Annotated[str, typer.Option(help="Recipient, E.164 (+15005550006).")],
    body: Annotated[str | None, typer.Option(help="Message text.")] = None,
    sender: Annotated[
        str | None, typer.Option(help="Sender name (default: the default sender).")
    ] = None,
    template_id: Annotated[str | None, typer.Option(help="Template id.")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Custom parameter NAME=VALUE (repeatable).")
    ] = None,
    promotional: Annotated[bool, typer.Option(help="Use the default promotional sender.")] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for a final status (0 = do not wait).")
    ] = 15.0,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Send one message and follow it until it is delivered (or fails), showing its history."""
    import time

    client = ApiClient(server, api_key)
    payload: dict[str, Any] = {"to": to, "type": "promotional" if promotional else "transactional"}
    for name, value in (("body", body), ("sender", sender), ("template_id", template_id)):
        if value is not None:
            payload[name] = value
    if param:
        payload["params"] = _parse_pairs(param, "--param")
    accepted = client.call("POST", "/v1/messages", payload)
    typer.echo(
        f"queued {accepted['id']} to {accepted['to']} via {accepted['connector']} ({accepted['segments']} segment(s))"
    )
    final = {"delivered", "undelivered", "failed", "unconfirmed", "canceled"}
    deadline = time.monotonic() + wait
    shown = 0
    message = accepted
    while wait > 0:
        message = client.call("GET", f"/v1/messages/{accepted['id']}")
        history = message.get("history", [])
        for event in history[shown:]:
            label = event.get("status") or event.get("kind")
            typer.echo(f"  {event['at']}  {event['kind']:<7} {label}")
        shown = len(history)
        if message["status"] in final or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    typer.echo(
        f"status: {message['status']}"
        + (f" ({message['failure_reason']})" if message.get("failure_reason") else "")
    )
    if message["status"] in {"failed", "undelivered"}:
        raise typer.Exit(1)


@messages_app.command("show")
def messages_show(message_id: str, server: ServerOption = None, api_key: KeyOption = None) -> None:
    """One message with its whole history, as JSON."""
    _print_json(ApiClient(server, api_key).call("GET", f"/v1/messages/{message_id}"))


@messages_app.command("list")
def messages_list(
    status: Annotated[str | None, typer.Option(help="Filter by status.")] = None,
    to: Annotated[str | None, typer.Option(help="Filter by recipient (E.164).")] = None,
    connector: Annotated[str | None, typer.Option(help="Filter by connector name.")] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first).")] = 20,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Recent messages, one line each."""
    from urllib.parse import urlencode

    query = {k: v for k, v in (("status", status), ("to", to), ("connector", connector)) if v}
    query["limit"] = str(limit)
    page = ApiClient(server, api_key).call("GET", "/v1/messages?" + urlencode(query))
    for m in page["data"]:
        typer.echo(
            f"{m['id']}  {m['created_at'][:19]}  {m['to']:<16} {m['status']:<12} {m['connector'] or '-'}  {m.get('failure_reason') or ''}"
        )


@connectors_app.command("apply")
def connectors_apply(
    file: Annotated[
        Path | None, typer.Argument(help="Connector definition, JSON or YAML (or use --preset).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Build from a provider preset (see `connectors presets`).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Preset variable NAME=VALUE, e.g. auth_token=… (repeatable)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Connector name (with --preset).")] = None,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Create or update a connector on the server from a definition file or a preset."""
    from smsrelay.connectors.presets import build_from_preset

    if (file is None) == (preset is None):
        raise _fail("give a definition FILE or --preset NAME (not both)")
    if preset is not None:
        try:
            definition = build_from_preset(
                preset, connector_name=name, values=_parse_pairs(set_ or [], "--set")
            )
        except DefinitionError as exc:
            lines = [f"preset {preset!r}:"] + [f"  {e}" for e in exc.errors]
            raise _fail("\n".join(lines)) from exc
    else:
        assert file is not None
        if set_:
            raise _fail("--set goes with --preset")
        definition = _read_definition(file)
    client = ApiClient(server, api_key)
    document = definition.export(mask_secrets=False)
    saved = client.call("PUT", f"/v1/connectors/{definition.name}", document)
    typer.echo(f"connector {saved['name']!r} is at version {saved['version']}")
    typer.echo(f"  delivery-report URL: {saved['callback_url']}")


@connectors_app.command("presets")
def connectors_presets(
    show: Annotated[str | None, typer.Argument(help="A preset to describe in full.")] = None,
) -> None:
    """List the provider presets, or describe one: its variables and the provider set-up."""
    from smsrelay.connectors.presets import get_preset, list_presets

    if show is None:
        for info in list_presets():
            typer.echo(f"{info.name:<14} {info.title}")
        typer.echo("\nDescribe one: smsrelay connectors presets NAME")
        return
    try:
        info = get_preset(show)
    except DefinitionError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"{info.title} ({info.name})\n{info.description}\n\nVariables (--set NAME=VALUE):")
    for var in info.variables:
        flags = ["required" if var.required else f"default {var.default!r}"]
        if var.secret:
            flags.append("secret")
        if var.choices:
            flags.append("one of " + ", ".join(var.choices))
        typer.echo(f"  {var.name:<18} {var.description} [{'; '.join(flags)}]")
    if info.provider_setup:
        typer.echo("\nAt the provider:\n" + info.provider_setup.strip())
    if info.notes:
        typer.echo("\nNotes:\n" + info.notes.strip())


@connectors_app.command("list")
def connectors_list(server: ServerOption = None, api_key: KeyOption = None) -> None:
    """Connectors on the server, with their delivery-report URLs."""
    for c in ApiClient(server, api_key).call("GET", "/v1/connectors")["data"]:
        typer.echo(f"{c['name']:<24} v{c['version']:<4} {c['callback_url']}")


@connectors_app.command("show")
def connectors_show(name: str, server: ServerOption = None, api_key: KeyOption = None) -> None:
    """One connector as JSON (secrets shown as ***)."""
    _print_json(ApiClient(server, api_key).call("GET", f"/v1/connectors/{name}"))


@connectors_app.command("export")
def connectors_export(name: str, server: ServerOption = None, api_key: KeyOption = None) -> None:
    """A connector's definition as YAML, ready for `connectors apply` (secrets as ***)."""
    import yaml

    definition = ApiClient(server, api_key).call("GET", f"/v1/connectors/{name}")["definition"]
    typer.echo(yaml.safe_dump(definition, sort_keys=False, allow_unicode=True), nl=False)


@connectors_app.command("test")
def connectors_test(
    name: str,
    to: Annotated[str, typer.Option(help="Recipient, E.164.")],
    body: Annotated[str, typer.Option(help="Message text.")] = "smsrelay test message",
    sender: Annotated[str | None, typer.Option(help="Sender ID.")] = None,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Send one real test SMS through a connector now and print the trace."""
    payload: dict[str, Any] = {"to": to, "body": body}
    if sender:
        payload["sender"] = sender
    trace = ApiClient(server, api_key).call("POST", f"/v1/connectors/{name}/test", payload)
    _print_json(trace)
    if trace.get("verdict") != "accepted":
        raise typer.Exit(1)


@connectors_app.command("dlr-suggest")
def connectors_dlr_suggest(
    name: Annotated[str, typer.Argument(help="Connector name on the server.")],
    callback_id: Annotated[
        int | None, typer.Option(help="A delivery report the server received (see its id).")
    ] = None,
    method: Annotated[str, typer.Option(help="Method of a sample callback.")] = "POST",
    content_type: Annotated[str | None, typer.Option(help="Content-Type of the sample.")] = None,
    query: Annotated[str | None, typer.Option(help="Query string of the sample.")] = None,
    body: Annotated[
        str | None, typer.Option(help="Sample body text, or @path to read it from a file.")
    ] = None,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """List every field of a delivery report and propose the connector's `delivery` mapping."""
    import yaml

    payload: dict[str, Any] = {}
    if callback_id is not None:
        payload["callback_id"] = callback_id
    else:
        if body is None and query is None:
            raise _fail("give --callback-id N, or a sample with --body and/or --query")
        if body is not None:
            payload["body"] = (
                Path(body[1:]).read_text(encoding="utf-8") if body.startswith("@") else body
            )
        if query is not None:
            payload["query"] = query
        payload["method"] = method.upper()
        if content_type:
            payload["content_type"] = content_type
    answer = ApiClient(server, api_key).call(
        "POST", f"/v1/connectors/{name}/delivery-mapping/suggest", payload
    )
    typer.echo("Fields:")
    for field in answer.get("fields", []):
        typer.echo(
            f"  {field.get('path', ''):<40} {json.dumps(field.get('value'), ensure_ascii=False)}"
        )
    typer.echo("\nProposed mapping (paste under `delivery:`):")
    typer.echo(yaml.safe_dump(answer.get("suggestion", {}), sort_keys=False, allow_unicode=True))


@apikey_app.command("create")
def apikey_create(name: Annotated[str, typer.Argument(help="A label for the key.")]) -> None:
    """Create an API key and print it once (it is stored hashed)."""
    import asyncio

    from smsrelay.store.api_keys import create_api_key
    from smsrelay.store.database import open_database

    settings = _settings()

    async def run() -> str:
        db = open_database(settings.database_url)
        try:
            await db.migrate()
            _, plaintext = await create_api_key(db, name)
            return plaintext
        finally:
            await db.close()

    typer.echo(asyncio.run(run()))


# ---------------------------------------------------------------- stats

_STATS_COLUMNS = (
    ("total", "total"),
    ("sent", "sent"),
    ("delivered", "delivered"),
    ("undelivered", "undeliv."),
    ("unconfirmed", "unconf."),
    ("failed", "failed"),
    ("queued", "queued"),
)


def stats_table(report: dict[str, Any]) -> str:
    """A `GET /v1/stats` answer as a text table, then the top failure reasons."""

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:.1f}%"

    rows = [
        [str(g.get("key") if g.get("key") is not None else "(none)")]
        + [str(g[name]) for name, _ in _STATS_COLUMNS]
        + [rate(g["delivery_rate"])]
        for g in report.get("groups", [])
    ]
    totals = report["totals"]
    rows.append(
        ["total"]
        + [str(totals[name]) for name, _ in _STATS_COLUMNS]
        + [rate(totals["delivery_rate"])]
    )
    header = [report.get("group_by") or ""] + [title for _, title in _STATS_COLUMNS] + ["rate"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    reasons = totals.get("top_failure_reasons", [])
    if reasons:
        lines.append("")
        lines.append("top failure reasons:")
        lines += [f"  {r['count']:>6}  {r['reason']}" for r in reasons]
    lines.append("")
    lines.append("rate = delivered / (delivered + undelivered + unconfirmed)")
    return "\n".join(lines)


@app.command()
def stats(
    group_by: Annotated[
        str | None, typer.Option("--group-by", help="connector, sender, campaign or day.")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Messages queued at or after (ISO 8601, UTC).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Messages queued before (ISO 8601, UTC).")
    ] = None,
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    sender: Annotated[str | None, typer.Option(help="Only this sender.")] = None,
    campaign_id: Annotated[str | None, typer.Option(help="Only this campaign.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")] = False,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Sending statistics: counts by status, delivery rate and top failure reasons."""
    from urllib.parse import urlencode

    query = {
        key: value
        for key, value in (
            ("group_by", group_by),
            ("from", start),
            ("to", end),
            ("connector", connector),
            ("sender", sender),
            ("campaign_id", campaign_id),
        )
        if value
    }
    path = "/v1/stats" + ("?" + urlencode(query) if query else "")
    report = ApiClient(server, api_key).call("GET", path)
    if as_json:
        _print_json(report)
    else:
        typer.echo(stats_table(report))


# ---------------------------------------------------------------- secrets at rest

secrets_app = typer.Typer(
    help="Manage the encryption of stored secrets (SMSRELAY_SECRET_KEYS).", no_args_is_help=True
)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every connector and webhook secret with the newest key.

    Put the new key first in SMSRELAY_SECRET_KEYS (older keys after it), run this, then drop
    the older keys. Safe to run again; no secret value is printed.
    """
    import asyncio

    from smsrelay.store.connectors import reencrypt_all
    from smsrelay.store.database import open_database
    from smsrelay.store.errors import SecretKeyError
    from smsrelay.store.secret_box import load_secret_box
    from smsrelay.store.webhooks import reencrypt_webhook_secrets

    settings = _settings()

    async def run() -> tuple[int, int]:
        db = open_database(settings.database_url)
        try:
            await db.migrate()
            box = load_secret_box(settings)
            connectors = await reencrypt_all(db, box)
            webhooks = await reencrypt_webhook_secrets(db, box)
            return connectors, webhooks
        finally:
            await db.close()

    try:
        connectors, webhooks = asyncio.run(run())
    except SecretKeyError as exc:
        raise _fail(f"secrets rotate: {exc}") from exc
    typer.echo(
        f"re-encrypted the secrets of {connectors} connector(s) and {webhooks} webhook(s) "
        "with the newest key; older keys can now be removed from SMSRELAY_SECRET_KEYS"
    )


# ---------------------------------------------------------------- dashboard users

user_app = typer.Typer(
    help="Create and manage dashboard users (works on the database).", no_args_is_help=True
)
app.add_typer(user_app, name="user")

PasswordOption = Annotated[
    str | None,
    typer.Option(help="The password (for scripts); prompted for, hidden, when omitted."),
]


def _password(given: str | None) -> str:
    if given is not None:
        return given
    entered: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return entered


def _with_database(work: Any) -> Any:
    import asyncio

    from smsrelay.store.database import open_database

    settings = _settings()

    async def run() -> Any:
        db = open_database(settings.database_url)
        try:
            await db.migrate()
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument(help="The name to sign in with.")],
    password: PasswordOption = None,
) -> None:
    """Create a dashboard user (password at least 8 characters)."""
    from smsrelay.store.users import UserError, create_user

    secret = _password(password)
    try:
        _with_database(lambda db: create_user(db, name, secret))
    except UserError as exc:
        raise _fail(f"user create: {exc}") from exc
    typer.echo(f"created dashboard user {name!r}; sign in at /ui/")


@user_app.command("list")
def user_list() -> None:
    """List dashboard users and when they last signed in."""
    from smsrelay.store.users import list_users

    for user in _with_database(list_users):
        last = user.last_login_at.isoformat() if user.last_login_at else "never"
        typer.echo(f"{user.name}\tlast sign-in: {last}")


@user_app.command("password")
def user_password(
    name: Annotated[str, typer.Argument(help="The user.")],
    password: PasswordOption = None,
) -> None:
    """Set a user's password; their open sessions end."""
    from smsrelay.store.users import UserError, set_password

    secret = _password(password)
    try:
        changed = _with_database(lambda db: set_password(db, name, secret))
    except UserError as exc:
        raise _fail(f"user password: {exc}") from exc
    if not changed:
        raise _fail(f"user password: there is no user named {name!r}")
    typer.echo(f"password of {name!r} changed")


@user_app.command("delete")
def user_delete(name: Annotated[str, typer.Argument(help="The user.")]) -> None:
    """Delete a dashboard user."""
    from smsrelay.store.users import delete_user

    if not _with_database(lambda db: delete_user(db, name)):
        raise _fail(f"user delete: there is no user named {name!r}")
    typer.echo(f"deleted dashboard user {name!r}")


# ---------------------------------------------------------------- campaigns

campaigns_app = typer.Typer(
    help="Create campaigns from a CSV audience; follow, pause, resume or cancel them.",
    no_args_is_help=True,
)
app.add_typer(campaigns_app, name="campaigns")


def _send_raw(client: ApiClient, request: Any) -> Any:
    """Send a prepared urllib request with the client's key; problems as `call` shows them."""
    import urllib.error
    import urllib.request

    request.add_header("Authorization", f"Bearer {client.key}")
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
        except ValueError:
            raise _fail(f"POST /v1/campaigns: HTTP {exc.code}") from exc
        lines = [f"POST /v1/campaigns: HTTP {exc.code}: {problem.get('detail', '')}"]
        lines += [
            f"  {e.get('path') or '(body)'}: {e.get('message')}" for e in problem.get("errors", [])
        ]
        raise _fail("\n".join(lines)) from exc
    except urllib.error.URLError as exc:
        raise _fail(f"cannot reach smsrelay at {client.base}: {exc.reason}") from exc
    return json.loads(raw)


def _upload_campaign(client: ApiClient, campaign: dict[str, Any], audience: Path) -> Any:
    """POST the campaign as multipart, streaming the CSV from disk behind a progress bar."""
    import urllib.request
    import uuid
    from collections.abc import Iterator

    boundary = uuid.uuid4().hex
    filename = audience.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="campaign"\r\n'
        "Content-Type: application/json\r\n\r\n"
        f"{json.dumps(campaign)}\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="audience"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    try:
        size = audience.stat().st_size
        file = audience.open("rb")
    except OSError as exc:
        raise _fail(f"{audience}: cannot read: {exc.strerror}") from exc
    with file, typer.progressbar(length=size, label="uploading") as bar:

        def body() -> Iterator[bytes]:
            yield head
            while chunk := file.read(256 * 1024):
                bar.update(len(chunk))
                yield chunk
            yield tail

        request = urllib.request.Request(client.base + "/v1/campaigns", data=body(), method="POST")
        request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        request.add_header("Content-Length", str(len(head) + size + len(tail)))
        return _send_raw(client, request)


def _follow_expansion(client: ApiClient, campaign: dict[str, Any]) -> dict[str, Any]:
    """Poll a campaign while its audience is queued, behind a progress bar of rows read."""
    import time

    shown = 0
    with typer.progressbar(length=max(1, campaign["rows_total"]), label="queueing") as bar:
        while True:
            campaign = client.call("GET", f"/v1/campaigns/{campaign['id']}?stats=false")
            bar.update(campaign["rows_read"] - shown)
            shown = campaign["rows_read"]
            if campaign["expanded"] or campaign["status"] in ("completed", "canceled", "failed"):
                return campaign
            time.sleep(0.5)


def _campaign_summary(campaign: dict[str, Any]) -> None:
    typer.echo(
        f"campaign {campaign['id']} {campaign['status']}: queued {campaign['queued']} of "
        f"{campaign['rows_total']} rows ({campaign['rows_invalid']} invalid, "
        f"{campaign['duplicates']} duplicates, {campaign['suppressed']} suppressed)"
    )
    for problem in campaign["invalid_rows"][:20]:
        typer.echo(f"  row {problem['row']}: {problem['reason']}")
    if campaign["rows_invalid"] > 20:
        typer.echo(f"  ... {campaign['rows_invalid'] - 20} more invalid rows")
    if campaign.get("first_send_at"):
        typer.echo(f"  sending from {campaign['first_send_at']} to {campaign['last_send_at']}")
    if campaign.get("error"):
        typer.echo(f"  error: {campaign['error']}")


@campaigns_app.command("create")
def campaigns_create(
    name: Annotated[str, typer.Option(help="Campaign name.")],
    audience: Annotated[
        Path, typer.Option(help="CSV file: a phone column (phone/to/msisdn) and attributes.")
    ],
    body: Annotated[
        str | None, typer.Option(help="Text; {{params.NAME}} or $$NAME for column NAME.")
    ] = None,
    sender: Annotated[str | None, typer.Option(help="Sender name (decides the connector).")] = None,
    promotional: Annotated[
        bool, typer.Option(help="Without --sender: the default promotional sender.")
    ] = True,
    template_id: Annotated[str | None, typer.Option(help="Template id.")] = None,
    template_variable: Annotated[
        list[str] | None, typer.Option(help="Template variable (repeatable, in order).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Campaign parameter NAME=VALUE (repeatable).")
    ] = None,
    phone_column: Annotated[str | None, typer.Option(help="Column of the numbers.")] = None,
    default_region: Annotated[
        str | None, typer.Option(help="Region of numbers without + (e.g. DE).")
    ] = None,
    send_at: Annotated[
        str | None, typer.Option(help="Start, ISO 8601 with zone (default: now).")
    ] = None,
    throttle: Annotated[int | None, typer.Option(help="Messages per minute at most.")] = None,
    quiet_hours: Annotated[
        str | None,
        typer.Option(
            help="HH:MM-HH:MM in the recipient's time, or 'off' (promotional: 21:00-09:00)."
        ),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the queueing with a progress bar.")] = True,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Create a campaign from a CSV file: upload it, then follow its rows being queued."""
    client = ApiClient(server, api_key)
    campaign: dict[str, Any] = {
        "name": name,
        "type": "promotional" if promotional else "transactional",
    }
    for key, value in (
        ("sender", sender),
        ("body", body),
        ("template_id", template_id),
        ("phone_column", phone_column),
        ("default_region", default_region),
        ("send_at", send_at),
        ("throttle_per_minute", throttle),
    ):
        if value is not None:
            campaign[key] = value
    if template_variable:
        campaign["template_variables"] = template_variable
    if param:
        campaign["params"] = _parse_pairs(param, "--param")
    if quiet_hours is not None:
        if quiet_hours.strip().lower() == "off":
            campaign["quiet_hours"] = {"enabled": False}
        else:
            start, sep, end = quiet_hours.partition("-")
            if not sep:
                raise _fail("--quiet-hours: expected HH:MM-HH:MM (e.g. 21:00-09:00) or off")
            campaign["quiet_hours"] = {"start": start.strip(), "end": end.strip()}
    created = _upload_campaign(client, campaign, audience)
    typer.echo(f"campaign {created['id']} created with {created['rows_total']} rows")
    final = _follow_expansion(client, created) if wait else created
    _campaign_summary(final)
    if final["status"] == "failed":
        raise typer.Exit(1)


@campaigns_app.command("list")
def campaigns_list(
    status: Annotated[str | None, typer.Option(help="Only campaigns in this status.")] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first).")] = 20,
    server: ServerOption = None,
    api_key: KeyOption = None,
) -> None:
    """Recent campaigns with their progress, one line each."""
    from urllib.parse import urlencode

    query = {"limit": str(limit), **({"status": status} if status else {})}
    page = ApiClient(server, api_key).call("GET", "/v1/campaigns?" + urlencode(query))
    for c in page["data"]:
        typer.echo(
            f"{c['id']}  {c['created_at'][:19]}  {c['status']:<10} "
            f"{c['queued']:>9}/{c['rows_total']:<9} {c['name']}"
        )


@campaigns_app.command("show")
def campaigns_show(
    campaign_id: str, server: ServerOption = None, api_key: KeyOption = None
) -> None:
    """One campaign with its progress and message stats, as JSON."""
    _print_json(ApiClient(server, api_key).call("GET", f"/v1/campaigns/{campaign_id}"))


def _campaign_action(action: str, campaign_id: str, server: str | None, key: str | None) -> None:
    answer = ApiClient(server, key).call("POST", f"/v1/campaigns/{campaign_id}/{action}")
    counted = answer.get("messages_held", answer.get("messages_canceled"))
    extra = f" ({counted} messages)" if counted is not None else ""
    typer.echo(f"campaign {campaign_id}: {answer['status']}{extra}")


@campaigns_app.command("pause")
def campaigns_pause(
    campaign_id: str, server: ServerOption = None, api_key: KeyOption = None
) -> None:
    """Hold every unsent message of a campaign."""
    _campaign_action("pause", campaign_id, server, api_key)


@campaigns_app.command("resume")
def campaigns_resume(
    campaign_id: str, server: ServerOption = None, api_key: KeyOption = None
) -> None:
    """Resume a paused campaign; unsent messages are rescheduled from now."""
    _campaign_action("resume", campaign_id, server, api_key)


@campaigns_app.command("cancel")
def campaigns_cancel(
    campaign_id: str, server: ServerOption = None, api_key: KeyOption = None
) -> None:
    """Cancel a campaign: its unsent messages become canceled."""
    _campaign_action("cancel", campaign_id, server, api_key)


if __name__ == "__main__":
    app()
