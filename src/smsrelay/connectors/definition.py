"""The connector definition: one schema for JSON and YAML documents (SPEC §2).

`parse_definition` is the single entry point: it validates the shape with pydantic, then
checks every template, path and cross-field rule, and reports all problems at once as
`FieldError`s whose path names the field (`request.body.json.text`).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from smsrelay.connectors.errors import DefinitionError, FieldError
from smsrelay.connectors.placeholders import (
    Template,
    TemplateSyntaxError,
    parse_template,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
SECRET_MASK = "***"


def _scalar_to_text(value: Any) -> Any:
    """YAML gives `1`, `true`, `1.5` for unquoted values; templates are text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _scalar_map(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _scalar_to_text(v) for k, v in value.items()}
    return value


def _scalar_list(value: Any) -> Any:
    if isinstance(value, list):
        return [_scalar_to_text(v) for v in value]
    if isinstance(value, str | int | float | bool):
        return [_scalar_to_text(value)]
    return value


TextMap = Annotated[dict[str, str], BeforeValidator(_scalar_map)]
Text = Annotated[str, BeforeValidator(_scalar_to_text)]
TextList = Annotated[list[str], BeforeValidator(_scalar_list)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# ---------------------------------------------------------------- request.auth


class AuthNone(_Model):
    type: Literal["none"] = "none"


class AuthBasic(_Model):
    type: Literal["basic"]
    username: Text
    password: Text


class AuthBearer(_Model):
    type: Literal["bearer"]
    token: Text


class AuthOAuth2(_Model):
    """OAuth2 client credentials; the dispatcher fetches and caches the token."""

    type: Literal["oauth2"]
    token_url: str
    client_id: Text
    client_secret: Text
    scope: Text | None = None
    extra: TextMap = Field(default_factory=dict)
    # How the client credentials reach the token endpoint: HTTP Basic (header) or form
    # fields (body). The access token always goes to the provider as `Bearer`.
    send_as: Literal["header", "body"] = "header"


Auth = Annotated[AuthNone | AuthBasic | AuthBearer | AuthOAuth2, Field(discriminator="type")]


# ---------------------------------------------------------------- request.body

DEFAULT_CONTENT_TYPES = {
    "form": "application/x-www-form-urlencoded",
    "json": "application/json",
    "raw": "text/plain; charset=utf-8",
}


class Body(_Model):
    type: Literal["none", "form", "json", "raw"] = "none"
    json_template: Any = Field(default=None, alias="json")
    form: dict[str, Text | list[Text]] | None = None
    raw: str | None = None
    content_type: str | None = None
    escape: Literal["xml", "json", "url", "none"] = "none"

    @model_validator(mode="before")
    @classmethod
    def _infer_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data:
            present = [k for k in ("json", "form", "raw") if data.get(k) is not None]
            if len(present) == 1:
                return {**data, "type": present[0]}
        return data

    @property
    def effective_content_type(self) -> str | None:
        if self.type == "none":
            return None
        return self.content_type or DEFAULT_CONTENT_TYPES[self.type]


class Request(_Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str
    query: TextMap = Field(default_factory=dict)
    headers: TextMap = Field(default_factory=dict)
    auth: Auth = Field(default_factory=AuthNone)
    body: Body = Field(default_factory=Body)
    phone_format: Literal["e164", "e164_digits", "national"] = "e164"
    timeout_seconds: float = Field(default=15, gt=0, le=300)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


# ---------------------------------------------------------------- batch


class Batch(_Model):
    """How several messages share one request; absent means one request per message."""

    size: int = Field(default=1000, ge=1, le=100_000)
    mode: Literal["items", "values", "join"] = "items"
    path: str = "messages"
    item: Any = None
    value: Text | None = None
    delimiter: str = ","

    @property
    def path_keys(self) -> tuple[str, ...]:
        """The dotted `path` as keys; () means the body itself is the list."""
        return tuple(self.path.split(".")) if self.path else ()


# ---------------------------------------------------------------- response


class Predicate(_Model):
    """A test on one value of the response: `{path, equals | in | matches}`."""

    path: str
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    matches: str | None = None

    @model_validator(mode="after")
    def _exactly_one_test(self) -> Predicate:
        given = [
            n
            for n, v in (("equals", self.equals), ("in", self.in_), ("matches", self.matches))
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of equals, in or matches"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


StatusSpec = int | str


class Response(_Model):
    success_status: list[StatusSpec] = Field(default_factory=lambda: list[StatusSpec](["2xx"]))
    success_when: Predicate | None = None
    retry_when: Predicate | None = None
    message_id: str | None = None
    error: str | None = None
    retry_status: list[StatusSpec] = Field(default_factory=lambda: list[StatusSpec]([429, "5xx"]))

    @field_validator("success_status", "retry_status", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, int | str) else v

    @field_validator("success_status", "retry_status")
    @classmethod
    def _status_codes(cls, v: list[StatusSpec]) -> list[StatusSpec]:
        problems: list[str] = []
        for item in v:
            if isinstance(item, int):
                if not 100 <= item <= 599:
                    problems.append(f"status code {item} is not between 100 and 599")
            elif not re.fullmatch(r"[1-5]xx|[1-5][0-9]{2}", item):
                problems.append(f"{item!r} is not a status code (e.g. 202) or class (e.g. 2xx)")
        if problems:
            raise ValueError("; ".join(problems))
        return [int(i) if isinstance(i, str) and i.isdigit() else i for i in v]


# ---------------------------------------------------------------- delivery


class VerifyNone(_Model):
    type: Literal["none"] = "none"


class VerifyBasic(_Model):
    type: Literal["basic"]
    username: Text
    password: Text


class VerifyHeader(_Model):
    type: Literal["header"]
    name: str
    value: Text


class VerifyHmac(_Model):
    type: Literal["hmac"]
    header: str
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    secret: Text
    over: Literal["body", "url+params"] = "body"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""  # e.g. "sha256=" before the digest in the header


Verify = Annotated[
    VerifyNone | VerifyBasic | VerifyHeader | VerifyHmac, Field(discriminator="type")
]


class Delivery(_Model):
    """How to read the provider's delivery-report callbacks."""

    reports: str = "$"
    decode: list[str] = Field(default_factory=list)
    message_id: str
    match: Literal["provider_id", "message_id"] = "provider_id"
    recipient: str | None = None
    status: str
    reason: str | None = None
    error_code: str | None = None
    timestamp: str | None = None
    delivered: TextList = Field(default_factory=lambda: ["delivered"])
    failed: TextList = Field(default_factory=list)
    pending: TextList = Field(default_factory=list)
    verify: Verify = Field(default_factory=VerifyNone)
    window_hours: float = Field(default=72, gt=0, le=24 * 30)


# ---------------------------------------------------------------- limits


class RateLimit(_Model):
    per_second: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=32, ge=1, le=1024)
    unit: Literal["messages", "segments"] = "messages"

    @property
    def effective_burst(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, int(self.per_second or 1))


class Retry(_Model):
    max_attempts: int = Field(default=6, ge=1, le=100)
    initial_seconds: float = Field(default=1, gt=0, le=3600)
    max_seconds: float = Field(default=300, gt=0, le=86_400)


class ConnectorDefinition(_Model):
    """One HTTP SMS provider account, as the user wrote it."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    request: Request
    batch: Batch | None = None
    response: Response = Field(default_factory=Response)
    delivery: Delivery | None = None
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    retry: Retry = Field(default_factory=Retry)
    secrets: TextMap = Field(default_factory=dict)

    def export(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        """The definition as a plain document (aliases as written), secrets masked."""
        doc = self.model_dump(by_alias=True, exclude_defaults=False, mode="json")
        if mask_secrets:
            doc["secrets"] = dict.fromkeys(self.secrets, SECRET_MASK)
        exported: dict[str, Any] = _drop_nones(doc)
        return exported


def _drop_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


# ---------------------------------------------------------------- loading


# No connector needs more values than this; YAML aliases (`*name`) can make a short text
# expand into billions of them, which validation would then walk (a "billion laughs").
MAX_DOCUMENT_VALUES = 100_000


def load_document(text: str) -> Any:
    """Read a JSON or YAML document (JSON is tried first; YAML is a superset)."""
    stripped = text.lstrip()
    try:
        if stripped.startswith("{"):
            try:
                return _bounded(json.loads(text))
            except json.JSONDecodeError:
                pass
        return _bounded(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(
            [FieldError("", f"not valid JSON or YAML{where}: {problem}")]
        ) from exc
    except RecursionError:
        raise DefinitionError([FieldError("", "the document is nested too deeply")]) from None


def _bounded(document: Any) -> Any:
    """`document`, if it holds at most MAX_DOCUMENT_VALUES values (aliases counted each time)."""
    pending, seen = [document], 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > MAX_DOCUMENT_VALUES:
            raise DefinitionError(
                [
                    FieldError(
                        "",
                        f"the document expands to more than {MAX_DOCUMENT_VALUES} values; "
                        "YAML aliases (*name) that repeat large parts are refused",
                    )
                ]
            )
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return document


def load_definition(text: str) -> ConnectorDefinition:
    """Parse and validate a connector definition from JSON or YAML text."""
    return parse_definition(load_document(text))


def parse_definition(data: Any) -> ConnectorDefinition:
    """Validate a connector document; raise DefinitionError listing every problem."""
    if not isinstance(data, Mapping):
        raise DefinitionError(
            [
                FieldError(
                    "", f"a connector definition is a mapping (object), got {type(data).__name__}"
                )
            ]
        )
    try:
        definition = ConnectorDefinition.model_validate(dict(data))
    except ValidationError as exc:
        raise DefinitionError(_field_errors(exc)) from exc
    problems = list(check_definition(definition))
    if problems:
        raise DefinitionError(problems)
    return definition


_ALL_KEYS: set[str] = set()


def _collect_keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        _ALL_KEYS.add(field.alias or name)
        for sub in _submodels(field.annotation):
            _collect_keys(sub, seen)


def _submodels(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _submodels(arg)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not annotation:
        yield from _submodels(origin)


_collect_keys(ConnectorDefinition, set())

_TAGS = {"none", "basic", "bearer", "oauth2", "header", "hmac"}


def _loc_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        # discriminated unions add the tag to the location: request.auth.basic.username
        if item in _TAGS and i > 0 and loc[i - 1] in ("auth", "verify"):
            continue
        if item.startswith(("function-", "tagged-union")):
            continue
        parts.append(("." if parts else "") + item)
    return "".join(parts)


def _union_tag(model: type[BaseModel]) -> object:
    field = model.model_fields.get("type")
    args = get_args(field.annotation) if field is not None else ()
    return args[0] if args else None


def _keys_at(loc: tuple[int | str, ...]) -> set[str]:
    """The keys accepted by the object at `loc` (empty if it cannot be told)."""
    model: type[BaseModel] = ConnectorDefinition
    i = 0
    while i < len(loc):
        item = loc[i]
        field = next((f for n, f in model.model_fields.items() if item in (n, f.alias)), None)
        if field is None:
            return set()
        subs = list(dict.fromkeys(_submodels(field.annotation)))
        if len(subs) > 1 and i + 1 < len(loc):  # a tagged union: the next item is the tag
            tag = loc[i + 1]
            subs = [m for m in subs if _union_tag(m) == tag]
            i += 1
        if len(subs) != 1:
            return set()
        model = subs[0]
        i += 1
    return {f.alias or n for n, f in model.model_fields.items()}


def _field_errors(exc: ValidationError) -> list[FieldError]:
    errors: list[FieldError] = []
    for err in exc.errors():
        path = _loc_path(tuple(err["loc"]))
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(err["loc"][-1])
            # suggest a key valid at this place: a key valid elsewhere (`secret` of an HMAC
            # verifier for a misplaced top-level `secret`) would only mislead
            candidates = _keys_at(tuple(err["loc"][:-1])) or _ALL_KEYS
            close = difflib.get_close_matches(key, sorted(candidates - {key}), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            errors.append(FieldError(path, f"unknown key {key!r}{hint}"))
        elif kind == "missing":
            errors.append(FieldError(path, "is required"))
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            errors.append(
                FieldError(
                    path, f"unknown type {ctx.get('tag')!r}; accepted: {ctx.get('expected_tags')}"
                )
            )
        elif kind == "string_pattern_mismatch" and path == "name":
            errors.append(
                FieldError(
                    path,
                    f"{err['input']!r} is not a valid name: use 1-64 characters a-z, 0-9, _ or -, "
                    "starting with a letter or digit",
                )
            )
        else:
            message = err["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            got = err.get("input")
            if kind not in ("value_error",) and isinstance(got, str | int | float | bool):
                message += f" (got {got!r})"
            errors.append(FieldError(path, message))
    return errors


# ---------------------------------------------------------------- semantic checks


def template_fields(definition: ConnectorDefinition) -> Iterator[tuple[str, str, str]]:
    """Every template string in the definition: (path, text, scope).

    scope is `message` where message placeholders may be used, `secrets` where only
    `{{secret.*}}` makes sense (auth, verification), and `item` for batch item templates.
    """
    req = definition.request
    yield "request.url", req.url, "message"
    for k, v in req.query.items():
        yield f"request.query.{k}", v, "message"
    for k, v in req.headers.items():
        yield f"request.headers.{k}", v, "message"
    auth = req.auth
    if isinstance(auth, AuthBasic):
        yield "request.auth.username", auth.username, "secrets"
        yield "request.auth.password", auth.password, "secrets"
    elif isinstance(auth, AuthBearer):
        yield "request.auth.token", auth.token, "secrets"
    elif isinstance(auth, AuthOAuth2):
        yield "request.auth.token_url", auth.token_url, "secrets"
        yield "request.auth.client_id", auth.client_id, "secrets"
        yield "request.auth.client_secret", auth.client_secret, "secrets"
        if auth.scope is not None:
            yield "request.auth.scope", auth.scope, "secrets"
        for k, v in auth.extra.items():
            yield f"request.auth.extra.{k}", v, "secrets"
    body = req.body
    if body.type == "json":
        yield from _json_strings("request.body.json", body.json_template, "message")
    elif body.type == "form" and body.form is not None:
        for k, fv in body.form.items():
            if isinstance(fv, list):
                for i, item in enumerate(fv):
                    yield f"request.body.form.{k}[{i}]", item, "message"
            else:
                yield f"request.body.form.{k}", fv, "message"
    elif body.type == "raw" and body.raw is not None:
        yield "request.body.raw", body.raw, "message"
    if definition.batch is not None:
        if definition.batch.item is not None:
            yield from _json_strings("batch.item", definition.batch.item, "item")
        if definition.batch.value is not None:
            yield "batch.value", definition.batch.value, "item"
    if definition.delivery is not None:
        verify = definition.delivery.verify
        if isinstance(verify, VerifyBasic):
            yield "delivery.verify.username", verify.username, "secrets"
            yield "delivery.verify.password", verify.password, "secrets"
        elif isinstance(verify, VerifyHeader):
            yield "delivery.verify.value", verify.value, "secrets"
        elif isinstance(verify, VerifyHmac):
            yield "delivery.verify.secret", verify.secret, "secrets"


def _json_strings(path: str, value: Any, scope: str) -> Iterator[tuple[str, str, str]]:
    if isinstance(value, str):
        yield path, value, scope
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _json_strings(f"{path}.{k}", v, scope)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_strings(f"{path}[{i}]", v, scope)


def parse_all_templates(definition: ConnectorDefinition) -> dict[str, Template]:
    """Parse every template of a (validated) definition, keyed by field path."""
    return {path: parse_template(text) for path, text, _ in template_fields(definition)}


def check_definition(definition: ConnectorDefinition) -> Iterator[FieldError]:
    """Cross-field rules pydantic cannot express; yields every problem found."""
    names: set[str] = set()
    unparsed = False
    for path, text, scope in template_fields(definition):
        try:
            template = parse_template(text)
        except TemplateSyntaxError as exc:
            yield FieldError(path, str(exc))
            unparsed = True
            continue
        for ph in template.placeholders:
            if ph.is_secret and ph.key not in definition.secrets:
                yield FieldError(
                    path,
                    f"secret {ph.key!r} is not defined; add it under secrets "
                    f"(defined: {', '.join(sorted(definition.secrets)) or 'none'})",
                )
            elif scope == "secrets" and not ph.is_secret:
                yield FieldError(
                    path,
                    f"only {{{{secret.NAME}}}} placeholders are allowed here, not {{{{{ph.name}}}}}",
                )
        names |= template.names
    body_errors = list(_check_body(definition.request.body))
    # A template that did not parse, or a body of the wrong type, probably holds the {{to}}
    # or {{body}} being asked for; its own error is the one to fix.
    unparsed = unparsed or bool(body_errors)
    if "to" not in names and not unparsed:
        yield FieldError(
            "request",
            "the connector never uses the recipient: put {{to}} (or $$To, Moesms_destination) "
            "in the URL, query, body or batch item",
        )
    if "body" not in names and "template_id" not in names and not unparsed:
        yield FieldError(
            "request",
            "the connector never uses the message: put {{body}} (or $$Body, Moesms_message) "
            "or {{template_id}} in the URL, query, body or batch item",
        )
    yield from _check_url(definition.request.url)
    yield from body_errors
    if definition.batch is not None:
        yield from _check_batch(definition)
    yield from _check_paths(definition)


def _check_url(url: str) -> Iterator[FieldError]:
    if not re.match(r"^(https?://|\{\{\s*secret\.)", url, re.IGNORECASE):
        yield FieldError("request.url", f"must start with http:// or https:// (got {url[:40]!r})")


def _check_body(body: Body) -> Iterator[FieldError]:
    given = {
        "json": body.json_template is not None,
        "form": body.form is not None,
        "raw": body.raw is not None,
    }
    if body.type != "none" and not given[body.type]:
        yield FieldError(f"request.body.{body.type}", f"is required when body type is {body.type}")
    for key, present in given.items():
        if present and key != body.type:
            yield FieldError(
                f"request.body.{key}",
                f"is not used when body type is {body.type}; set type: {key} or remove it",
            )
    if body.type == "json" and not isinstance(body.json_template, dict | list):
        yield FieldError("request.body.json", "must be an object or a list")
    if body.escape != "none" and body.type != "raw":
        yield FieldError("request.body.escape", "applies to raw bodies only")


def _check_batch(definition: ConnectorDefinition) -> Iterator[FieldError]:
    batch = definition.batch
    assert batch is not None
    body = definition.request.body
    if batch.path and not re.fullmatch(r"[^.\s]+(\.[^.\s]+)*", batch.path):
        yield FieldError(
            "batch.path", f"{batch.path!r} is not a dotted key path like messages or data.to"
        )
    if batch.mode == "items":
        if batch.item is None:
            yield FieldError(
                "batch.item", "is required for mode items (the template of one list element)"
            )
        if body.type != "json":
            yield FieldError(
                "batch.mode",
                "items needs a JSON body; form and query sends take mode values or join",
            )
    else:
        if batch.value is None:
            yield FieldError(
                "batch.value", f'is required for mode {batch.mode} (e.g. "{{{{to}}}}")'
            )
        if batch.item is not None:
            yield FieldError("batch.item", f"is not used with mode {batch.mode}; use batch.value")
        if body.type == "raw":
            yield FieldError("batch.mode", f"{batch.mode} cannot place a list in a raw body")
    if batch.mode == "join" and not batch.delimiter:
        yield FieldError("batch.delimiter", "must not be empty")
    if body.type in ("form", "none") and not batch.path:
        yield FieldError(
            "batch.path", "names the form field or query parameter that carries the list"
        )
    if body.type == "json" and not batch.path and body.json_template not in (None, {}, []):
        yield FieldError(
            "batch.path",
            "is empty, so the body is the list itself; remove request.body.json keys or set a path",
        )
    if body.type == "json" and batch.path_keys and isinstance(body.json_template, dict):
        node: Any = body.json_template
        for key in batch.path_keys[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                yield FieldError(
                    "batch.path", f"{batch.path!r} crosses a non-object value in request.body.json"
                )
                break


def _check_paths(definition: ConnectorDefinition) -> Iterator[FieldError]:
    from smsrelay.connectors.paths import PathSyntaxError, compile_value_path

    def check(path_name: str, expr: str | None, *, relative: bool = False) -> Iterator[FieldError]:
        if expr is None:
            return
        try:
            compile_value_path(expr, allow_parent=relative)
        except PathSyntaxError as exc:
            yield FieldError(path_name, str(exc))

    resp = definition.response
    yield from check("response.message_id", resp.message_id)
    yield from check("response.error", resp.error)
    for name, pred in (("success_when", resp.success_when), ("retry_when", resp.retry_when)):
        if pred is not None:
            yield from check(f"response.{name}.path", pred.path)
            if pred.matches is not None:
                yield from _check_regex(f"response.{name}.matches", pred.matches)
    d = definition.delivery
    if d is not None:
        yield from check("delivery.reports", d.reports)
        for i, p in enumerate(d.decode):
            yield from check(f"delivery.decode[{i}]", p)
        for field in ("message_id", "recipient", "status", "reason", "error_code", "timestamp"):
            expr = getattr(d, field)
            if expr is not None and expr.startswith(("re:", "header:")):
                yield FieldError(
                    f"delivery.{field}",
                    "must be a JSONPath such as $.status (re: and header: are for responses)",
                )
            else:
                yield from check(f"delivery.{field}", expr, relative=True)
        for field in ("delivered", "failed", "pending"):
            for i, v in enumerate(getattr(d, field)):
                if v.startswith("re:"):
                    yield from _check_regex(f"delivery.{field}[{i}]", v[3:])


def _check_regex(path: str, pattern: str) -> Iterator[FieldError]:
    try:
        re.compile(pattern)
    except re.error as exc:
        yield FieldError(path, f"invalid regular expression: {exc}")
