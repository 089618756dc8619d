"""Errors of the store: each says what was refused and what the user can do about it."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises on purpose (not driver failures)."""


class ConnectorNotFound(StoreError):
    """No connector has that name (or id, or DLR token)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no connector named {name!r}")


class ConnectorInUse(StoreError):
    """A connector cannot be deleted while messages wait for it or senders point to it."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"connector {name!r} cannot be deleted: {reason}")


class SenderError(StoreError):
    """A sender was refused; `field` names the offending input (name, type, connector...)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class NoSender(StoreError):
    """No sender could be chosen for a message."""


class IdempotencyConflict(StoreError):
    """An idempotency key was reused for a different request."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"Idempotency-Key {key!r} was already used for a different request; "
            "use a new key for a new request"
        )


class SecretKeyError(StoreError):
    """The secret keys are missing, malformed, or do not open the stored secrets."""
