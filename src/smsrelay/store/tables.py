"""The schema, as SQLAlchemy Core tables: the single source the migrations are checked against.

Every timestamp is `UTCDateTime`. JSON columns store SQL NULL for None (`none_as_null`), so
"absent" and "JSON null" never mean two things. `messages.connector_id` and the other
references to connectors are plain integers, not foreign keys: a deleted connector leaves
its message history readable, and `sqlite_autoincrement` keeps its id from being reused.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
    text,
    true,
)

from smsrelay.store.timestamps import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# BIGINT is not an alias of SQLite's rowid, so it would not autoincrement there.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON(none_as_null=True)

connectors = Table(
    "connectors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("version", Integer, nullable=False),
    # The exported definition without its `secrets` key; secrets live encrypted beside it.
    Column("definition", Json, nullable=False),
    Column("secrets", LargeBinary, nullable=False),
    Column("dlr_token", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,
)

connector_versions = Table(
    "connector_versions",
    metadata,
    Column(
        "connector_id",
        Integer,
        ForeignKey("connectors.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("version", Integer, nullable=False),
    Column("definition", Json, nullable=False),
    Column("secrets", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("connector_id", "version"),
)

senders = Table(
    "senders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("connector_id", Integer, ForeignKey("connectors.id"), nullable=False),
    Column("sender_id", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("is_default", Boolean, nullable=False, server_default=false()),
    Column("created_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,
)
# At most one default per type; the store also unsets the old default in the same
# transaction, the index only catches a concurrent race.
Index(
    "uq_senders_default_type",
    senders.c.type,
    unique=True,
    sqlite_where=senders.c.is_default,
    postgresql_where=senders.c.is_default,
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("connector_id", Integer, nullable=False),
    Column("sender_name", String(64)),
    Column("sender_id", String(64)),
    Column("to", String(32), nullable=False),
    Column("body", Text),
    Column("template_id", String(128)),
    Column("template_variables", Json),
    Column("entity_id", String(128)),
    Column("campaign_id", String(128)),
    Column("params", Json),
    Column("webhook_id", String(64)),
    Column("status", String(16), nullable=False),
    Column("send_at", UTCDateTime),
    # When the message is next due: send time (queued), retry time (queued, dispatch_error),
    # lease expiry (sending), or the delivery-report deadline (sent). One column, so one
    # index answers every "what is due" question.
    Column("next_attempt_at", UTCDateTime),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", UTCDateTime),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # Since when the message has been held as dispatch_error (failing credentials).
    Column("held_since", UTCDateTime),
    Column("segments", Integer, nullable=False, server_default=text("1")),
    Column("encoding", String(8), nullable=False, server_default=text("'gsm7'")),
    Column("failure_reason", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("final_at", UTCDateTime),
)
# The outbox proper: only messages still to be sent, in the order they are due. Partial, so
# it stays small however long the history grows; the status list is SQL text so that both
# databases see the claim query's condition as identical to the index's.
DISPATCHABLE = text("status IN ('dispatch_error', 'queued', 'sending')")
Index(
    "ix_messages_due",
    messages.c.connector_id,
    messages.c.next_attempt_at,
    messages.c.id,
    postgresql_where=DISPATCHABLE,
    sqlite_where=DISPATCHABLE,
)
Index("ix_messages_status_due", messages.c.status, messages.c.next_attempt_at)
Index("ix_messages_created_at", messages.c.created_at)
Index("ix_messages_to", messages.c.to, messages.c.id)
Index("ix_messages_campaign_id", messages.c.campaign_id, messages.c.id)

message_events = Table(
    "message_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "message_id",
        String(26),
        ForeignKey("messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(8), nullable=False),  # status | attempt | report | note
    Column("status", String(16)),
    Column("detail", Json),
)
Index("ix_message_events_message_id", message_events.c.message_id, message_events.c.id)

provider_ids = Table(
    "provider_ids",
    metadata,
    Column("connector_id", Integer, nullable=False),
    Column("provider_id", String(255), nullable=False),
    Column(
        "message_id",
        String(26),
        ForeignKey("messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("recipient", String(32)),
    # Leading columns (connector_id, provider_id) are the DLR lookup.
    PrimaryKeyConstraint("connector_id", "provider_id", "message_id"),
)
Index("ix_provider_ids_message_id", provider_ids.c.message_id)

delivery_reports = Table(
    "delivery_reports",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("connector_id", Integer, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("method", String(8), nullable=False),
    Column("url", Text, nullable=False),
    Column("content_type", String(255)),
    Column("headers", Json, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),  # received | mapped | orphan | error
    Column("processed_at", UTCDateTime),
    Column("error", Text),
    Column("report_count", Integer, nullable=False, server_default=text("0")),
    # When the delivery mapper next looks at it: at once when received, again later for an
    # orphan whose message's provider id may not be recorded yet; NULL when done (0002).
    Column("next_check_at", UTCDateTime),
)
Index("ix_delivery_reports_connector_id", delivery_reports.c.connector_id, delivery_reports.c.id)
Index("ix_delivery_reports_state", delivery_reports.c.state, delivery_reports.c.id)
UNMAPPED = text("state IN ('orphan', 'received')")
Index(
    "ix_delivery_reports_due",
    delivery_reports.c.next_check_at,
    delivery_reports.c.id,
    postgresql_where=UNMAPPED,
    sqlite_where=UNMAPPED,
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("url", Text, nullable=False),
    Column("format", String(16), nullable=False),  # native | moengage | clevertap
    Column("events", Json, nullable=False),
    Column("secret", LargeBinary),
    Column("created_at", UTCDateTime, nullable=False),
    Column("active", Boolean, nullable=False, server_default=true()),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "webhook_id",
        String(32),
        ForeignKey("webhooks.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("message_id", String(26), nullable=False),
    Column("event", Json, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime),
    Column("state", String(16), nullable=False),
    Column("last_status", Integer),
    Column("created_at", UTCDateTime, nullable=False),
)
Index(
    "ix_webhook_deliveries_due",
    webhook_deliveries.c.state,
    webhook_deliveries.c.next_attempt_at,
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    sqlite_autoincrement=True,
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column(
        "api_key_id",
        Integer,
        ForeignKey("api_keys.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Json),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("api_key_id", "key"),
)
Index("ix_idempotency_keys_created_at", idempotency_keys.c.created_at)
