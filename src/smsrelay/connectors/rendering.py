"""Rendering: a compiled connector and messages in, the exact HTTP request out (SPEC §2).

`compile_connector` parses every template of a definition once into small render functions;
`render_request` only walks them, looking values up per message. Each context escapes what
it inserts, so no message value can change the structure of the request:
- JSON bodies are built as Python data and serialised; a JSON string that is exactly one
  placeholder takes the value's type (`template_variables` a list, `segments` a number,
  `unicode` a boolean), a string mixing text and placeholders interpolates text;
- form bodies and query strings are percent-encoded once (lists become repeated keys);
- URL substitutions are percent-encoded as one path segment; literal URL text is kept;
- header values are inserted verbatim but a line break is refused;
- raw bodies use their `escape` setting.
JSON object keys are literal text, never templates. When `auth` produces an Authorization
header it replaces one written under `headers`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus

from smsrelay.connectors.definition import (
    AuthBasic,
    AuthBearer,
    AuthOAuth2,
    ConnectorDefinition,
)
from smsrelay.connectors.errors import DefinitionError, FieldError, MissingParameter, RenderError
from smsrelay.connectors.exchange import HttpRequest, OutboundMessage
from smsrelay.connectors.phone import InvalidPhoneNumber, PhoneFormat, format_phone
from smsrelay.connectors.placeholders import (
    SECRET_PREFIX,
    Template,
    TemplateSyntaxError,
    parse_template,
)
from smsrelay.connectors.text_encoding import TextEncoding, analyse_text


@dataclass(frozen=True, slots=True)
class RenderEnvironment:
    """What rendering needs besides the messages: secrets, this connector's DLR URL, a token.

    `access_token` is the OAuth2 token the caller obtained (connectors with oauth2 auth).
    """

    secrets: Mapping[str, str]
    callback_url: str = ""
    access_token: str | None = None


# ---------------------------------------------------------------- values of one message

_PARAM = "params."
_SECRET = SECRET_PREFIX
_MISSING = object()


class _Values:
    """One message being rendered, with what is derived from it at most once."""

    __slots__ = ("encoding", "env", "message", "slot")

    def __init__(self, message: OutboundMessage, env: RenderEnvironment) -> None:
        self.message = message
        self.env = env
        self.encoding: TextEncoding | None = None
        # the rendered per-message list a batch places into the global template
        self.slot: Any = None


Getter = Callable[[_Values], Any]

# Placeholders whose value is not text: they keep their type in a JSON string that is
# exactly the placeholder, and become text elsewhere.
_TYPED = frozenset({"template_variables", "unicode", "segments"})

# Values that are the same for every message of a connector: they never split a batch.
_CONSTANT_NAMES = frozenset({"callback_url"})


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def _value_getter(name: str, where: str, phone_format: PhoneFormat) -> Getter:
    """The function giving a placeholder's typed value for a message, chosen once.

    Values are str, except template_variables (list[str]), unicode (bool) and segments
    (int). A value the message lacks raises MissingParameter naming `where`.
    """
    if name == "to":
        if phone_format == "e164":
            return lambda values: values.message.to

        def to(values: _Values) -> str:
            try:
                return format_phone(values.message.to, phone_format)
            except InvalidPhoneNumber as exc:
                raise RenderError("invalid_recipient", f"recipient {exc.reason}") from exc

        return to
    if name in ("body", "template_id"):
        return _required_field(name, where)
    if name == "sender":
        return lambda values: values.message.sender or ""
    if name == "entity_id":
        return lambda values: values.message.entity_id or ""
    if name == "campaign_id":
        return lambda values: values.message.campaign_id or ""
    if name == "message_id":
        return lambda values: values.message.message_id
    if name == "template_variables":
        return lambda values: list(values.message.template_variables)
    if name == "callback_url":

        def callback_url(values: _Values) -> str:
            # An empty URL would silently send DLRs nowhere; fail the message visibly.
            if not values.env.callback_url:
                raise MissingParameter("callback_url", where)
            return values.env.callback_url

        return callback_url
    if name in ("unicode", "encoding", "segments"):

        def derived(values: _Values) -> Any:
            encoding = values.encoding
            if encoding is None:
                body = values.message.body
                if body is None:
                    raise MissingParameter("body", where)
                encoding = values.encoding = analyse_text(body)
            return getattr(encoding, name)

        return derived
    if name.startswith((_PARAM, _SECRET)):
        return _lookup(name, where)
    raise DefinitionError([FieldError(where, f"unknown placeholder {{{{{name}}}}}")])


def _required_field(name: str, where: str) -> Getter:
    def required(values: _Values) -> str:
        found: str | None = getattr(values.message, name)
        if found is None:
            raise MissingParameter(name, where)
        return found

    return required


def _lookup(name: str, where: str) -> Getter:
    key = name.split(".", 1)[1]
    if name.startswith(_PARAM):

        def param(values: _Values) -> str:
            found = values.message.params.get(key)
            if found is None:
                raise MissingParameter(name, where)
            return found

        return param

    def secret(values: _Values) -> str:
        found = values.env.secrets.get(key)
        if found is None:
            raise MissingParameter(name, where)
        return found

    return secret


# ---------------------------------------------------------------- compiled templates

TextRender = Callable[[_Values], str]
JsonRender = Callable[[_Values], Any]
FieldRender = Callable[[_Values], list[str]]
Escape = Callable[[str], str]


def _escape_xml(text: str) -> str:
    # XML parsers turn a bare CR into LF, and CR, LF and tab into spaces inside attribute
    # values; character references keep them exactly, in text and attributes alike.
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
        .replace("\r", "&#13;")
        .replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )


def _escape_json(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _short_values_cached(encode: Callable[[str], str]) -> Escape:
    # quote() is slow, and short values (secrets, senders, numbers, ids) recur message
    # after message; message texts rarely repeat and are not kept in memory.
    cached = lru_cache(maxsize=4096)(encode)

    def escape(text: str) -> str:
        return cached(text) if len(text) <= 64 else encode(text)

    return escape


# One segment of a URL path or one query value: every reserved character encoded.
_escape_url = _short_values_cached(lambda text: quote(text, safe=""))
# A form value (application/x-www-form-urlencoded: space as `+`, as urlencode does).
_escape_form = _short_values_cached(lambda text: quote_plus(text, safe=""))


# One encoder for all renders: json.dumps with options builds a new encoder per call.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


_RAW_ESCAPES: dict[str, Escape | None] = {
    "xml": _escape_xml,
    "json": _escape_json,
    "url": _escape_url,
    "none": None,
}


class _Compiler:
    """Parses templates once into render functions, noting every placeholder and its place."""

    def __init__(self, phone_format: PhoneFormat) -> None:
        self.phone_format = phone_format
        self.names: set[str] = set()
        self.global_names: set[str] = set()

    def parse(self, text: str, where: str, *, per_message: bool = False) -> Template:
        try:
            template = parse_template(text)
        except TemplateSyntaxError as exc:
            raise DefinitionError([FieldError(where, str(exc))]) from exc
        self.names |= template.names
        if not per_message:
            self.global_names |= template.names
        return template

    def value(self, name: str, where: str) -> Getter:
        """The typed value of one placeholder."""
        return _value_getter(name, where, self.phone_format)

    def text_value(self, name: str, where: str) -> TextRender:
        """The value of one placeholder as text: lists joined with `,`, `true`/`false`."""
        get = _value_getter(name, where, self.phone_format)
        if name in _TYPED:
            return lambda values: _as_text(get(values))
        return get

    def text(
        self, text: str, where: str, escape: Escape | None = None, *, per_message: bool = False
    ) -> TextRender:
        """A text template, escaping substituted values only."""
        return self.template_text(self.parse(text, where, per_message=per_message), where, escape)

    def template_text(self, template: Template, where: str, escape: Escape | None) -> TextRender:
        """Render function of a parsed text template."""
        if template.is_literal:
            literal = "".join(part for part in template.parts if isinstance(part, str))
            return lambda values: literal
        pieces = tuple(
            part if isinstance(part, str) else self.text_value(part.name, where)
            for part in template.parts
        )
        if len(pieces) == 1:
            only = pieces[0]
            assert not isinstance(only, str)
            if escape is None:
                return only
            return lambda values: escape(only(values))
        if escape is None:
            return lambda values: "".join(
                [piece if isinstance(piece, str) else piece(values) for piece in pieces]
            )
        return lambda values: "".join(
            [piece if isinstance(piece, str) else escape(piece(values)) for piece in pieces]
        )

    def field(self, text: str, where: str) -> FieldRender:
        """A form or query value; a single list placeholder becomes repeated keys."""
        template = self.parse(text, where)
        single = template.single
        if single is not None and single.name in _TYPED:
            get = self.value(single.name, where)

            def typed(values: _Values) -> list[str]:
                found = get(values)
                if isinstance(found, list):
                    return [_as_text(v) for v in found]
                return [_as_text(found)]

            return typed
        render = self.template_text(template, where, None)
        return lambda values: [render(values)]

    def json(
        self, value: Any, where: str, slot: tuple[str, ...] | None, *, per_message: bool = False
    ) -> tuple[JsonRender | None, Any]:
        """Compile a JSON template into (render, None) or, if nothing varies, (None, constant).

        `slot` is the key path where a batch list goes (() = here). Constant subtrees are
        built once and inserted as they are, so rendering is a walk over what varies.
        """
        if slot == ():
            return _render_slot, None
        if isinstance(value, str):
            template = self.parse(value, where, per_message=per_message)
            if template.is_literal:
                return None, value
            single = template.single
            if single is not None:
                return self.value(single.name, where), None
            return self.template_text(template, where, None), None
        if isinstance(value, dict):
            keys = list(value)
            if slot and slot[0] not in value:
                keys.append(slot[0])
            members = []
            for key in keys:
                child_slot = slot[1:] if slot and slot[0] == key else None
                render, constant = self.json(
                    value.get(key, {}), f"{where}.{key}", child_slot, per_message=per_message
                )
                members.append((key, render, constant))
            if all(render is None for _, render, _ in members):
                return None, {key: constant for key, _, constant in members}
            return _render_object(tuple(members)), None
        if isinstance(value, list):
            items = [
                self.json(v, f"{where}[{i}]", None, per_message=per_message)
                for i, v in enumerate(value)
            ]
            if all(render is None for render, _ in items):
                return None, [constant for _, constant in items]
            return _render_array(tuple(items)), None
        return None, value

    def json_render(
        self, value: Any, where: str, slot: tuple[str, ...] | None, *, per_message: bool = False
    ) -> JsonRender:
        """Like `json`, always as a render function."""
        render, constant = self.json(value, where, slot, per_message=per_message)
        if render is None:
            return lambda values: constant
        return render


def _render_slot(values: _Values) -> Any:
    return values.slot


def _render_object(members: tuple[tuple[str, JsonRender | None, Any], ...]) -> JsonRender:
    # Constants are inserted without a call; only varying members are rendered.
    def render_object(values: _Values) -> dict[str, Any]:
        return {
            key: constant if render is None else render(values) for key, render, constant in members
        }

    return render_object


def _render_array(items: tuple[tuple[JsonRender | None, Any], ...]) -> JsonRender:
    def render_array(values: _Values) -> list[Any]:
        return [constant if render is None else render(values) for render, constant in items]

    return render_array


# ---------------------------------------------------------------- the compiled connector

BodyRender = Callable[[_Values, str | None], bytes]


@dataclass(frozen=True, slots=True)
class _Field:
    """One form field or query parameter: its encoded `key=` and its value(s)."""

    key: str
    render: FieldRender


@dataclass(frozen=True, slots=True, eq=False)
class CompiledConnector:
    """A connector definition with every template parsed, ready to render many messages.

    `names` holds every placeholder the connector uses (e.g. to check a message carries a
    body or template id before queueing it).
    """

    definition: ConnectorDefinition
    names: frozenset[str]
    batch_getters: tuple[Getter, ...]
    method: str
    url: TextRender
    query: tuple[_Field, ...]
    headers: tuple[tuple[str, TextRender], ...]
    content_type: str | None
    auth_header: Callable[[_Values, RenderEnvironment], str] | None
    body_type: str
    json_body: JsonRender | None
    form_body: tuple[_Field, ...]
    raw_body: TextRender | None
    batch_item: JsonRender | None
    batch_value: JsonRender | None
    batch_text: TextRender | None

    @property
    def batch_size(self) -> int:
        """How many messages one request may carry (1 without `batch`)."""
        batch = self.definition.batch
        return batch.size if batch is not None else 1


def compile_connector(definition: ConnectorDefinition) -> CompiledConnector:
    """Parse every template of a validated definition once, for fast repeated rendering."""
    compiler = _Compiler(definition.request.phone_format)
    req = definition.request
    batch = definition.batch
    body = req.body
    slot_target = body.type if batch is not None else None

    url = _compile_url(compiler, req.url)
    query = _compile_fields(
        compiler,
        "request.query",
        req.query,
        batch.path if batch is not None and slot_target == "none" else None,
        _query_key,
    )
    headers = tuple(
        (name, compiler.text(value, f"request.headers.{name}"))
        for name, value in req.headers.items()
    )
    user_header_names = {name.lower() for name in req.headers}
    content_type = body.effective_content_type
    if "content-type" in user_header_names:
        content_type = None

    json_body: JsonRender | None = None
    form_body: tuple[_Field, ...] = ()
    raw_body: TextRender | None = None
    if body.type == "json":
        slot = batch.path_keys if batch is not None else None
        json_body = compiler.json_render(body.json_template, "request.body.json", slot)
    elif body.type == "form":
        form_body = _compile_fields(
            compiler,
            "request.body.form",
            body.form or {},
            batch.path if batch is not None else None,
            _form_key,
        )
    elif body.type == "raw":
        raw_body = compiler.text(body.raw or "", "request.body.raw", _RAW_ESCAPES[body.escape])

    batch_item: JsonRender | None = None
    batch_value: JsonRender | None = None
    batch_text: TextRender | None = None
    if batch is not None:
        if batch.mode == "items":
            batch_item = compiler.json_render(batch.item, "batch.item", None, per_message=True)
        else:
            value_text = batch.value or ""
            batch_value = compiler.json_render(value_text, "batch.value", None, per_message=True)
            batch_text = compiler.text(value_text, "batch.value", per_message=True)

    auth_header = _compile_auth(compiler, definition)

    batch_names = sorted(
        name
        for name in compiler.global_names
        if not name.startswith(_SECRET) and name not in _CONSTANT_NAMES
    )
    return CompiledConnector(
        definition=definition,
        names=frozenset(compiler.names),
        batch_getters=tuple(compiler.value(name, "") for name in batch_names),
        method=req.method,
        url=url,
        query=query,
        headers=headers,
        content_type=content_type,
        auth_header=auth_header,
        body_type=body.type,
        json_body=json_body,
        form_body=form_body,
        raw_body=raw_body,
        batch_item=batch_item,
        batch_value=batch_value,
        batch_text=batch_text,
    )


def _compile_url(compiler: _Compiler, url: str) -> TextRender:
    where = "request.url"
    template = compiler.parse(url, where)
    parts = template.parts
    # A URL may start with a secret holding the account's base URL (Infobip `{baseUrl}`):
    # that value is a URL prefix, written by the connector's owner, and goes in as written.
    base: TextRender | None = None
    if parts and not isinstance(parts[0], str) and parts[0].is_secret:
        base_name = parts[0].name
        base = compiler.text_value(base_name, where)
        parts = parts[1:]
    rest = compiler.template_text(Template(url, parts), where, _escape_url)
    if base is None:
        return rest
    prefix = base
    return lambda values: prefix(values) + rest(values)


def _query_key(key: str) -> str:
    return quote(key, safe="")


def _form_key(key: str) -> str:
    return quote_plus(key, safe="")


def _compile_fields(
    compiler: _Compiler,
    where: str,
    fields: Mapping[str, str | list[str]],
    slot_key: str | None,
    encode_key: Callable[[str], str],
) -> tuple[_Field, ...]:
    compiled: list[_Field] = []
    for key, value in fields.items():
        if key == slot_key:
            compiled.append(_Field(encode_key(key) + "=", _render_slot))
        elif isinstance(value, list):
            renders = [compiler.field(v, f"{where}.{key}[{i}]") for i, v in enumerate(value)]
            compiled.append(_Field(encode_key(key) + "=", _concatenate(renders)))
        else:
            compiled.append(_Field(encode_key(key) + "=", compiler.field(value, f"{where}.{key}")))
    if slot_key is not None and slot_key not in fields:
        compiled.append(_Field(encode_key(slot_key) + "=", _render_slot))
    return tuple(compiled)


def _concatenate(renders: list[FieldRender]) -> FieldRender:
    def render(values: _Values) -> list[str]:
        out: list[str] = []
        for part in renders:
            out.extend(part(values))
        return out

    return render


def _compile_auth(
    compiler: _Compiler, definition: ConnectorDefinition
) -> Callable[[_Values, RenderEnvironment], str] | None:
    auth = definition.request.auth
    if isinstance(auth, AuthBasic):
        username = compiler.text(auth.username, "request.auth.username")
        password = compiler.text(auth.password, "request.auth.password")

        def basic(values: _Values, env: RenderEnvironment) -> str:
            pair = f"{username(values)}:{password(values)}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")

        return basic
    if isinstance(auth, AuthBearer):
        token = compiler.text(auth.token, "request.auth.token")
        return lambda values, env: "Bearer " + token(values)
    if isinstance(auth, AuthOAuth2):
        # send_as concerns the client credentials at the token endpoint (see connectors.oauth);
        # the access token always reaches the provider as a Bearer header.
        return lambda values, env: "Bearer " + _access_token(env)
    return None


def _access_token(env: RenderEnvironment) -> str:
    if not env.access_token:
        raise RenderError(
            "oauth2_token_missing",
            "the connector uses OAuth2 but no access token was obtained for this request",
        )
    return env.access_token


# ---------------------------------------------------------------- rendering


def batch_key(compiled: CompiledConnector, message: OutboundMessage) -> tuple[object, ...]:
    """A key such that messages with equal keys may share one request.

    It holds the values of every placeholder used outside the per-message part of a batch
    (URL, query, headers, global body fields; in modes values/join the body and sender are
    global), so only messages with the same body, sender and parameters share a request.
    A missing value is part of the key too: such messages group together and fail alike.
    """
    values = _Values(message, _NO_SECRETS)
    return _batch_key(compiled, values)


_NO_SECRETS = RenderEnvironment(secrets={})


def _batch_key(compiled: CompiledConnector, values: _Values) -> tuple[object, ...]:
    key: list[object] = []
    for get in compiled.batch_getters:
        try:
            found = get(values)
        except RenderError:
            found = _MISSING
        key.append(tuple(found) if isinstance(found, list) else found)
    return tuple(key)


def render_request(
    compiled: CompiledConnector, messages: Sequence[OutboundMessage], env: RenderEnvironment
) -> HttpRequest:
    """Render the HTTP request that sends `messages` (one, or a batch of equal batch key).

    Raises MissingParameter (reason `missing_parameter:NAME`) or RenderError for a message
    that cannot be rendered (`render_batch` leaves such messages out instead), and
    ValueError if the messages cannot share one request.
    """
    if not messages:
        raise ValueError("render_request needs at least one message")
    batch = compiled.definition.batch
    if batch is None:
        if len(messages) != 1:
            raise ValueError(
                f"connector {compiled.definition.name!r} has no batch setting: "
                f"render one message per request (got {len(messages)})"
            )
        values = _Values(messages[0], env)
        return _render(compiled, values, env, (messages[0].message_id,))
    _check_batch_size(compiled, len(messages))
    all_values = [_Values(message, env) for message in messages]
    part = _slot_part(compiled)
    return _render_batch_request(compiled, all_values, [part(values) for values in all_values], env)


def _check_batch_size(compiled: CompiledConnector, count: int) -> None:
    batch = compiled.definition.batch
    assert batch is not None
    if count > batch.size:
        raise ValueError(f"batch.size is {batch.size}; got {count} messages")


def _render_batch_request(
    compiled: CompiledConnector, all_values: list[_Values], parts: list[Any], env: RenderEnvironment
) -> HttpRequest:
    """The request carrying these messages, their parts of the batch already rendered."""
    first = all_values[0]
    if len(all_values) > 1:
        expected = _batch_key(compiled, first)
        for values in all_values[1:]:
            if _batch_key(compiled, values) != expected:
                raise ValueError(
                    f"message {values.message.message_id!r} has a different batch key than "
                    f"{first.message.message_id!r}; group messages by batch_key() first"
                )
    first.slot = _assemble_slot(compiled, parts)
    return _render(compiled, first, env, tuple(values.message.message_id for values in all_values))


@dataclass(frozen=True, slots=True)
class RenderedBatch:
    """The request for the messages that rendered, and why the others could not."""

    request: HttpRequest | None
    failures: tuple[tuple[str, RenderError], ...]


def render_batch(
    compiled: CompiledConnector, messages: Sequence[OutboundMessage], env: RenderEnvironment
) -> RenderedBatch:
    """Like render_request, but a message that cannot be rendered is left out, not fatal.

    `failures` pairs each left-out message id with its error; when the shared part of the
    request cannot be rendered every message fails with that error.
    """
    if compiled.definition.batch is None or len(messages) <= 1:
        try:
            return RenderedBatch(render_request(compiled, messages, env), ())
        except RenderError as exc:
            return RenderedBatch(None, tuple((m.message_id, exc) for m in messages))
    part = _slot_part(compiled)
    renderable: list[_Values] = []
    parts: list[Any] = []
    failures: list[tuple[str, RenderError]] = []
    for message in messages:
        values = _Values(message, env)
        try:
            parts.append(part(values))
        except RenderError as exc:
            failures.append((message.message_id, exc))
        else:
            renderable.append(values)
    if not renderable:
        return RenderedBatch(None, tuple(failures))
    _check_batch_size(compiled, len(renderable))
    try:
        # Each message's part is rendered once, here: the request is assembled from them.
        request = _render_batch_request(compiled, renderable, parts, env)
    except RenderError as exc:
        failures.extend((values.message.message_id, exc) for values in renderable)
        return RenderedBatch(None, tuple(failures))
    return RenderedBatch(request, tuple(failures))


def _slot_part(compiled: CompiledConnector) -> Callable[[_Values], Any]:
    """What renders one message's part of a batch: an item, a value, or a text to join."""
    batch = compiled.definition.batch
    assert batch is not None
    if batch.mode == "items":
        item = compiled.batch_item
        assert item is not None
        return item
    if batch.mode == "values" and compiled.body_type == "json":
        value = compiled.batch_value
        assert value is not None
        return value
    text = compiled.batch_text
    assert text is not None
    return text


