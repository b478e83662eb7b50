"""The analytical store: DuckDB (embedded default) or a PostgreSQL schema, same tables.

A wide fact table, `fact_transaction`: one row per transaction, every analysts' column
under its own name plus the derived columns (docs/etl.md says why not a star), the summary
code catalogue as `dim_summary`, the load log and the incremental watermark. A load
replaces whole days (and every row of the users' processes it recomputed) inside one
transaction: re-running a day never duplicates it.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa
from psycopg import sql

from etl.dates import DayRange
from etl.errors import DatabaseUnavailable
from etl.pgio import connect, copy_in, copy_out
from etl.schema import (
    FACT_FIELDS,
    FACT_NAMES,
    FACT_SCHEMA,
    SQL_TYPES,
    column_ddl,
    column_list,
    quote,
)
from shared.codes import SUMMARIES
from shared.settings import Settings

FACT = "fact_transaction"
WATERMARK = "watermark"


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class Warehouse(ABC):
    """Backend-neutral SQL; subclasses run it and move Arrow batches in and out."""

    name: str
    prefix: str
    #: The schema its tables are in, as information_schema names it.
    schema_name: str

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def execute(self, statement: str) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    @abstractmethod
    def _put_batch(self, fact: pa.Table) -> None:
        """Make `fact` readable as the relation `batch` for the current transaction."""

    @abstractmethod
    def _drop_batch(self) -> None: ...

    @abstractmethod
    def read(self, days: DayRange | None = None) -> pa.Table:
        """The fact rows of `days` (all when None), in the fact schema."""

    def t(self, table: str) -> str:
        return self.prefix + quote(table)

    def ensure(self) -> None:
        catalogue = ", ".join(
            "("
            + ", ".join(
                _literal(v) for v in (s.code, str(s.status), s.reason, s.description, s.http_code)
            )
            + ")"
            for s in SUMMARIES
        )
        with self.transaction():
            self.execute(
                f"CREATE TABLE IF NOT EXISTS {self.t(FACT)} (\n  {column_ddl(FACT_FIELDS)}\n)"
            )
            # A model added to the manifest adds its columns to a warehouse made before it.
            present = {
                str(row[0])
                for row in self.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                    f"{_literal(self.schema_name)} AND table_name = {_literal(FACT)}"
                )
            }
            for f in FACT_FIELDS:
                if f.name not in present:
                    self.execute(
                        f"ALTER TABLE {self.t(FACT)} ADD COLUMN {quote(f.name)} {SQL_TYPES[f.type]}"
                    )
            self.execute(
                f"CREATE TABLE IF NOT EXISTS {self.t('dim_summary')} (code INTEGER PRIMARY KEY,"
                " status TEXT, reason TEXT, description TEXT, http_code INTEGER)"
            )
            self.execute(
                f"INSERT INTO {self.t('dim_summary')} VALUES {catalogue} ON CONFLICT (code) DO"
                " UPDATE SET status = excluded.status, reason = excluded.reason,"
                " description = excluded.description, http_code = excluded.http_code"
            )
            self.execute(
                f"CREATE TABLE IF NOT EXISTS {self.t('etl_state')}"
                " (name TEXT PRIMARY KEY, value TIMESTAMPTZ)"
            )
            self.execute(
                f"CREATE TABLE IF NOT EXISTS {self.t('etl_loads')} (loaded_at TIMESTAMPTZ,"
                " first_day DATE, last_day DATE, rows_loaded BIGINT, synthetic_rows BIGINT)"
            )

    def load(self, fact: pa.Table, days: DayRange) -> int:
        """Replace `days`, and any row of `fact` elsewhere, with `fact`; one transaction."""
        fact = fact.select(FACT_NAMES).cast(FACT_SCHEMA)
        columns = column_list(FACT_NAMES)
        with self.transaction():
            try:
                self._put_batch(fact)
                self.execute(
                    f"DELETE FROM {self.t(FACT)} WHERE day BETWEEN DATE '{days.first}' AND "
                    f"DATE '{days.last}' OR file_token IN (SELECT file_token FROM batch)"
                )
                self.execute(f"INSERT INTO {self.t(FACT)} ({columns}) SELECT {columns} FROM batch")
                self.execute(
                    f"INSERT INTO {self.t('etl_loads')} SELECT now(), DATE '{days.first}',"
                    f" DATE '{days.last}', count(*), count(*) FILTER (WHERE is_synthetic)"
                    " FROM batch"
                )
            finally:
                self._drop_batch()
        return int(fact.num_rows)

    def count(self, days: DayRange | None = None) -> int:
        where = (
            ""
            if days is None
            else (f" WHERE day BETWEEN DATE '{days.first}' AND DATE '{days.last}'")
        )
        return int(self.execute(f"SELECT count(*) FROM {self.t(FACT)}{where}")[0][0])

    def day_bounds(self) -> tuple[Any, Any]:
        row = self.execute(f"SELECT min(day), max(day) FROM {self.t(FACT)}")[0]
        return row[0], row[1]

    def watermark(self) -> datetime | None:
        rows = self.execute(f"SELECT value FROM {self.t('etl_state')} WHERE name = '{WATERMARK}'")
        value = rows[0][0] if rows else None
        return value.astimezone(UTC) if isinstance(value, datetime) else None

    def advance_watermark(self, value: datetime) -> datetime:
        """Move the watermark forward (never back: an old day re-run leaves it alone)."""
        current = self.watermark()
        new = value if current is None else max(current, value)
        with self.transaction():
            self.execute(
                f"INSERT INTO {self.t('etl_state')} VALUES ('{WATERMARK}', "
                f"TIMESTAMPTZ '{new.astimezone(UTC).isoformat()}') "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
            )
        return new

    def _where(self, days: DayRange | None) -> str:
        if days is None:
            return ""
        return f" WHERE day BETWEEN DATE '{days.first}' AND DATE '{days.last}'"


class DuckDBWarehouse(Warehouse):
    name = "duckdb"
    prefix = ""
    schema_name = "main"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(str(path))
        except (duckdb.Error, OSError) as exc:
            raise DatabaseUnavailable(f"cannot open the DuckDB warehouse {path}: {exc}") from exc
        self.con.execute("SET TimeZone = 'UTC'")
        self.ensure()

    def close(self) -> None:
        self.con.close()

    def execute(self, statement: str) -> list[tuple[Any, ...]]:
        self.con.execute(statement)
        try:
            return self.con.fetchall()
        except duckdb.InvalidInputException:
            return []  # a statement with no result set

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.begin()
        try:
            yield
        except BaseException:
            self.con.rollback()
            raise
        self.con.commit()

    def _put_batch(self, fact: pa.Table) -> None:
        self.con.register("batch", fact)

    def _drop_batch(self) -> None:
        self.con.unregister("batch")

    def read(self, days: DayRange | None = None) -> pa.Table:
        query = f"SELECT {column_list(FACT_NAMES)} FROM {self.t(FACT)}{self._where(days)}"
        return self.con.sql(query).to_arrow_table().cast(FACT_SCHEMA)


class PostgresWarehouse(Warehouse):
    name = "postgres"

    def __init__(self, url: str, schema: str) -> None:
        self.schema = schema
        self.schema_name = schema
        self.prefix = quote(schema) + "."
        self.conn = connect(url)
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
        self.ensure()

    def close(self) -> None:
        self.conn.close()

    def execute(self, statement: str) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(statement.encode())
        return list(cur.fetchall()) if cur.description else []

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def block() -> Iterator[None]:
            with self.conn.transaction():
                yield

        return block()

    def _put_batch(self, fact: pa.Table) -> None:
        self.execute(f"CREATE TEMP TABLE batch (LIKE {self.t(FACT)}) ON COMMIT DROP")
        copy_in(self.conn, sql.Identifier("batch"), fact, "load postgres")

    def _drop_batch(self) -> None:
        pass  # ON COMMIT DROP

    def read(self, days: DayRange | None = None) -> pa.Table:
        query = f"SELECT {column_list(FACT_NAMES)} FROM {self.t(FACT)}{self._where(days)}"
        return copy_out(self.conn, sql.SQL(query), FACT_SCHEMA)

    def drop_schema(self) -> None:
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


def open_warehouse(settings: Settings, backend: str | None = None) -> Warehouse:
    chosen = backend or settings.etl_backend
    if chosen == "postgres":
        return PostgresWarehouse(settings.etl_postgres_url, settings.etl_warehouse_schema)
    return DuckDBWarehouse(settings.etl_warehouse)
