"""Value paths: where a value sits in a response or callback.

Three forms, one syntax everywhere a path is asked for:
- JSONPath (RFC 9535) such as `$.messages[*].umid`; a dotted shorthand without `$`
  (`payload.status.state`) is read as `$.payload.status.state`;
- `re:<regex>` over a text body: group 1 if the pattern has one, else the whole match;
- `header:<name>`: a response header.
In delivery reports a path may start with `^` (once per level) to read the object that
encloses the report, e.g. `^.requestId` beside `reports: $.data[*].report[*]`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import jsonpath
from jsonpath import JSONPath, JSONPathError, JSONPathMatch


class PathSyntaxError(ValueError):
    """A path expression could not be compiled; the message says what is accepted."""


class PathEvaluationError(ValueError):
    """A valid path could not be applied to a document (e.g. `..` over a too-deep one)."""


@dataclass(frozen=True, slots=True)
class ValuePath:
    """A compiled path; `find` returns every value it addresses, in document order."""

    source: str
    kind: Literal["json", "regex", "header"]
    json: JSONPath | None = None
    regex: re.Pattern[str] | None = None
    header: str | None = None
    parents: int = 0
    # A path of plain names and `[*]` only (`$.id`, `$.messages[*].id`), walked directly:
    # the same values as the JSONPath, without its machinery, on every send response.
    steps: tuple[str | None, ...] | None = None

    @property
    def is_singular(self) -> bool:
        """True if the path can address at most one value (no wildcard, slice or filter)."""
        if self.kind != "json" or self.json is None:
            return True
        return bool(self.json.singular_query())

    def find(
        self,
        document: Any,
        *,
        text: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[Any]:
        """Every value the path addresses in `document` (or in `text` / `headers`)."""
        if self.kind == "json":
            assert self.json is not None
            if self.steps is not None:
                return _walk(document, self.steps)
            if not isinstance(document, Mapping | list | tuple):
                # python-jsonpath would parse a str document as JSON; a scalar (a text body,
                # a recipient string inside a Sinch report) is a value, and only `$` reaches it.
                return [] if self.json.segments else [document]
            try:
                return list(self.json.findall(document))
            except (JSONPathError, RecursionError) as exc:
                raise PathEvaluationError(_evaluation_problem(self.source, exc)) from None
        if self.kind == "regex":
            assert self.regex is not None
            if text is None:
                text = document if isinstance(document, str) else ""
            found: list[Any] = []
            for m in self.regex.finditer(text):
                found.append(m.group(1) if self.regex.groups else m.group(0))
            return found
        assert self.header is not None
        if headers is None:
            return []
        wanted = self.header.lower()
        return [v for k, v in headers.items() if k.lower() == wanted]

    def first(self, document: Any, **kw: Any) -> Any:
        """The first value found, or None."""
        values = self.find(document, **kw)
        return values[0] if values else None

    def matches(self, document: Any) -> list[JSONPathMatch]:
        """JSONPath matches with their parents (for `^` lookups)."""
        assert self.json is not None
        if not isinstance(document, Mapping | list | tuple):
            if self.json.segments:
                return []
            return [_root_match(document)]
        try:
            return list(self.json.finditer(document))
        except (JSONPathError, RecursionError) as exc:
            raise PathEvaluationError(_evaluation_problem(self.source, exc)) from None

    def find_from(self, match: JSONPathMatch) -> list[Any]:
        """Values relative to one matched report, climbing one enclosing object per `^`.

        `^` skips the arrays in between: with reports `$.data[*].report[*]`, `^` is the
        element of `data` that holds the `report` array and `^^` is the document root.
        A path that climbs above the root finds nothing.
        """
        node: JSONPathMatch | None = match
        for _ in range(self.parents):
            node = node.parent if node is not None else None
            while node is not None and not isinstance(node.obj, Mapping):
                node = node.parent
            if node is None:
                return []
        assert node is not None
        return self.find(node.obj)


def _walk(document: Any, steps: tuple[str | None, ...]) -> list[Any]:
    # RFC 9535 for names and wildcards: a name selects a member of an object, `[*]` every
    # element of an array or member of an object; anything else selects nothing.
    nodes = [document]
    for step in steps:
        found: list[Any] = []
        for node in nodes:
            if step is None:
                if isinstance(node, Mapping):
                    found.extend(node.values())
                elif isinstance(node, list | tuple):
                    found.extend(node)
            elif isinstance(node, Mapping) and step in node:
                found.append(node[step])
        nodes = found
    return nodes


def _simple_steps(expr: str) -> tuple[str | None, ...] | None:
    if not _SIMPLE_PATH.fullmatch(expr):
        return None
    return tuple(None if step == "[*]" else step[1:] for step in _SIMPLE_STEP.findall(expr))


_SIMPLE_PATH = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\*\])*")
_SIMPLE_STEP = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*|\[\*\]")


def _evaluation_problem(source: str, exc: Exception) -> str:
    # python-jsonpath appends a drawing of the expression on further lines
    first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{source}: {first_line}"


def _root_match(document: Any) -> JSONPathMatch:
    return JSONPathMatch(
        filter_context={}, obj=document, parent=None, path="$", parts=(), root=document
    )


def compile_value_path(expr: str, *, allow_parent: bool = False) -> ValuePath:
    """Compile a path expression (cached); raise PathSyntaxError with the reason."""
    return _compile(expr, allow_parent)


@lru_cache(maxsize=4096)
def _compile(expr: str, allow_parent: bool) -> ValuePath:
    source = expr
    expr = expr.strip()
    if not expr:
        raise PathSyntaxError("is empty; use a JSONPath like $.id, re:<regex> or header:<name>")
    if expr.startswith("re:"):
        try:
            return ValuePath(source, "regex", regex=re.compile(expr[3:]))
        except re.error as exc:
            raise PathSyntaxError(f"invalid regular expression after re: ({exc})") from exc
    if expr.startswith("header:"):
        name = expr[len("header:") :].strip()
        if not name:
            raise PathSyntaxError("header: needs a header name, e.g. header:Location")
        return ValuePath(source, "header", header=name)
    parents = 0
    while expr.startswith("^"):
        parents += 1
        expr = expr[1:]
    if parents and not allow_parent:
        raise PathSyntaxError("^ (the enclosing object) is only allowed in delivery report fields")
    if parents:
        expr = "$" + expr if expr.startswith((".", "[")) else "$." + expr if expr else "$"
    elif not expr.startswith("$"):
        expr = "$" + expr if expr.startswith("[") else "$." + expr
    try:
        compiled = jsonpath.compile(expr)
    except Exception as exc:  # python-jsonpath raises several syntax error types
        raise PathSyntaxError(f"invalid JSONPath {source!r}: {exc}") from exc
    if not isinstance(compiled, JSONPath):
        raise PathSyntaxError(f"{source!r} combines several paths; give one JSONPath")
    steps = None if parents else _simple_steps(expr)
    return ValuePath(source, "json", json=compiled, parents=parents, steps=steps)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTABLE_KEY = re.compile(r"[^'\\\x00-\x1f\x7f-\x9f\ud800-\udfff]*")


def key_segment(key: str | int) -> str:
    """One JSONPath segment for a key or index: `.name`, `['odd-name']` or `[0]`."""
    if isinstance(key, int):
        return f"[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f".{key}"
    if _QUOTABLE_KEY.fullmatch(key):
        return f"['{key}']"
    return f"[{json.dumps(key)}]"


def list_fields(document: Any, prefix: str = "$") -> list[tuple[str, Any]]:
    """Every leaf of a document with the JSONPath that reads it, in document order.

    Empty objects and arrays count as leaves, so nothing in the document is hidden.
    """
    fields: list[tuple[str, Any]] = []
    stack: list[tuple[str, Any]] = [(prefix, document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, Mapping) and value:
            items: list[tuple[str | int, Any]] = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, list | tuple) and value:
            items = list(enumerate(value))
        else:
            fields.append((path, value))
            continue
        stack.extend((path + key_segment(k), v) for k, v in reversed(items))
    return fields
