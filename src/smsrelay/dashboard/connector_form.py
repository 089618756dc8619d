"""The connector form: a definition as flat form fields and back, and where errors belong.

Pure. `form_from_document` fills the form from an exported definition (secrets masked);
`document_from_form` turns a submitted form into a definition document for
`parse_definition`; `place_errors` assigns every `FieldError` to the form control whose
definition path is the longest prefix of the error's path, so it is shown beside it.

Credentials typed into the auth and verification fields are moved into `secrets` (stored
encrypted) and referenced as `{{secret.NAME}}`; the form shows them as `***` afterwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from smsrelay.connectors.definition import SECRET_MASK
from smsrelay.connectors.errors import FieldError

Row = tuple[str, str]

# html name -> definition path, for the single-valued controls.
FIELD_PATHS: dict[str, str] = {
    "name": "name",
    "description": "description",
    "method": "request.method",
    "url": "request.url",
    "phone_format": "request.phone_format",
    "timeout_seconds": "request.timeout_seconds",
    "auth_type": "request.auth",
    "auth_username": "request.auth.username",
    "auth_password": "request.auth.password",
    "auth_token": "request.auth.token",
    "oauth_token_url": "request.auth.token_url",
    "oauth_client_id": "request.auth.client_id",
    "oauth_client_secret": "request.auth.client_secret",
    "oauth_scope": "request.auth.scope",
    "oauth_send_as": "request.auth.send_as",
    "body_type": "request.body",
    "body_json": "request.body.json",
    "body_raw": "request.body.raw",
    "content_type": "request.body.content_type",
    "escape": "request.body.escape",
    "batch_enabled": "batch",
    "batch_size": "batch.size",
    "batch_mode": "batch.mode",
    "batch_path": "batch.path",
    "batch_item": "batch.item",
    "batch_value": "batch.value",
    "batch_delimiter": "batch.delimiter",
    "success_status": "response.success_status",
    "retry_status": "response.retry_status",
    "response_message_id": "response.message_id",
    "response_error": "response.error",
    "success_when_path": "response.success_when",
    "success_when_value": "response.success_when.equals",
    "retry_when_path": "response.retry_when",
    "retry_when_value": "response.retry_when.equals",
    "delivery_enabled": "delivery",
    "delivery_reports": "delivery.reports",
    "delivery_decode": "delivery.decode",
    "delivery_message_id": "delivery.message_id",
    "delivery_match": "delivery.match",
    "delivery_recipient": "delivery.recipient",
    "delivery_status": "delivery.status",
    "delivery_reason": "delivery.reason",
    "delivery_error_code": "delivery.error_code",
    "delivery_timestamp": "delivery.timestamp",
    "delivery_delivered": "delivery.delivered",
    "delivery_failed": "delivery.failed",
    "delivery_pending": "delivery.pending",
    "delivery_window_hours": "delivery.window_hours",
    "verify_type": "delivery.verify",
    "verify_username": "delivery.verify.username",
    "verify_password": "delivery.verify.password",
    "verify_name": "delivery.verify.name",
    "verify_value": "delivery.verify.value",
    "hmac_header": "delivery.verify.header",
    "hmac_algorithm": "delivery.verify.algorithm",
    "hmac_secret": "delivery.verify.secret",
    "hmac_over": "delivery.verify.over",
    "hmac_encoding": "delivery.verify.encoding",
    "hmac_prefix": "delivery.verify.prefix",
    "rate_per_second": "rate_limit.per_second",
    "rate_burst": "rate_limit.burst",
    "rate_concurrency": "rate_limit.concurrency",
    "rate_unit": "rate_limit.unit",
    "retry_max_attempts": "retry.max_attempts",
    "retry_initial_seconds": "retry.initial_seconds",
    "retry_max_seconds": "retry.max_seconds",
}
# Errors about the whole request ("never uses {{to}}") are shown beside the body editor,
# where those placeholders usually go.
EXTRA_PATHS: dict[str, str] = {"request": "body_type", "response": "response_message_id"}

# Key/value row groups: html prefix -> definition path of the mapping they fill.
ROW_PATHS: dict[str, str] = {
    "query": "request.query",
    "headers": "request.headers",
    "oauth_extra": "request.auth.extra",
    "form": "request.body.form",
    "secrets": "secrets",
}

# Credential fields: html name -> the secret name a typed value is stored under.
SENSITIVE: dict[str, str] = {
    "auth_password": "auth_password",
    "auth_token": "auth_token",
    "oauth_client_secret": "oauth_client_secret",
    "verify_password": "dlr_password",
    "verify_value": "dlr_header_value",
    "hmac_secret": "dlr_hmac_secret",
}
_SECRET_REF = re.compile(r"^\{\{\s*secret\.([A-Za-z0-9_.-]+)\s*\}\}$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")

HTTP_METHODS = ("POST", "GET", "PUT", "PATCH", "DELETE")
PHONE_FORMATS = (
    ("e164", "E.164 with + (+4915112345678)"),
    ("e164_digits", "E.164 digits only (4915112345678)"),
    ("national", "National (015112345678)"),
)
AUTH_TYPES = (
    ("none", "None"),
    ("basic", "Basic"),
    ("bearer", "Bearer token"),
    ("oauth2", "OAuth2"),
)
BODY_TYPES = (("json", "JSON"), ("form", "Form"), ("raw", "Raw"), ("none", "None"))
VERIFY_TYPES = (
    ("none", "None"),
    ("basic", "Basic auth"),
    ("header", "Static header"),
    ("hmac", "HMAC signature"),
)
PREDICATE_TESTS = (("equals", "equals"), ("in", "is one of"), ("matches", "matches regex"))


@dataclass
class ConnectorForm:
    """The form's state: single values by html name, key/value rows by group."""

    values: dict[str, str] = field(default_factory=dict)
    rows: dict[str, list[Row]] = field(default_factory=dict)
    # For credential fields showing `***`: the secret they reference.
    secret_refs: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, default: str = "") -> str:
        """A single value, or `default`."""
        return self.values.get(name, default)

    def rows_of(self, group: str) -> list[Row]:
        """The rows of a group, with one empty row to type into when there are none."""
        return self.rows.get(group) or [("", "")]


