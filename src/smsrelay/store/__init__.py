"""The store: SQLite or PostgreSQL through SQLAlchemy Core, and the outbox that is the queue.

`database` opens and migrates; `tables` is the schema; `lifecycle` the status rules; one
module per concept (`connectors`, `senders`, `messages`, `outbox`, `api_keys`, ...).
"""
