"""Settings of the sandbox provider: timings, callback policy, bounds and chaos."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

CHAOS_RATES: tuple[str, ...] = (
    "error_rate",
    "timeout_rate",
    "slow_rate",
    "reset_rate",
    "dlr_late_rate",
    "dlr_duplicate_rate",
    "dlr_out_of_order_rate",
)


class ChaosSettings(BaseModel):
    """Probabilities (0..1) of misbehaviour, drawn per request or per message; all 0 by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="send answered with HTTP 500"
    )
    timeout_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="send answered after timeout_seconds"
    )
    slow_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="send answered after slow_seconds"
    )
    reset_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="connection dropped without an answer"
    )
    dlr_late_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="first DLR delayed by dlr_late_seconds more"
    )
    dlr_duplicate_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="final DLR sent twice"
    )
    dlr_out_of_order_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="a `sent` DLR follows the final one"
    )
    seed: int | None = Field(
        default=None, description="seed of the random draws, for reproducible chaos"
    )


class SandboxSettings(BaseModel):
    """Everything the sandbox can be told at start; chaos can also change at run time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dlr_delay_seconds: float = Field(default=0.5, ge=0, le=3600)
    dlr_late_seconds: float = Field(default=5.0, ge=0, le=3600)
    timeout_seconds: float = Field(default=20.0, ge=0, le=3600)
    slow_seconds: float = Field(default=2.0, ge=0, le=3600)
    retry_after_seconds: int = Field(default=2, ge=0, le=3600)
    default_callback_url: str | None = None
    callback_attempts: int = Field(default=4, ge=1, le=20)
    callback_retry_seconds: float = Field(default=1.0, ge=0, le=600)
    callback_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    max_messages: int = Field(default=100_000, ge=1, le=10_000_000)
    chaos: ChaosSettings = Field(default_factory=ChaosSettings)

    @field_validator("default_callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value