# ---------------------------------------------------------------- definition -> form


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _listed(values: Iterable[Any]) -> str:
    return ", ".join(_text(v) for v in values)


def _json_text(value: Any) -> str:
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)


def _literal_text(value: Any) -> str:
    """A predicate value as typed: text as it is, unless it would read back as another type."""
    if isinstance(value, str) and _scalar_literal(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)


def blank_form() -> ConnectorForm:
    """The form for a new connector: a JSON POST, and the defaults of the definition."""
    return form_from_document(
        {
            "name": "",
            "request": {
                "method": "POST",
                "url": "",
                "body": {"type": "json", "json": {"to": "{{to}}", "text": "{{body}}"}},
            },
            "response": {"success_status": ["2xx"], "retry_status": [429, "5xx"]},
            "rate_limit": {"concurrency": 32, "unit": "messages"},
            "retry": {"max_attempts": 6, "initial_seconds": 1, "max_seconds": 300},
        }
    )


def form_from_document(doc: Mapping[str, Any]) -> ConnectorForm:
    """Fill the form from a definition document (as `export(mask_secrets=True)` gives)."""
    form = ConnectorForm()
    v = form.values
    request = doc.get("request") or {}
    v["name"] = _text(doc.get("name"))
    v["description"] = _text(doc.get("description"))
    v["method"] = _text(request.get("method", "POST"))
    v["url"] = _text(request.get("url"))
    v["phone_format"] = _text(request.get("phone_format", "e164"))
    v["timeout_seconds"] = _text(request.get("timeout_seconds", 15))
    form.rows["query"] = [(k, _text(x)) for k, x in (request.get("query") or {}).items()]
    form.rows["headers"] = [(k, _text(x)) for k, x in (request.get("headers") or {}).items()]

    auth = request.get("auth") or {"type": "none"}
    v["auth_type"] = auth.get("type", "none")
    v["auth_username"] = _text(auth.get("username"))
    v["oauth_token_url"] = _text(auth.get("token_url"))
    v["oauth_client_id"] = _text(auth.get("client_id"))
    v["oauth_scope"] = _text(auth.get("scope"))
    v["oauth_send_as"] = _text(auth.get("send_as", "header"))
    form.rows["oauth_extra"] = [(k, _text(x)) for k, x in (auth.get("extra") or {}).items()]
    _fill_sensitive(form, "auth_password", auth.get("password"))
    _fill_sensitive(form, "auth_token", auth.get("token"))
    _fill_sensitive(form, "oauth_client_secret", auth.get("client_secret"))

    body = request.get("body") or {"type": "none"}
    v["body_type"] = body.get("type", "none")
    v["body_json"] = _json_text(body.get("json"))
    # A repeated form field is one row per value (`to=a&to=b`).
    form.rows["form"] = [
        (k, item)
        for k, x in (body.get("form") or {}).items()
        for item in ([x] if isinstance(x, str) else x)
    ]
    v["body_raw"] = _text(body.get("raw"))
    v["content_type"] = _text(body.get("content_type"))
    v["escape"] = _text(body.get("escape", "none"))

    batch = doc.get("batch")
    v["batch_enabled"] = "on" if batch else ""
    batch = batch or {}
    v["batch_size"] = _text(batch.get("size", 1000))
    v["batch_mode"] = _text(batch.get("mode", "items"))
    v["batch_path"] = _text(batch.get("path", "messages"))
    v["batch_item"] = _json_text(batch.get("item"))
    v["batch_value"] = _text(batch.get("value"))
    v["batch_delimiter"] = _text(batch.get("delimiter", ","))

    response = doc.get("response") or {}
    v["success_status"] = _listed(response.get("success_status", ["2xx"]))
    v["retry_status"] = _listed(response.get("retry_status", [429, "5xx"]))
    v["response_message_id"] = _text(response.get("message_id"))
    v["response_error"] = _text(response.get("error"))
    for name in ("success_when", "retry_when"):
        _fill_predicate(form, name, response.get(name))

    delivery = doc.get("delivery")
    v["delivery_enabled"] = "on" if delivery else ""
    _fill_delivery(form, delivery or {})

    rate = doc.get("rate_limit") or {}
    v["rate_per_second"] = _text(rate.get("per_second"))
    v["rate_burst"] = _text(rate.get("burst"))
    v["rate_concurrency"] = _text(rate.get("concurrency", 32))
    v["rate_unit"] = _text(rate.get("unit", "messages"))
    retry = doc.get("retry") or {}
    v["retry_max_attempts"] = _text(retry.get("max_attempts", 6))
    v["retry_initial_seconds"] = _text(retry.get("initial_seconds", 1))
    v["retry_max_seconds"] = _text(retry.get("max_seconds", 300))

    form.rows["secrets"] = [(k, SECRET_MASK) for k in (doc.get("secrets") or {})]
    return form