def _assemble_slot(compiled: CompiledConnector, parts: list[Any]) -> Any:
    """The batch's slot content from its messages' parts (`_slot_part`), in order."""
    batch = compiled.definition.batch
    assert batch is not None
    if batch.mode in ("items", "values"):
        return parts
    joined = batch.delimiter.join(parts)
    return joined if compiled.body_type == "json" else [joined]


def _render(
    compiled: CompiledConnector,
    values: _Values,
    env: RenderEnvironment,
    message_ids: tuple[str, ...],
) -> HttpRequest:
    try:
        return HttpRequest(
            method=compiled.method,
            url=_render_url(compiled, values, env),
            headers=_render_headers(compiled, values, env),
            body=_render_body(compiled, values, env),
            message_ids=message_ids,
        )
    except UnicodeEncodeError as exc:
        raise RenderError(
            "invalid_text",
            "a value contains a lone UTF-16 surrogate, which cannot be sent as UTF-8",
        ) from exc


def _render_url(compiled: CompiledConnector, values: _Values, env: RenderEnvironment) -> str:
    url = compiled.url(values)
    query_pairs = _render_fields(compiled.query, values, _escape_url)
    if not query_pairs:
        return url
    joined = "&".join(query_pairs)
    if "?" not in url:
        return url + "?" + joined
    if url.endswith(("?", "&")):
        return url + joined
    return url + "&" + joined


