"""Configuration, read once from the environment (and an optional file) and passed down.

Every setting is an environment variable `SMSRELAY_<NAME>`; `SMSRELAY_CONFIG` may name a
YAML file with the same names in lower case. The environment wins over the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./smsrelay.db"


# The outbound HTTP clients `SMSRELAY_HTTP_CLIENT` may name (dispatch.transport).
HTTP_CLIENTS = ("builtin", "aiohttp")


@dataclass(frozen=True)
class Settings:
    """Everything smsrelay reads from its environment."""

    database_url: str = DEFAULT_DATABASE_URL
    # Fernet keys, newest first; the first encrypts, all decrypt (MultiFernet rotation).
    secret_keys: tuple[str, ...] = ()
    # Where the embedded setup keeps a generated key when SMSRELAY_SECRET_KEYS is unset.
    secret_key_file: str = "./smsrelay.key"
    host: str = "127.0.0.1"
    port: int = 8000
    # The URL providers use to reach this server (DLR callback URLs are built from it).
    public_url: str = ""
    # Mount the sandbox provider at /sandbox and create the `sandbox` connector on start.
    # `load_settings` turns it off on any database but SQLite unless it is set: a production
    # server left with it would send messages without a sender to the fake provider.
    sandbox: bool = True
    # Run the dispatcher inside `serve` (the embedded setup); `smsrelay worker` runs it alone.
    dispatcher: bool = True
    # Hosts outbound requests may reach although they resolve to private/loopback addresses.
    allow_hosts: tuple[str, ...] = ()
    # The outbound HTTP client: `builtin` (dispatch/http11.py, the default) or `aiohttp`.
    http_client: str = "builtin"
    # `smsrelay worker` only: serve its Prometheus metrics on host:metrics_port (0: off).
    # `serve` has them at /metrics on its own port.
    metrics_port: int = 0
    dlr_max_bytes: int = 256 * 1024
    # How many messages a worker claims at once, and how long it holds them.
    claim_batch: int = 500
    lease_seconds: float = 60.0
    poll_interval_seconds: float = 0.2
    default_region: str = ""
    log_level: str = "info"
    # Inbound protection (api/limits.py): requests per second per API key (token bucket,
    # 0 = no limit) and its burst; request body caps (batch and campaign endpoints: larger).
    api_rate_limit_per_second: float = 1000.0
    api_rate_limit_burst: int = 2000
    api_max_body_bytes: int = 1024 * 1024
    api_max_batch_body_bytes: int = 32 * 1024 * 1024
    # A number with this many consecutive final delivery failures is suppressed from
    # promotional sends (GET/DELETE /v1/suppressions).
    suppress_after_failures: int = 3
    # Outgoing webhooks: first retry delay, largest delay, and when to give up.
    webhook_retry_initial_seconds: float = 10.0
    webhook_retry_max_seconds: float = 3600.0
    webhook_retry_hours: float = 24.0
    # Housekeeping (dispatch/housekeeping.py): how long idempotency keys are remembered
    # (at least), how long finished webhook deliveries stay in the delivery log, and how
    # often expired rows are pruned.
    idempotency_key_hours: float = 24.0
    webhook_log_days: float = 7.0
    housekeeping_interval_seconds: float = 3600.0
    # Quiet hours for promotional campaign sends, in the recipient's local time ("" = the
    # campaigns default, 21:00-09:00), e.g. "22:00-08:00".
    quiet_hours: str = ""
    # Time zone of MoEngage's scheduled `time` field.
    moengage_timezone: str = "UTC"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


_TUPLES = {"secret_keys", "allow_hosts"}
_BOOLS = {"sandbox", "dispatcher"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(name: str, raw: Any, default: Any) -> Any:
    if name in _TUPLES:
        if isinstance(raw, list | tuple):
            return tuple(str(x).strip() for x in raw if str(x).strip())
        return tuple(x.strip() for x in str(raw).split(",") if x.strip())
    if name in _BOOLS:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"SMSRELAY_{name.upper()}: expected true or false, got {raw!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(
                f"SMSRELAY_{name.upper()}: expected a whole number, got {raw!r}"
            ) from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"SMSRELAY_{name.upper()}: expected a number, got {raw!r}") from None
    return str(raw)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from a config file (SMSRELAY_CONFIG), then the environment, then overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    defaults = Settings()
    names = {f.name for f in fields(Settings)} - {"extra"}
    config_file = env.get("SMSRELAY_CONFIG")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ValueError(f"SMSRELAY_CONFIG: {config_file} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"SMSRELAY_CONFIG: {config_file} must hold a mapping of settings")
        for key, raw in data.items():
            if key not in names:
                raise ValueError(
                    f"SMSRELAY_CONFIG: unknown setting {key!r} (known: {', '.join(sorted(names))})"
                )
            values[key] = _coerce(key, raw, getattr(defaults, key))
    for name in names:
        raw = env.get(f"SMSRELAY_{name.upper()}")
        if raw is not None:
            values[name] = _coerce(name, raw, getattr(defaults, name))
    given = {**values, **overrides}  # overrides win
    settings = replace(defaults, **given)
    if "sandbox" not in given and not settings.is_sqlite:
        settings = replace(settings, sandbox=False)
    if settings.http_client not in HTTP_CLIENTS:
        raise ValueError(
            f"SMSRELAY_HTTP_CLIENT: unknown HTTP client {settings.http_client!r}; "
            f"expected one of {', '.join(HTTP_CLIENTS)}"
        )
    if not 0 <= settings.metrics_port <= 65535:
        raise ValueError(
            f"SMSRELAY_METRICS_PORT: expected a port from 1 to 65535, or 0 for none; "
            f"got {settings.metrics_port}"
        )
    return settings
