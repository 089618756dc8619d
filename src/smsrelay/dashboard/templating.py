"""Jinja2 for the dashboard: autoescaped templates, and filters for times, numbers and JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from smsrelay.store.timestamps import utc_now


def format_time(value: datetime | str | None) -> str:
    """A timestamp as `2024-06-01 12:00:03 UTC` (seconds; the title attribute has the rest)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        moment = value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(value: datetime | str | None) -> str:
    """A timestamp in ISO 8601, for `<time datetime>`."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return value.isoformat()


def time_ago(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest sensible unit (`5 s ago`, `3 h ago`)."""
    if value is None:
        return "never"
    seconds = ((now or utc_now()) - value).total_seconds()
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def format_number(value: int | float | None) -> str:
    """A count with thousands separators."""
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def format_percent(value: float | None) -> str:
    """A ratio (0..1) as a percentage with one decimal, or a dash when unknown."""
    return "—" if value is None else f"{value * 100:.1f} %"


def pretty_json(value: Any) -> str:
    """A JSON value, indented, for `<pre>`."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def pretty_body(text: str | None) -> str:
    """A body that is JSON indented, any other text as it is."""
    if not text:
        return ""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(stripped), indent=2, ensure_ascii=False)
        except ValueError:
            return text
    return text


def shown_value(value: Any) -> str:
    """A document value as its JSON spelling when it is not text (null, true, 12, [...])."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def build_environment() -> Environment:
    """The dashboard's template environment (autoescape on for every template)."""
    env = Environment(
        loader=PackageLoader("smsrelay.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(
        time=format_time,
        iso=iso_time,
        ago=time_ago,
        number=format_number,
        percent=format_percent,
        pretty_json=pretty_json,
        pretty_body=pretty_body,
        shown=shown_value,
    )
    env.globals["Markup"] = Markup
    return env
