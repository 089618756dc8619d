"""Errors of the connector engine: data with a path and a message a user can act on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem in a connector definition, at a dotted path such as `request.body.json.text`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DefinitionError(ValueError):
    """A connector definition was refused; `errors` lists every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class RenderError(ValueError):
    """A message could not be rendered; `reason` is the machine-readable failure reason."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


class MissingParameter(RenderError):
    """A placeholder had no value for this message (failure reason `missing_parameter:NAME`)."""

    def __init__(self, name: str, where: str = "") -> None:
        self.name = name
        at = f" in {where}" if where else ""
        super().__init__(
            f"missing_parameter:{name}", f"no value for placeholder {{{{{name}}}}}{at}"
        )


class CallbackError(ValueError):
    """A delivery-report callback could not be read (bad encoding, bad JSON, path errors)."""