def _render_headers(
    compiled: CompiledConnector, values: _Values, env: RenderEnvironment
) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for name, render in compiled.headers:
        value = render(values)
        if "\n" in value or "\r" in value or "\0" in value:
            raise RenderError(
                "invalid_header_value",
                f"header {name!r} would contain a line break or NUL after substitution; "
                "header values must be one line",
            )
        headers.append((name, value))
    if compiled.auth_header is not None:
        authorization = compiled.auth_header(values, env)
        headers = [(k, v) for k, v in headers if k.lower() != "authorization"]
        headers.append(("Authorization", authorization))
    if compiled.content_type is not None:
        headers.append(("Content-Type", compiled.content_type))
    return tuple(headers)


def _render_body(compiled: CompiledConnector, values: _Values, env: RenderEnvironment) -> bytes:
    if compiled.json_body is not None:
        document = compiled.json_body(values)
        return _JSON_ENCODER.encode(document).encode()
    if compiled.body_type == "form":
        pairs = _render_fields(compiled.form_body, values, _escape_form)
        return "&".join(pairs).encode("ascii")
    if compiled.raw_body is not None:
        return compiled.raw_body(values).encode()
    return b""


def _render_fields(
    fields: tuple[_Field, ...], values: _Values, encode: Callable[[str], str]
) -> list[str]:
    pairs: list[str] = []
    for field in fields:
        prefix = field.key
        for value in field.render(values):
            pairs.append(prefix + encode(value))
    return pairs
