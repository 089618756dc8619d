"""Placeholder syntax: `{{name}}` and the MoEngage/CleverTap aliases, parsed into templates.

A template is parsed once into literal text and placeholders; rendering (see `rendering`)
only looks values up. Aliases are resolved at parse time, so a template copied from the
MoEngage or CleverTap dashboards (`$$To`, `Moesms_message`) compiles to the same thing as
the canonical `{{to}}` / `{{body}}`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

# Values every message provides (some possibly empty); see SPEC §2.1.
MESSAGE_FIELDS: frozenset[str] = frozenset(
    {
        "to",
        "body",
        "sender",
        "template_id",
        "template_variables",
        "entity_id",
        "campaign_id",
        "message_id",
        "callback_url",
        "unicode",
        "encoding",
        "segments",
    }
)

# Fields that may legitimately be empty: rendering them yields "" instead of an error.
OPTIONAL_FIELDS: frozenset[str] = frozenset({"campaign_id", "entity_id", "sender"})

ALIASES: dict[str, str] = {
    "$$To": "to",
    "$$Body": "body",
    "$$TemplateID": "template_id",
    "$$TemplateVariables": "template_variables",
    "$$CampaignID": "campaign_id",
    "$$MessageID": "message_id",
    "Moesms_destination": "to",
    "Moesms_message": "body",
    "Moesms_dltTemplateId": "template_id",
    "Moesms_campaignId": "campaign_id",
}

PARAM_PREFIX = "params."
SECRET_PREFIX = "secret."

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_TOKEN = re.compile(
    r"\{\{\s*(?P<canonical>[^{}]*?)\s*\}\}"
    r"|\$\$(?P<dollar>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\b(?P<moe>Moesms_(?:destination|message|dltTemplateId|campaignId))\b"
)
_CANONICAL_NAME = re.compile(rf"^(?:{_NAME}|params\.{_NAME}|secret\.{_NAME})$")
_PREFIXED_NAME = re.compile(rf"^{_NAME}\.{_NAME}$")


class TemplateSyntaxError(ValueError):
    """A template string could not be parsed; the message says what would be accepted."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One placeholder occurrence, by canonical name (`to`, `params.first_name`, `secret.key`)."""

    name: str

    @property
    def is_secret(self) -> bool:
        return self.name.startswith(SECRET_PREFIX)

    @property
    def is_param(self) -> bool:
        return self.name.startswith(PARAM_PREFIX)

    @property
    def key(self) -> str:
        """The part after `params.` / `secret.`, or the name itself."""
        return self.name.split(".", 1)[1] if "." in self.name else self.name


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal strings and placeholders in order."""

    source: str
    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(p for p in self.parts if isinstance(p, Placeholder))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.parts if isinstance(p, Placeholder))

    @property
    def single(self) -> Placeholder | None:
        """The placeholder if the template is exactly one placeholder and nothing else."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Placeholder):
            return self.parts[0]
        return None

    @property
    def is_literal(self) -> bool:
        return not any(isinstance(p, Placeholder) for p in self.parts)


def canonical_name(raw: str) -> str:
    """Map an alias or a `{{...}}` inner name to its canonical placeholder name."""
    if raw in ALIASES:
        return ALIASES[raw]
    if raw.startswith("$$"):
        return PARAM_PREFIX + raw[2:]
    return raw


def suggest_name(name: str) -> str | None:
    """The closest known placeholder name, for 'did you mean' hints."""
    candidates = sorted(MESSAGE_FIELDS)
    if "." in name:
        prefix = name.split(".", 1)[0] + "."
        if prefix not in (PARAM_PREFIX, SECRET_PREFIX):
            close = difflib.get_close_matches(prefix[:-1], ["params", "secret"], n=1)
            if close:
                return close[0] + "." + name.split(".", 1)[1]
        return None
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _check_name(name: str) -> None:
    if not _CANONICAL_NAME.match(name):
        hint = suggest_name(name) if _PREFIXED_NAME.match(name) else None
        if hint:
            raise TemplateSyntaxError(
                f"unknown placeholder {{{{{name}}}}}; did you mean {{{{{hint}}}}}?"
            )
        raise TemplateSyntaxError(
            f"invalid placeholder {{{{{name}}}}}; a name is letters, digits, _ or -, "
            "optionally prefixed by params. or secret."
        )
    if name in MESSAGE_FIELDS or name.startswith((PARAM_PREFIX, SECRET_PREFIX)):
        return
    hint = suggest_name(name)
    if hint:
        raise TemplateSyntaxError(
            f"unknown placeholder {{{{{name}}}}}; did you mean {{{{{hint}}}}}?"
        )
    known = ", ".join("{{" + n + "}}" for n in sorted(MESSAGE_FIELDS))
    raise TemplateSyntaxError(
        f"unknown placeholder {{{{{name}}}}}; known: {known}, {{{{params.NAME}}}}, {{{{secret.NAME}}}}"
    )


def parse_template(text: str) -> Template:
    """Parse one template string; raise TemplateSyntaxError naming the bad placeholder."""
    parts: list[str | Placeholder] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        if m.group("canonical") is not None:
            name = canonical_name(m.group("canonical").strip())
            _check_name(name)
        elif m.group("dollar") is not None:
            name = canonical_name("$$" + m.group("dollar"))
        else:
            name = canonical_name(m.group("moe"))
        parts.append(Placeholder(name))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    rest = "".join(p for p in parts if isinstance(p, str))
    if "{{" in rest or "}}" in rest:
        raise TemplateSyntaxError(
            "unbalanced braces: a placeholder is written {{name}} with two braces on each side"
        )
    return Template(source=text, parts=tuple(parts))
