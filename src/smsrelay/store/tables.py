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
    Float,
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
    # An attempt made by a request that carried several messages: the request/response
    # trace they share, stored once in `send_exchanges` and merged into `detail` on read.
    Column("exchange_id", BigInteger),
)
Index("ix_message_events_message_id", message_events.c.message_id, message_events.c.id)

# The redacted trace of one send request (request, response, timing) that carried several
# messages (a batch): one row instead of a copy in every message's attempt event (0007).
send_exchanges = Table(
    "send_exchanges",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("detail", Json, nullable=False),
    # Each message's own part of its attempt entry (attempt, outcome, provider ids, error),
    # by message id, when its status event stands for the attempt too (0008).
    Column("attempts", Json),
)

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
    # SQLite: the rows live in the primary key's B-tree, no separate rowid table (0009).
    sqlite_with_rowid=False,
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
    # all: every message's events; named: only messages naming it in `webhook_id` (0003).
    Column("scope", String(16), nullable=False, server_default=text("'all'")),
)

# One event for one webhook (reshaped in 0003). `event_id` is the message_events row it
# came from: unique per webhook, so fanning an event out twice creates one delivery. `uid`
# is the dedupe id the receiver sees, the same on every retry. Rows posted together share
# `batch_id` (formats that carry many events per POST), fixed at the first try.
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
    Column("event_id", BigInteger, nullable=False),
    Column("uid", String(32), nullable=False, unique=True),
    Column("message_id", String(26), nullable=False),
    Column("event", Json, nullable=False),
    Column("batch_id", BigInteger),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime),
    Column("state", String(16), nullable=False),  # pending | delivered | failed | skipped
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
)
Index(
    "ix_webhook_deliveries_due",
    webhook_deliveries.c.state,
    webhook_deliveries.c.next_attempt_at,
)
Index(
    "uq_webhook_deliveries_webhook_id_event_id",
    webhook_deliveries.c.webhook_id,
    webhook_deliveries.c.event_id,
    unique=True,
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

# ---------------------------------------------------------------- webhooks, stats, suppression (0003)

# How far a scanning loop has read `message_events` (by id); one row per loop.
event_cursors = Table(
    "event_cursors",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_event_id", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Every try of a webhook delivery: the delivery log.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "delivery_id",
        BigInteger,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
)
Index("ix_webhook_attempts_delivery_id", webhook_attempts.c.delivery_id, webhook_attempts.c.id)

# Numbers kept from promotional sends. A row also remembers a number's failure streak and,
# after a release, since when failures count again (`counted_since`).
suppressions = Table(
    "suppressions",
    metadata,
    Column("number", String(32), primary_key=True),
    Column("suppressed", Boolean, nullable=False),
    Column("source", String(16), nullable=False),  # failures | manual
    Column("reason", Text),
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    Column("counted_since", UTCDateTime),
    Column("suppressed_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

# ---------------------------------------------------------------- dashboard (0006)

dashboard_users = Table(
    "dashboard_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    # Part of every session cookie: bumped on logout and password change, which ends the
    # sessions issued before.
    Column("session_version", Integer, nullable=False, server_default=text("1")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_login_at", UTCDateTime),
    sqlite_autoincrement=True,
)

# Keys of the dashboard (the session-cookie signing key), sealed by the SecretBox.
dashboard_keys = Table(
    "dashboard_keys",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("sealed", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# ---------------------------------------------------------------- connector groups (0004)

# An ordered list of connectors behind one sender: a message that fails on one connector
# (rejected, or out of retries) fails over to the next. Members go with their connector.
connector_groups = Table(
    "connector_groups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,
)

connector_group_members = Table(
    "connector_group_members",
    metadata,
    Column(
        "group_id",
        Integer,
        ForeignKey("connector_groups.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("position", Integer, nullable=False),
    Column(
        "connector_id",
        Integer,
        ForeignKey("connectors.id", ondelete="CASCADE"),
        nullable=False,
    ),
    PrimaryKeyConstraint("group_id", "position"),
)
Index(
    "uq_connector_group_members_group_id_connector_id",
    connector_group_members.c.group_id,
    connector_group_members.c.connector_id,
    unique=True,
)
Index("ix_connector_group_members_connector_id", connector_group_members.c.connector_id)

# A sender pointing to a group; its `senders.connector_id` is kept equal to the group's
# first connector, so everything that reads a sender's connector sends there first.
sender_connector_groups = Table(
    "sender_connector_groups",
    metadata,
    Column(
        "sender_id",
        Integer,
        ForeignKey("senders.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("group_id", Integer, ForeignKey("connector_groups.id"), nullable=False),
)
Index("ix_sender_connector_groups_group_id", sender_connector_groups.c.group_id)

# ---------------------------------------------------------------- campaigns (0005)

# One body template sent to an audience. Progress counters are written with each chunk of
# recipients queued, in the same transaction as its messages. `schedule_*` let any process
# continue the throttled schedule; `lease_*` say which process is expanding it.
campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("name", String(128), nullable=False),
    # uploading | expanding | running | paused | completed | canceled | failed
    Column("status", String(16), nullable=False),
    Column("sender_name", String(64), nullable=False),
    Column("connector_id", Integer, nullable=False),
    Column("promotional", Boolean, nullable=False),
    Column("body", Text),
    Column("template_id", String(128)),
    Column("template_variables", Json),
    Column("entity_id", String(128)),
    Column("webhook_id", String(64)),
    Column("params", Json),
    Column("audience_source", String(8), nullable=False),  # csv | list
    Column("audience_columns", Json, nullable=False),
    Column("phone_column", String(128), nullable=False),
    Column("default_region", String(2)),
    Column("send_at", UTCDateTime),
    Column("throttle_per_minute", Integer),
    Column("quiet_hours", Json),
    Column("rows_total", Integer, nullable=False, server_default=text("0")),
    Column("rows_read", Integer, nullable=False, server_default=text("0")),
    Column("rows_valid", Integer, nullable=False, server_default=text("0")),
    Column("rows_invalid", Integer, nullable=False, server_default=text("0")),
    Column("duplicates", Integer, nullable=False, server_default=text("0")),
    Column("suppressed", Integer, nullable=False, server_default=text("0")),
    Column("queued", Integer, nullable=False, server_default=text("0")),
    Column("invalid_rows", Json),
    Column("parts_total", Integer, nullable=False, server_default=text("0")),
    Column("next_part", Integer, nullable=False, server_default=text("0")),
    Column("expanded", Boolean, nullable=False, server_default=false()),
    Column("schedule_anchor", UTCDateTime),
    Column("schedule_state", Json),
    Column("last_slot_at", UTCDateTime),
    Column("reschedule_from", UTCDateTime),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", UTCDateTime),
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("paused_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
)
Index("ix_campaigns_status", campaigns.c.status, campaigns.c.id)

# A campaign's audience as uploaded, in parts of consecutive rows (JSON list of cell lists),
# until the runner has queued them; a part is deleted with the chunk of messages it became.
campaign_audience_parts = Table(
    "campaign_audience_parts",
    metadata,
    Column(
        "campaign_id",
        String(26),
        ForeignKey("campaigns.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("part", Integer, nullable=False),
    Column("first_row", Integer, nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("rows", Text, nullable=False),
    PrimaryKeyConstraint("campaign_id", "part"),
)

# Which worker sends for a rate-limited connector, until when (0007). The holder alone
# spends the connector's token bucket, so its rate holds across any number of workers;
# `tokens` at `tokens_at` is the bucket a holder left when it let go, for the next one.
connector_leases = Table(
    "connector_leases",
    metadata,
    Column("connector_id", Integer, primary_key=True, autoincrement=False),
    Column("owner", String(128)),
    Column("expires_at", UTCDateTime),
    Column("tokens", Float),
    Column("tokens_at", UTCDateTime),
)
