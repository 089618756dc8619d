"""Sample data for the store tests: a fixed clock and a valid connector document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from smsrelay.connectors.definition import ConnectorDefinition, parse_definition

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def acme_document(name: str = "acme", **changes: Any) -> dict[str, Any]:
    """A valid connector document using one secret, `api_key`."""
    document: dict[str, Any] = {
        "name": name,
        "request": {
            "url": "https://sms.example.com/v1/send",
            "headers": {"Authorization": "Bearer {{secret.api_key}}"},
            "body": {"json": {"to": "{{to}}", "text": "{{body}}", "from": "{{sender}}"}},
        },
        "response": {"message_id": "$.id"},
        "secrets": {"api_key": "live-key-123"},
    }
    document.update(changes)
    return document


def acme(name: str = "acme", **changes: Any) -> ConnectorDefinition:
    """The `acme_document` as a validated definition."""
    return parse_definition(acme_document(name, **changes))
