"""The OpenAPI side of problems: every operation documents the problems it can answer.

Routes declare their successes; the errors are the same everywhere (problems.py answers
them all), so they are documented here, once, for every operation: `401`/`429` where an
API key is taken, `413`/`415`/`422` where a body is, `404` where something is named,
`409` where something is written, `500`/`503` everywhere, each as
`application/problem+json` with the `Problem` schema. A client generated from
`/openapi.json`, or a fuzzer checking answers against it (tests/hardening), then finds
every status the server can send.

Two repairs keep the document valid: `$defs` embedded in a route's inline schema
(pydantic's `model_json_schema`) move to `components/schemas`, and operation ids shared by
the methods of one route get the method appended.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details, with field-level `errors` for invalid input.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "message"],
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

_DESCRIPTIONS = {
    "400": "Bad request",
    "401": "Missing or unknown API key",
    "404": "Something the request names does not exist",
    "409": "Conflicts with the current state (name taken, in use, already sent)",
    "413": "The request body is over the size cap",
    "415": "The body is not in a content type this operation takes",
    "422": "Invalid input; `errors` lists each problem with its field path",
    "429": "Too many requests with this API key; see Retry-After",
    "500": "Internal error (logged)",
    "503": "The database is unreachable or full; see Retry-After",
}
_WRITES = {"post", "put", "patch", "delete"}
_METHOD_SUFFIX = re.compile(r"_(get|post|put|patch|delete|head|options)$")
_KEYED_PREFIXES = ("/v1/", "/api/")


def problem_codes(path: str, method: str, operation: dict[str, Any]) -> set[str]:
    """The problem statuses an operation can answer, by what it takes (pure)."""
    codes = {"500", "503"}
    if path.startswith(_KEYED_PREFIXES):
        codes |= {"401", "422", "429"}
    if path.startswith("/api/"):
        codes.add("400")  # the platform shims answer malformed platform requests so
    if "requestBody" in operation:
        codes |= {"413", "415", "422"}
    if "{" in path or method in _WRITES:
        codes.add("404")
    if method in _WRITES and path.startswith("/v1/"):
        codes.add("409")
    if any(p.get("in") in ("query", "path", "header") for p in operation.get("parameters", [])):
        codes.add("422")
    return codes


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the problem responses and the `Problem` schema to an OpenAPI document, in place."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    problem_content = {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
    seen_ids: set[str] = set()
    for path, methods in schema.get("paths", {}).items():
        for method, operation in methods.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for code in problem_codes(path, method, operation):
                responses.setdefault(code, {"description": _DESCRIPTIONS[code]})
            for code, response in responses.items():
                if code[:1] in ("4", "5"):
                    # Every error is a problem, whatever FastAPI's default said (422).
                    response["content"] = problem_content
            operation_id = operation.get("operationId")
            if isinstance(operation_id, str) and operation_id in seen_ids:
                # One route serving several methods: FastAPI names them all after the first.
                renamed = _METHOD_SUFFIX.sub(f"_{method}", operation_id)
                operation["operationId"] = (
                    renamed if renamed not in seen_ids else f"{operation_id}_{method}"
                )
            seen_ids.add(operation.get("operationId", ""))
    _hoist_defs(schema, components)
    return schema


def _hoist_defs(node: Any, components: dict[str, Any]) -> None:
    """Move `$defs` of inline schemas into components and point their `$ref`s there."""
    if isinstance(node, dict):
        defs = node.pop("$defs", None)
        if isinstance(defs, dict):
            for name, definition in defs.items():
                components.setdefault(name, definition)
                _hoist_defs(definition, components)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
        for value in list(node.values()):
            _hoist_defs(value, components)
    elif isinstance(node, list):
        for item in node:
            _hoist_defs(item, components)


def install_problem_docs(app: FastAPI) -> None:
    """Make `app.openapi()` document the problems of every operation."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                # Repaired by document_problems: the methods of one route get their own ids.
                warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
                app.openapi_schema = document_problems(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
