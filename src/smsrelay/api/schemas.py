"""Request bodies of the native API (pydantic), shared by its routers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smsrelay.dispatch.intake import MAX_BODY_CHARS

MAX_BATCH = 10_000


class SampleMessage(BaseModel):
    """A message to preview or test-send through a connector."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=1, max_length=40, examples=["+15005550006"])
    body: str | None = Field(
        default=None, max_length=MAX_BODY_CHARS, examples=["Your code is 123456"]
    )
    sender: str | None = Field(
        default=None, max_length=64, description="Sender ID as sent to the provider."
    )
    template_id: str | None = Field(default=None, max_length=128)
    template_variables: list[str] = Field(default_factory=list, max_length=100)
    entity_id: str | None = Field(default=None, max_length=128)
    campaign_id: str | None = Field(default=None, max_length=128)
    params: dict[str, str] = Field(default_factory=dict, max_length=100)


class MessageIn(BaseModel):
    """One message to send (`POST /v1/messages`)."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=1, max_length=40, description="Recipient, E.164 (+4915112345678).")
    body: str | None = Field(default=None, max_length=MAX_BODY_CHARS)
    template_id: str | None = Field(default=None, max_length=128)
    template_variables: list[str] = Field(default_factory=list, max_length=100)
    sender: str | None = Field(
        default=None,
        max_length=64,
        description="Sender name; default: the default sender of `type`.",
    )
    type: Literal["transactional", "promotional"] = "transactional"
    params: dict[str, str] = Field(default_factory=dict, max_length=100)
    campaign_id: str | None = Field(default=None, max_length=128)
    entity_id: str | None = Field(default=None, max_length=128)
    send_at: datetime | None = Field(
        default=None, description="ISO 8601; in the future keeps it queued."
    )
    webhook_id: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _body_or_template(self) -> MessageIn:
        if not self.body and not self.template_id:
            raise ValueError("give body or template_id")
        return self


class MessageBatchIn(BaseModel):
    """Up to 10 000 messages; each is validated alone and rejected alone."""

    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, object]] = Field(min_length=1, max_length=MAX_BATCH)


class SenderIn(BaseModel):
    """A named sending identity on a connector."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    connector: str = Field(min_length=1, max_length=64)
    sender_id: str = Field(
        min_length=1, max_length=64, description="The ID sent to the provider, e.g. TXTSMS."
    )
    type: Literal["transactional", "promotional"] = "transactional"
    default: bool = False


class SenderPatch(BaseModel):
    """Changes to a sender; omitted fields stay."""

    model_config = ConfigDict(extra="forbid")

    connector: str | None = Field(default=None, min_length=1, max_length=64)
    sender_id: str | None = Field(default=None, min_length=1, max_length=64)
    type: Literal["transactional", "promotional"] | None = None
    default: bool | None = None