def _fill_delivery(form: ConnectorForm, delivery: Mapping[str, Any]) -> None:
    v = form.values
    v["delivery_reports"] = _text(delivery.get("reports", "$"))
    v["delivery_decode"] = _listed(delivery.get("decode", []))
    for key in ("message_id", "recipient", "status", "reason", "error_code", "timestamp"):
        v[f"delivery_{key}"] = _text(delivery.get(key))
    v["delivery_match"] = _text(delivery.get("match", "provider_id"))
    v["delivery_delivered"] = _listed(delivery.get("delivered", ["delivered"]))
    v["delivery_failed"] = _listed(delivery.get("failed", []))
    v["delivery_pending"] = _listed(delivery.get("pending", []))
    v["delivery_window_hours"] = _text(delivery.get("window_hours", 72))
    verify = delivery.get("verify") or {"type": "none"}
    v["verify_type"] = verify.get("type", "none")
    v["verify_username"] = _text(verify.get("username"))
    v["verify_name"] = _text(verify.get("name"))
    v["hmac_header"] = _text(verify.get("header"))
    v["hmac_algorithm"] = _text(verify.get("algorithm", "sha256"))
    v["hmac_over"] = _text(verify.get("over", "body"))
    v["hmac_encoding"] = _text(verify.get("encoding", "hex"))
    v["hmac_prefix"] = _text(verify.get("prefix"))
    _fill_sensitive(form, "verify_password", verify.get("password"))
    _fill_sensitive(form, "verify_value", verify.get("value"))
    _fill_sensitive(form, "hmac_secret", verify.get("secret"))


