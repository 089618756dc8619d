"""Precompiled statements run with plain tuples: the fast path of claims and group commits.

SQLAlchemy Core builds every statement here (so quoting and dialect differences stay its
job), but each is compiled once per dialect and executed through the driver
(`exec_driver_sql`) with tuples of driver-ready values: no per-row bind processors, no
per-row `Row` objects. `Codec` does the few conversions by hand, exactly as the column
types would: timestamps as SQLite's text form or PostgreSQL's `timestamptz`, JSON as
`json.dumps` text (PostgreSQL's driver takes JSON as text too).

On SQLite a statement over many rows runs as one statement, stepped once: many values go
in as one JSON array of rows (`json_rows`), and many rows come out as one JSON array
(`packed`). SQLite runs on a thread of its own (aiosqlite's, or the writer thread of
`Database.write_at_once`), and Python's driver lets go of the GIL around every step, one
per row of an executemany or a fetch, and must take it back after each, which waits while
the event loop's thread runs Python (bench/README.md, fifth round).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    String,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.store.database import Database, Dialect

# `json.dumps` with its defaults, but for the check for cycles (a stored value is built from
# decoded JSON and plain values, never cyclic): ~15% less per trace encoded.
_encode_json = json.JSONEncoder(check_circular=False).encode


class Codec:
    """Python values to and from what the driver of one database speaks."""

    def __init__(self, db: Database) -> None:
        self.sqlite = db.is_sqlite
        # One group commit writes the same few instants many times (`at`, a deadline).
        self._texts: dict[datetime, str] = {}

    def timestamp(self, value: datetime | None) -> Any:
        """A timezone-aware datetime as the driver stores it (UTCDateTime's rules)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got {value!r}")
        if not self.sqlite:
            return value
        text = self._texts.get(value)
        if text is None:
            utc = value.astimezone(UTC) if value.utcoffset() else value
            # SQLAlchemy's SQLite DATETIME text form (always six fractional digits), whose
            # ordering the due index relies on: the ISO form without its "+00:00".
            text = self._texts[value] = utc.isoformat(" ", "microseconds")[:-6]
        return text

    def read_timestamp(self, raw: Any) -> datetime | None:
        """A stored timestamp as a timezone-aware UTC datetime."""
        if raw is None:
            return None
        if isinstance(raw, str):
            return datetime.fromisoformat(raw).replace(tzinfo=UTC)
        assert isinstance(raw, datetime)
        return raw.replace(tzinfo=UTC) if raw.tzinfo is None else raw.astimezone(UTC)

    @staticmethod
    def json(value: Any) -> str | None:
        """A JSON column value (None is SQL NULL, as `none_as_null`)."""
        return None if value is None else _encode_json(value)

    def read_json(self, raw: Any) -> Any:
        """A JSON column as Python (PostgreSQL's driver has decoded it already)."""
        if isinstance(raw, str | bytes) and self.sqlite:
            return json.loads(raw)
        return raw


def id_list_condition(column: ColumnElement[Any], name: str, dialect: Dialect) -> Any:
    """`column IN (the ids bound as one parameter)`, so one compiled statement fits any list.

    PostgreSQL binds an array (`= ANY($1)`); SQLite a JSON array read by `json_each`.
    """
    if dialect == "postgresql":
        return column == func.any(bindparam(name, type_=ARRAY(String)))
    return column.in_(select(literal_column("value")).select_from(func.json_each(bindparam(name))))


def id_list_rows(name: str, dialect: Dialect) -> Any:
    """The ids bound as one parameter, as the rows of a one-column table (`.c.value`).

    `INSERT ... SELECT` from it writes one row per id in a single statement (PostgreSQL
    `unnest`, SQLite `json_each`, both in list order).
    """
    if dialect == "postgresql":
        listed = func.unnest(bindparam(name, type_=ARRAY(String))).table_valued("value")
        return listed.render_derived(name="listed")
    return func.json_each(bindparam(name)).table_valued("value").alias("listed")


def json_rows(names: Sequence[str], name: str = "rows") -> tuple[Any, dict[str, Any]]:
    """SQLite: rows bound as one parameter, a JSON array of arrays of values in `names`
    order, as a table (`json_each`, in array order) and the column of each name.

    A statement over it (`INSERT ... SELECT`, `UPDATE ... FROM`) writes every row in one
    step (see the module docstring). Values go through JSON: text, integers and NULL, as
    the `Codec` gives them.
    """
    listed = func.json_each(bindparam(name)).table_valued("value").alias("json_rows")
    columns = {
        # The path inline, not bound: the statement's one parameter is the rows.
        column: func.json_extract(listed.c.value, literal_column(f"'$[{position}]'"))
        for position, column in enumerate(names)
    }
    return listed, columns


def _packed(query: Any) -> Any:
    """SQLite: the query's rows as one row, a JSON array of arrays (one step to fetch).

    Row order within the array is the query's order as SQLite produces it; callers that
    need an order sort the decoded rows.
    """
    inner = query.subquery("packed")
    return select(func.json_group_array(func.json_array(*inner.c)))


def _unpacked(text: str) -> list[tuple[Any, ...]]:
    """The rows of a `_packed` query's one value."""
    return [tuple(row) for row in json.loads(text)]


def typed_parameter(name: str, type_: Any, dialect: Dialect) -> Any:
    """A bound value in a SELECT list, cast where the database cannot infer its type.

    PostgreSQL needs the cast (`$1` alone is text); SQLite must not get one, since a
    CAST there applies numeric affinity to timestamp text.
    """
    if dialect == "postgresql":
        return sql_cast(bindparam(name, type_=type_), type_)
    return bindparam(name, type_=type_)


Ordering = Callable[[Mapping[str, Any]], tuple[Any, ...]]


class DriverStatement:
    """A statement compiled once per dialect and executed with tuples in its bind order."""

    def __init__(
        self,
        build: Callable[[Dialect], ClauseElement],
        keys: Sequence[str] | None = None,
        *,
        many: bool = False,
        packed: bool = False,
        json_rows: Sequence[str] | None = None,
    ) -> None:
        # `build(dialect)` returns the Core statement; `keys` are the columns an INSERT
        # or UPDATE takes (default: every bind parameter of the statement).
        # SQLite only: `packed`, a SELECT whose rows come back as one JSON array (`fetch`
        # decodes it); `json_rows`, the value names of a statement that `build("sqlite")`
        # writes over `json_rows(...)` (run by `execute_rows` with one parameter).
        self._build = build
        self._keys = list(keys) if keys is not None else None
        self._many = many
        self._packed = packed
        self._json_rows = list(json_rows) if json_rows is not None else None
        self._compiled: dict[str, tuple[str, Ordering]] = {}
        # Values SQLAlchemy binds by itself (SQLite's `OFFSET 0` after a bound LIMIT).
        self._fixed: dict[str, dict[str, Any]] = {}
        self._names: dict[str, list[str]] = {}

    def _for(self, db: Database) -> tuple[str, Ordering]:
        found = self._compiled.get(db.dialect)
        if found is None:
            statement = self._build(db.dialect)
            many = self._many
            if db.is_sqlite and self._packed:
                statement = _packed(statement)
            if db.is_sqlite and self._json_rows is not None:
                many = False
            compiled = statement.compile(
                dialect=db.engine.dialect,
                column_keys=self._keys if many else None,
                for_executemany=many,
            )
            binds = getattr(compiled, "binds", {})
            fixed = {
                name: bind.effective_value for name, bind in binds.items() if not bind.required
            }
            if fixed and self._many:
                raise ValueError(f"an executemany statement binds fixed values: {sorted(fixed)}")
            self._fixed[db.dialect] = fixed
            names = list(getattr(compiled, "positiontup", None) or ())
            self._names[db.dialect] = names
            found = self._compiled[db.dialect] = (compiled.string, _ordering(names))
        return found

    def _single(self, db: Database, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        sql, order = self._for(db)
        fixed = self._fixed[db.dialect]
        return sql, order({**fixed, **values} if fixed else values)

    def tuples(self, db: Database, rows: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Each row's values in this statement's bind order."""
        _, order = self._for(db)
        return [order(row) for row in rows]

    async def execute_many(
        self, conn: AsyncConnection, db: Database, rows: Iterable[Mapping[str, Any]]
    ) -> None:
        """Run the statement once per row, as one executemany."""
        sql, order = self._for(db)
        params = [order(row) for row in rows]
        if params:
            await conn.exec_driver_sql(sql, params)

    async def execute_rows(
        self,
        conn: AsyncConnection,
        db: Database,
        names: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
    ) -> int:
        """Like `execute_many`, with each row a tuple of values in `names` order; the number
        of rows changed."""
        if not rows:
            return 0
        sql, params = self.rows_params(db, names, rows)
        result = await conn.exec_driver_sql(sql, params)
        return int(result.rowcount)

    def rows_params(
        self, db: Database, names: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> tuple[str, Any]:
        """The SQL and its parameters for these rows: a list of tuples (an executemany), or
        on SQLite over `json_rows` one tuple with the JSON text."""
        sql, _ = self._for(db)
        packing = db.is_sqlite and self._json_rows is not None
        bound = (
            self._json_rows if packing and self._json_rows is not None else self._names[db.dialect]
        )
        positions = [list(names).index(name) for name in bound]
        if positions == list(range(len(names))):
            params: Sequence[tuple[Any, ...]] = rows
        else:
            pick = itemgetter(*positions)
            params = [pick(row) if len(positions) > 1 else (pick(row),) for row in rows]
        if packing:
            return sql, (json.dumps(params),)
        return sql, list(params)

    # The same on a plain sqlite3 connection, on the thread that owns it
    # (`Database.write_at_once`).

    def execute_rows_now(
        self,
        conn: sqlite3.Connection,
        db: Database,
        names: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
    ) -> int:
        """`execute_rows`, on a sqlite3 connection."""
        if not rows:
            return 0
        sql, params = self.rows_params(db, names, rows)
        if self._json_rows is not None:
            return conn.execute(sql, params).rowcount
        return conn.executemany(sql, params).rowcount

    def execute_now(
        self, conn: sqlite3.Connection, db: Database, values: Mapping[str, Any]
    ) -> sqlite3.Cursor:
        """Run the statement once on a sqlite3 connection; its cursor."""
        sql, params = self._single(db, values)
        return conn.execute(sql, params)

    def execute_returning_now(
        self, conn: sqlite3.Connection, db: Database, values: Mapping[str, Any]
    ) -> tuple[int, tuple[Any, ...] | None]:
        """`execute_returning`, on a sqlite3 connection."""
        cursor = self.execute_now(conn, db, values)
        row = cursor.fetchone() if cursor.description else None
        return cursor.rowcount, None if row is None else tuple(row)

    def fetch_now(
        self, conn: sqlite3.Connection, db: Database, values: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """`fetch`, on a sqlite3 connection."""
        cursor = self.execute_now(conn, db, values)
        if self._packed:
            return _unpacked(cursor.fetchone()[0])
        return cursor.fetchall()

    async def fetch(
        self, conn: AsyncConnection, db: Database, values: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Run the statement once; its rows as plain tuples."""
        sql, params = self._single(db, values)
        result = await conn.exec_driver_sql(sql, params)
        if db.is_sqlite and self._packed:
            return _unpacked(result.scalar_one())
        return [tuple(row) for row in result.fetchall()] if result.returns_rows else []

    async def execute_returning(
        self, conn: AsyncConnection, db: Database, values: Mapping[str, Any]
    ) -> tuple[int, tuple[Any, ...] | None]:
        """Run the statement once; (rows changed, the first row it returned, if any)."""
        sql, params = self._single(db, values)
        result = await conn.exec_driver_sql(sql, params)
        row = result.fetchone() if result.returns_rows else None
        return int(result.rowcount), None if row is None else tuple(row)

    async def execute(self, conn: AsyncConnection, db: Database, values: Mapping[str, Any]) -> int:
        """Run the statement once; the number of rows it changed."""
        sql, params = self._single(db, values)
        result = await conn.exec_driver_sql(sql, params)
        return int(result.rowcount)


def _ordering(names: Sequence[str]) -> Ordering:
    """A function picking a row's values in `names` order, as a tuple (C speed)."""
    if len(names) > 1:
        return cast(Ordering, itemgetter(*names))
    if not names:
        return lambda _row: ()
    name = names[0]
    return lambda row: (row[name],)
