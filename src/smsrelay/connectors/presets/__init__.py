"""Provider presets: connect a well-known SMS provider in one step.

A preset is a YAML document in this package, one file per provider (`twilio.yaml`):

```yaml
preset:
  title: Twilio
  description: what it sends
  documentation: [URLs the preset was checked against]
  variables:                       # what the user is asked for, in order
    auth_token: {description: ..., secret: true}        # required: no default
    sender: {description: ..., default: "{{sender}}"}  # optional
    region: {description: ..., default: us, choices: [us, eu]}
    base_url: {description: ..., default: "https://{{var.region}}.example.com", kind: url}
  provider_setup: what to configure in the provider's dashboard
  notes: known limits, and what the documentation did not confirm
connector:                         # an ordinary connector definition (SPEC §2)
  name: twilio
  request: {url: "{{var.base_url}}/send", headers: {X-Key: "{{secret.auth_token}}"}}
```

`build_from_preset` fills the variables: a `secret: true` variable goes into the
connector's `secrets` and is referenced as `{{secret.NAME}}`; any other variable is written
into the document in place of `{{var.NAME}}`. A `kind: names` variable (a comma separated
list) expands a mapping key written `{{var.NAME}}` into one entry per name, with
`@` in the entry's value replaced by the name (MSG91's per-template variables). A default
may use `{{var.OTHER}}` and message placeholders such as `{{sender}}`; values typed by a user
are always literal text. The result is validated with `parse_definition`, so a built preset
is an ordinary connector.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smsrelay.connectors.definition import ConnectorDefinition, parse_definition
from smsrelay.connectors.errors import DefinitionError, FieldError
from smsrelay.connectors.placeholders import TemplateSyntaxError, parse_template

__all__ = [
    "PresetInfo",
    "PresetVariable",
    "UnknownPresetError",
    "build_from_preset",
    "get_preset",
    "list_presets",
    "load_preset",
    "preset_names",
]

VariableKind = Literal["text", "url", "names"]

_PRESET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_VAR_REFERENCE = re.compile(r"\{\{\s*var\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")
_KEY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnknownPresetError(DefinitionError):
    """No preset has the requested name; the message lists the ones that exist."""


@dataclass(frozen=True, slots=True)
class PresetVariable:
    """One value a preset asks for.

    `default` is None for a required variable; it may be "" (optional) or a template such
    as `{{sender}}` (the message's own sender unless the user gives a fixed one).
    """

    name: str
    description: str
    secret: bool
    default: str | None
    choices: tuple[str, ...] = ()
    kind: VariableKind = "text"

    @property
    def required(self) -> bool:
        """True when the user must give a value (there is no default)."""
        return self.default is None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able view for the API and CLI."""
        return {
            "name": self.name,
            "description": self.description,
            "secret": self.secret,
            "required": self.required,
            "default": self.default,
            "choices": list(self.choices),
            "kind": self.kind,
        }


@dataclass(frozen=True, slots=True)
class PresetInfo:
    """What a preset is, what it asks for and what to set up at the provider."""

    name: str
    title: str
    description: str
    connector_name: str
    variables: tuple[PresetVariable, ...]
    provider_setup: str
    notes: str
    documentation: tuple[str, ...]

    def variable(self, name: str) -> PresetVariable | None:
        """The variable called `name`, if the preset has one."""
        return next((v for v in self.variables if v.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able view for the API and CLI."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "connector_name": self.connector_name,
            "variables": [v.as_dict() for v in self.variables],
            "provider_setup": self.provider_setup,
            "notes": self.notes,
            "documentation": list(self.documentation),
        }


# ---------------------------------------------------------------- the preset file format


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _VariableSpec(_Strict):
    description: str
    secret: bool = False
    default: str | None = None
    choices: list[str] | None = None
    kind: VariableKind = "text"


class _PresetSpec(_Strict):
    title: str
    description: str
    documentation: list[str] = Field(default_factory=list)
    variables: dict[str, _VariableSpec]
    provider_setup: str
    notes: str = ""


class _PresetDocument(_Strict):
    preset: _PresetSpec
    connector: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Preset:
    info: PresetInfo
    connector: Mapping[str, Any]
    text: str


def preset_names() -> list[str]:
    """The names of every shipped preset, sorted."""
    return list(_all_names())


@lru_cache(maxsize=1)
def _all_names() -> tuple[str, ...]:
    folder = resources.files(__name__)
    names = [
        entry.name[: -len(".yaml")]
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml") and _PRESET_NAME.match(entry.name[: -len(".yaml")])
    ]
    return tuple(sorted(names))


def load_preset(name: str) -> str:
    """The preset's YAML text, as shipped."""
    return _preset(name).text


def get_preset(name: str) -> PresetInfo:
    """What one preset asks for and does; raises UnknownPresetError for an unknown name."""
    return _preset(name).info


def list_presets() -> list[PresetInfo]:
    """Every shipped preset, sorted by name."""
    return [_preset(name).info for name in _all_names()]


def _preset(name: str) -> _Preset:
    if name not in _all_names():
        raise UnknownPresetError(
            [FieldError("preset", f"unknown preset {name!r}; available: {', '.join(_all_names())}")]
        )
    return _read(name)


@lru_cache(maxsize=64)
def _read(name: str) -> _Preset:
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    try:
        document = _PresetDocument.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        # A shipped file is broken: a packaging bug, reported as such.
        raise DefinitionError(
            [FieldError("preset", f"preset file {name}.yaml is invalid: {exc}")]
        ) from exc
    spec = document.preset
    variables = tuple(
        PresetVariable(
            name=var_name,
            description=var.description.strip(),
            secret=var.secret,
            default=var.default,
            choices=tuple(var.choices or ()),
            kind=var.kind,
        )
        for var_name, var in spec.variables.items()
    )
    info = PresetInfo(
        name=name,
        title=spec.title,
        description=spec.description.strip(),
        connector_name=str(document.connector.get("name", name)),
        variables=variables,
        provider_setup=spec.provider_setup.strip(),
        notes=spec.notes.strip(),
        documentation=tuple(spec.documentation),
    )
    return _Preset(info=info, connector=document.connector, text=text)


# ---------------------------------------------------------------- building a connector


def build_from_preset(
    name: str, *, connector_name: str | None = None, values: Mapping[str, str]
) -> ConnectorDefinition:
    """A validated connector definition from a preset and the user's values.

    Secret variables become the connector's `secrets`; other variables are written into
    the definition. Raises UnknownPresetError for an unknown preset and DefinitionError
    listing every missing, unknown or invalid variable (the FieldError path is the
    variable's name) or, after filling, every problem `parse_definition` finds.
    """
    preset = _preset(name)
    resolved = _resolve_values(preset.info, values)
    secrets = {v.name: resolved[v.name] for v in preset.info.variables if v.secret}
    plain = {v.name: v for v in preset.info.variables if not v.secret}
    filled = _fill(preset.connector, {k: resolved[k] for k in plain}, plain, "")
    document = {**filled, "secrets": secrets}
    if connector_name is not None:
        document["name"] = connector_name
    return parse_definition(document)


def _resolve_values(info: PresetInfo, values: Mapping[str, str]) -> dict[str, str]:
    errors: list[FieldError] = []
    accepted = _accepted_list(info)
    for key in values:
        if info.variable(key) is None:
            errors.append(
                FieldError(key, f"unknown variable for preset {info.name!r}; accepted: {accepted}")
            )
    resolved: dict[str, str] = {}
    from_default: set[str] = set()
    for var in info.variables:
        given = values.get(var.name)
        if given is not None and not var.secret:
            given = given.strip()
        if given is None or not given.strip():
            if var.default is None:
                errors.append(FieldError(var.name, f"is required: {var.description}"))
                continue
            resolved[var.name] = var.default
            from_default.add(var.name)
            continue
        problem = _check_value(var, given)
        if problem is not None:
            errors.append(FieldError(var.name, problem))
            continue
        resolved[var.name] = _normalise(var, given)
    if errors:
        raise DefinitionError(errors)
    # Defaults may build on other variables (Sinch: the region names the host).
    for var_name in sorted(from_default):
        resolved[var_name] = _VAR_REFERENCE.sub(
            lambda m: _plain_reference(m.group(1), resolved, info), resolved[var_name]
        )
    return resolved


def _plain_reference(name: str, resolved: Mapping[str, str], info: PresetInfo) -> str:
    var = info.variable(name)
    if var is None or var.secret or _VAR_REFERENCE.search(resolved[name]):
        raise DefinitionError(
            [FieldError("preset", f"preset {info.name!r}: a default refers to {name!r}")]
        )
    return resolved[name]


def _accepted_list(info: PresetInfo) -> str:
    return ", ".join(
        f"{v.name} ({'required' if v.required else 'optional'})" for v in info.variables
    )


def _check_value(var: PresetVariable, value: str) -> str | None:
    """Why a value typed by the user cannot be used, or None."""
    if _CONTROL.search(value):
        return "must be one line without control characters"
    if var.secret:
        return None
    # A plain value is written into templates: it must stay literal text there.
    try:
        literal = parse_template(value).is_literal
    except TemplateSyntaxError:
        literal = False
    if not literal:
        return (
            f"{value!r} would be read as a placeholder; values may not contain {{{{, }}}}, "
            "$$ or Moesms_ names"
        )
    if var.choices and value not in var.choices:
        return f"{value!r} is not one of: {', '.join(var.choices)}"
    if var.kind == "url":
        return _check_url(value)
    if var.kind == "names":
        names = _split_names(value)
        bad = [n for n in names if not _KEY_NAME.match(n)]
        if bad:
            return (
                f"{', '.join(repr(n) for n in bad)}: a name is letters, digits, _ or -, "
                "starting with a letter or _"
            )
        if len(set(names)) != len(names):
            return "lists a name twice"
    return None


def _check_url(value: str) -> str | None:
    url = _with_scheme(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{value!r} is not an http(s) base URL such as https://api.example.com"
    if parts.query or parts.fragment or "@" in parts.netloc or " " in url:
        return f"{value!r}: give only scheme, host and an optional path (no query, user or #)"
    return None


def _with_scheme(value: str) -> str:
    return value if "://" in value else "https://" + value


def _normalise(var: PresetVariable, value: str) -> str:
    if var.kind == "url":
        return _with_scheme(value).rstrip("/")
    if var.kind == "names":
        return ",".join(_split_names(value))
    return value


def _split_names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def _fill(
    value: Any, resolved: Mapping[str, str], plain: Mapping[str, PresetVariable], path: str
) -> Any:
    """The connector document with every `{{var.NAME}}` replaced."""
    if isinstance(value, str):
        return _VAR_REFERENCE.sub(lambda m: _text_value(m.group(1), resolved, plain, path), value)
    if isinstance(value, list):
        return [_fill(v, resolved, plain, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        filled: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            names_var = _whole_reference(key)
            if names_var is not None:
                expanded = _expand_names(names_var, item, resolved, plain, where)
                clash = sorted(set(expanded) & set(value))
                if clash:
                    raise DefinitionError(
                        [FieldError(names_var, f"{', '.join(clash)} is a name the preset uses")]
                    )
                filled.update(expanded)
                continue
            filled[key] = _fill(item, resolved, plain, where)
        return filled
    return value


def _whole_reference(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    match = _VAR_REFERENCE.fullmatch(value.strip())
    return match.group(1) if match else None


def _text_value(
    name: str, resolved: Mapping[str, str], plain: Mapping[str, PresetVariable], path: str
) -> str:
    var = plain.get(name)
    if var is None or var.kind == "names":
        raise DefinitionError(
            [FieldError(path, f"preset refers to {{{{var.{name}}}}}, which it does not define")]
        )
    return resolved[name]


def _expand_names(
    name: str,
    template: Any,
    resolved: Mapping[str, str],
    plain: Mapping[str, PresetVariable],
    path: str,
) -> dict[str, Any]:
    var = plain.get(name)
    if var is None or var.kind != "names" or not isinstance(template, str):
        raise DefinitionError(
            [FieldError(path, f"{{{{var.{name}}}}} as a key needs a names variable and text")]
        )
    return {
        key: _fill(template.replace("@", key), resolved, plain, f"{path}.{key}")
        for key in _split_names(resolved[name])
    }