def _fill_predicate(form: ConnectorForm, name: str, predicate: Mapping[str, Any] | None) -> None:
    v = form.values
    predicate = predicate or {}
    v[f"{name}_path"] = _text(predicate.get("path"))
    if "in" in predicate:
        v[f"{name}_test"] = "in"
        v[f"{name}_value"] = _listed(predicate["in"])
    elif "matches" in predicate:
        v[f"{name}_test"] = "matches"
        v[f"{name}_value"] = _text(predicate["matches"])
    else:
        v[f"{name}_test"] = "equals"
        v[f"{name}_value"] = _literal_text(predicate["equals"]) if "equals" in predicate else ""


def _fill_sensitive(form: ConnectorForm, name: str, template: Any) -> None:
    text = _text(template)
    match = _SECRET_REF.match(text)
    if match:
        form.values[name] = SECRET_MASK
        form.secret_refs[name] = match.group(1)
    else:
        form.values[name] = text


# ---------------------------------------------------------------- form -> definition


class FormData:
    """The submitted fields: `get` a single value, `getlist` every value of a name."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in pairs:
            self._values.setdefault(key, []).append(value)

    def get(self, name: str) -> str:
        values = self._values.get(name)
        return values[-1].strip() if values else ""

    def raw(self, name: str) -> str:
        """The value as typed (not stripped): templates and bodies keep their spaces."""
        values = self._values.get(name)
        return values[-1].replace("\r\n", "\n") if values else ""

    def getlist(self, name: str) -> list[str]:
        return list(self._values.get(name, []))


def form_from_post(data: FormData) -> ConnectorForm:
    """The form state as submitted (to show it again with its errors)."""
    form = ConnectorForm()
    for name in FIELD_PATHS:
        raw = name in ("body_json", "body_raw", "batch_item", "url", "description")
        form.values[name] = data.raw(name) if raw else data.get(name)
    for name in ("success_when", "retry_when"):
        form.values[f"{name}_test"] = data.get(f"{name}_test") or "equals"
    for group in ROW_PATHS:
        keys = data.getlist(f"{group}_key")
        values = data.getlist(f"{group}_value")
        form.rows[group] = [
            (k.strip(), x) for k, x in zip(keys, values, strict=False) if k.strip() or x.strip()
        ]
    for name in SENSITIVE:
        ref = data.get(f"{name}__secret")
        if ref:
            form.secret_refs[name] = ref
    return form


def _number(text: str) -> int | float | str:
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _statuses(text: str) -> list[int | str]:
    return [int(item) if item.isdigit() else item for item in _split_list(text)]


def _scalar_literal(text: str) -> Any:
    """`true`, `12`, `"x"` as JSON values; anything else as the text typed."""
    if text in ("true", "false", "null") or _INT.match(text) or text.startswith('"'):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _json_value(text: str, path: str, problems: list[FieldError]) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(
            FieldError(
                path, f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            )
        )
        return None


def _mapping(form: ConnectorForm, group: str, problems: list[FieldError]) -> dict[str, str]:
    out: dict[str, str] = {}
    path = ROW_PATHS[group]
    for number, (key, value) in enumerate(form.rows.get(group, []), start=1):
        if not key:
            problems.append(FieldError(path, f"row {number} has a value but no name"))
        elif key in out:
            problems.append(FieldError(f"{path}.{key}", f"{key!r} is given twice"))
        else:
            out[key] = value
    return out


def secret_reference(name: str) -> str:
    """The template that inserts a secret: `{{secret.NAME}}`."""
    return "{{secret." + name + "}}"


def _form_fields(form: ConnectorForm, problems: list[FieldError]) -> dict[str, str | list[str]]:
    """Form body fields; a name given in several rows is a repeated field (a list)."""
    fields: dict[str, str | list[str]] = {}
    for number, (key, value) in enumerate(form.rows.get("form", []), start=1):
        if not key:
            problems.append(
                FieldError("request.body.form", f"row {number} has a value but no name")
            )
            continue
        current = fields.get(key)
        if current is None:
            fields[key] = value
        elif isinstance(current, list):
            current.append(value)
        else:
            fields[key] = [current, value]
    return fields


def _credential(
    form: ConnectorForm, name: str, secrets: dict[str, str], *, required: bool = True
) -> str | None:
    """The template for a credential field; a typed value becomes a secret."""
    value = form.value(name)
    ref = form.secret_refs.get(name)
    if value == SECRET_MASK and ref:
        return secret_reference(ref)
    if not value:
        return "" if required else None
    if "{{" in value or "$$" in value:
        return value
    secret_name = ref or SENSITIVE[name]
    secrets[secret_name] = value
    return secret_reference(secret_name)


def _predicate(form: ConnectorForm, name: str) -> dict[str, Any] | None:
    path = form.value(f"{name}_path")
    if not path:
        return None
    test = form.value(f"{name}_test") or "equals"
    value = form.value(f"{name}_value")
    if test == "in":
        return {"path": path, "in": [_scalar_literal(x) for x in _split_list(value)]}
    if test == "matches":
        return {"path": path, "matches": value}
    return {"path": path, "equals": _scalar_literal(value)}


def _put_number(target: dict[str, Any], key: str, text: str) -> None:
    if text:
        target[key] = _number(text)


def document_from_form(form: ConnectorForm) -> tuple[dict[str, Any], list[FieldError]]:
    """The definition document the form describes, and the problems found on the way.

    Problems here are the ones only the form can have (JSON that does not parse, a row
    without a name); everything else is left to `parse_definition`.
    """
    problems: list[FieldError] = []
    v = form.value
    secrets = _mapping(form, "secrets", problems)
    request: dict[str, Any] = {
        "method": v("method") or "POST",
        "url": v("url").strip(),
        "query": _mapping(form, "query", problems),
        "headers": _mapping(form, "headers", problems),
        "phone_format": v("phone_format") or "e164",
    }
    _put_number(request, "timeout_seconds", v("timeout_seconds"))
    auth_type = v("auth_type") or "none"
    auth: dict[str, Any] = {"type": auth_type}
    if auth_type == "basic":
        auth["username"] = v("auth_username")
        auth["password"] = _credential(form, "auth_password", secrets)
    elif auth_type == "bearer":
        auth["token"] = _credential(form, "auth_token", secrets)
    elif auth_type == "oauth2":
        auth["token_url"] = v("oauth_token_url")
        auth["client_id"] = v("oauth_client_id")
        auth["client_secret"] = _credential(form, "oauth_client_secret", secrets)
        if v("oauth_scope"):
            auth["scope"] = v("oauth_scope")
        extra = _mapping(form, "oauth_extra", problems)
        if extra:
            auth["extra"] = extra
        auth["send_as"] = v("oauth_send_as") or "header"
    request["auth"] = auth

    body_type = v("body_type") or "none"
    body: dict[str, Any] = {"type": body_type}
    if body_type == "json":
        text = v("body_json").strip()
        body["json"] = _json_value(text, "request.body.json", problems) if text else None
    elif body_type == "form":
        body["form"] = _form_fields(form, problems)
    elif body_type == "raw":
        body["raw"] = v("body_raw")
        if v("escape"):
            body["escape"] = v("escape")
    if body_type != "none" and v("content_type"):
        body["content_type"] = v("content_type")
    request["body"] = {k: x for k, x in body.items() if x is not None}

    document: dict[str, Any] = {"name": v("name"), "request": request}
    if v("description"):
        document["description"] = v("description")
    if v("batch_enabled"):
        document["batch"] = _batch(form, problems)

    response: dict[str, Any] = {
        "success_status": _statuses(v("success_status")) or ["2xx"],
        "retry_status": _statuses(v("retry_status")),
    }
    if v("response_message_id"):
        response["message_id"] = v("response_message_id")
    if v("response_error"):
        response["error"] = v("response_error")
    for name in ("success_when", "retry_when"):
        predicate = _predicate(form, name)
        if predicate is not None:
            response[name] = predicate
    document["response"] = response
    if v("delivery_enabled"):
        document["delivery"] = _delivery(form, secrets)

    rate: dict[str, Any] = {"unit": v("rate_unit") or "messages"}
    _put_number(rate, "per_second", v("rate_per_second"))
    _put_number(rate, "burst", v("rate_burst"))
    _put_number(rate, "concurrency", v("rate_concurrency"))
    document["rate_limit"] = rate
    retry: dict[str, Any] = {}
    _put_number(retry, "max_attempts", v("retry_max_attempts"))
    _put_number(retry, "initial_seconds", v("retry_initial_seconds"))
    _put_number(retry, "max_seconds", v("retry_max_seconds"))
    document["retry"] = retry
    document["secrets"] = secrets
    return document, problems


def _batch(form: ConnectorForm, problems: list[FieldError]) -> dict[str, Any]:
    v = form.value
    mode = v("batch_mode") or "items"
    batch: dict[str, Any] = {"mode": mode, "path": v("batch_path")}
    _put_number(batch, "size", v("batch_size"))
    if mode == "items":
        text = v("batch_item").strip()
        if text:
            batch["item"] = _json_value(text, "batch.item", problems)
    elif v("batch_value"):
        batch["value"] = v("batch_value")
    if mode == "join":
        batch["delimiter"] = form.values.get("batch_delimiter", ",")
    return batch


def _delivery(form: ConnectorForm, secrets: dict[str, str]) -> dict[str, Any]:
    v = form.value
    delivery: dict[str, Any] = {
        "reports": v("delivery_reports") or "$",
        "decode": _split_list(v("delivery_decode")),
        "message_id": v("delivery_message_id"),
        "match": v("delivery_match") or "provider_id",
        "status": v("delivery_status"),
        "delivered": _split_list(v("delivery_delivered")),
        "failed": _split_list(v("delivery_failed")),
        "pending": _split_list(v("delivery_pending")),
    }
    for key in ("recipient", "reason", "error_code", "timestamp"):
        if v(f"delivery_{key}"):
            delivery[key] = v(f"delivery_{key}")
    _put_number(delivery, "window_hours", v("delivery_window_hours"))
    verify_type = v("verify_type") or "none"
    verify: dict[str, Any] = {"type": verify_type}
    if verify_type == "basic":
        verify["username"] = v("verify_username")
        verify["password"] = _credential(form, "verify_password", secrets)
    elif verify_type == "header":
        verify["name"] = v("verify_name")
        verify["value"] = _credential(form, "verify_value", secrets)
    elif verify_type == "hmac":
        verify["header"] = v("hmac_header")
        verify["algorithm"] = v("hmac_algorithm") or "sha256"
        verify["secret"] = _credential(form, "hmac_secret", secrets)
        verify["over"] = v("hmac_over") or "body"
        verify["encoding"] = v("hmac_encoding") or "hex"
        if v("hmac_prefix"):
            verify["prefix"] = v("hmac_prefix")
    delivery["verify"] = verify
    return delivery


# ---------------------------------------------------------------- errors in place


def control_id(name: str) -> str:
    """The html id of a control (`f-request-url` style, from its html name)."""
    return "f-" + name.replace("_", "-")


def row_id(group: str, index: int, part: str) -> str:
    """The html id of one cell of a key/value row."""
    return f"f-{group.replace('_', '-')}-{index}-{part}"


def control_paths(form: ConnectorForm) -> list[tuple[str, str]]:
    """Every (definition path, html id) the rendered form has, rows included."""
    paths = [(path, control_id(name)) for name, path in FIELD_PATHS.items()]
    paths += [(path, control_id(name)) for path, name in EXTRA_PATHS.items()]
    for group, base in ROW_PATHS.items():
        rows = form.rows_of(group)
        paths.append((base, row_id(group, 0, "key")))
        for index, (key, _) in enumerate(rows):
            if key:
                paths.append((f"{base}.{key}", row_id(group, index, "value")))
    return paths


@dataclass(frozen=True, slots=True)
class PlacedError:
    """An error and the control it is shown beside (`anchor` is an html id, or "")."""

    path: str
    message: str
    anchor: str
    # The part of the path below the control's own, e.g. `.text` inside the JSON body.
    detail_path: str


def _covers(prefix: str, path: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def place_errors(
    errors: Sequence[FieldError], paths: Sequence[tuple[str, str]]
) -> list[PlacedError]:
    """Assign each error to the control with the longest path covering the error's path."""
    placed: list[PlacedError] = []
    for error in errors:
        best = max(
            (item for item in paths if _covers(item[0], error.path)),
            key=lambda item: len(item[0]),
            default=None,
        )
        if best is None:
            placed.append(PlacedError(error.path, error.message, "", error.path))
        else:
            below = error.path[len(best[0]) :].lstrip(".")
            placed.append(PlacedError(error.path, error.message, best[1], below))
    return placed


def errors_by_anchor(placed: Sequence[PlacedError]) -> dict[str, list[PlacedError]]:
    """The placed errors grouped by the control they belong to."""
    grouped: dict[str, list[PlacedError]] = {}
    for error in placed:
        grouped.setdefault(error.anchor, []).append(error)
    return grouped
