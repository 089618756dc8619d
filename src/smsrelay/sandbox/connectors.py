"""The connector definitions shipped for the sandbox, with its address filled in."""

from __future__ import annotations

import json
from importlib.resources import files

PLACEHOLDER_BASE_URL = "http://127.0.0.1:8000/sandbox"
_BASE_URL_LINE = f'  base_url: "{PLACEHOLDER_BASE_URL}"'


def sandbox_connector_yaml(base_url: str, *, batch: bool = False) -> str:
    """The `sandbox` (or `sandbox-batch`) connector YAML, its base_url secret set to `base_url`.

    The text is edited rather than re-dumped so its comments survive.
    """
    name = "connector-batch.yaml" if batch else "connector.yaml"
    text = files("smsrelay.sandbox").joinpath(name).read_text(encoding="utf-8")
    if _BASE_URL_LINE not in text:
        raise RuntimeError(f"{name} lost its base_url secret line")
    # A JSON string is a valid YAML double-quoted scalar, whatever the URL holds.
    return text.replace(_BASE_URL_LINE, f"  base_url: {json.dumps(base_url.rstrip('/'))}")
