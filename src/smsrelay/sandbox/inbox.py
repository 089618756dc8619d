"""The web inbox page: rendered once on the server, then kept fresh by a small script."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader

from smsrelay.sandbox.outcomes import OUTCOME_RULES
from smsrelay.sandbox.provider import Sandbox
from smsrelay.sandbox.settings import CHAOS_RATES, ChaosSettings

PAGE_LIMIT = 200


class InboxPage:
    """The inbox template and its script and style sheet, loaded once from the package."""

    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("smsrelay.sandbox", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._template = self._env.get_template("inbox.html")
        static = files("smsrelay.sandbox").joinpath("static")
        self.script = static.joinpath("inbox.js").read_text(encoding="utf-8")
        self.style = static.joinpath("inbox.css").read_text(encoding="utf-8")

    def render(self, sandbox: Sandbox, *, selected: str | None) -> str:
        """The page for one number (or all numbers), with the messages kept now."""
        if selected is not None:
            selected = sandbox.log.resolve_number(selected)
        messages = [m.to_json() for m in sandbox.messages(to=selected, limit=PAGE_LIMIT)]
        return self._template.render(
            selected=selected,
            messages=messages,
            phones=[p.to_json() for p in sandbox.phones()],
            total=len(sandbox.log),
            capacity=sandbox.settings.max_messages,
            outcomes=OUTCOME_RULES,
            chaos=chaos_fields(sandbox.chaos),
            seed=sandbox.chaos.seed,
            settings=sandbox.settings,
        )


def chaos_fields(chaos: ChaosSettings) -> list[dict[str, Any]]:
    """Each chaos rate with its value and what it does, for the settings form."""
    fields = ChaosSettings.model_fields
    return [
        {"name": name, "value": getattr(chaos, name), "description": fields[name].description}
        for name in CHAOS_RATES
    ]
