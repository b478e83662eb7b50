"""Staging: the raw extract in PostgreSQL, one explicit table, replaced a day at a time.

A re-run of a day deletes that day and inserts it again inside one transaction, so the
table never holds a day twice, and a failed load leaves the previous version in place.
Staging keeps every day ever extracted: the transform reads a user's whole history from
here to number attempts across days.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from etl.dates import DayRange
from etl.errors import DataQualityError
from etl.pgio import connect, copy_in, copy_out, schema_table
from etl.schema import EXTRACT_FIELDS, EXTRACT_SCHEMA, SQL_TYPES, STAGING_EXTRA, column_ddl

TABLE = "transactions"


def with_day(table: pa.Table) -> pa.Table:
    """The extract plus the UTC day each row belongs to and when it was staged."""
    days = pc.cast(table["date"], pa.date32())
    staged_at = pa.array([datetime.now(UTC)] * table.num_rows, pa.timestamp("us", tz="UTC"))
    return table.append_column("etl_day", days).append_column("staged_at", staged_at)


class Staging:
    def __init__(self, url: str, schema: str) -> None:
        self.schema = schema
        self.conn = connect(url)
        self.table = schema_table(schema, TABLE)

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def ensure(self) -> None:
        ddl = column_ddl([*EXTRACT_FIELDS, *STAGING_EXTRA])
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            self.conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (\n  {}\n)").format(self.table, sql.SQL(ddl))
            )
            # A model added to the manifest adds its columns to a staging table made before it.
            present = {
                str(row[0])
                for row in self.conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s",
                    (self.schema, TABLE),
                ).fetchall()
            }
            for f in [*EXTRACT_FIELDS, *STAGING_EXTRA]:
                if f.name not in present:
                    self.conn.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                            self.table, sql.Identifier(f.name), sql.SQL(SQL_TYPES[f.type])
                        )
                    )
            for name, columns in (
                ("etl_day", ["etl_day"]),
                ("process", ["user_name", "procesoConvenioGuid", "date"]),
                ("file_token", ["file_token"]),
            ):
                self.conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                        sql.Identifier(f"{TABLE}_{name}_idx"),
                        self.table,
                        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                    )
                )

    def replace_days(self, extract: pa.Table, days: DayRange) -> int:
        """Replace the staged rows of `days` with `extract` (which must lie within them)."""
        staged = with_day(extract.cast(EXTRACT_SCHEMA))
        if staged.num_rows:
            first, last = pc.min(staged["etl_day"]).as_py(), pc.max(staged["etl_day"]).as_py()
            if first < days.first or last > days.last:
                raise DataQualityError(
                    f"data quality check failed: extract rows dated {first}..{last} "
                    f"lie outside the days being replaced ({days})"
                )
        self.ensure()
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL("DELETE FROM {} WHERE etl_day BETWEEN %s AND %s").format(self.table),
                (days.first, days.last),
            )
            return copy_in(self.conn, self.table, staged, "stage")

    def read(self, days: DayRange) -> pa.Table:
        """The staged rows of `days`, plus every earlier or later row of the same users'
        processes (their attempt numbers depend on the whole history)."""
        self.ensure()
        names = sql.SQL(", ").join(sql.Identifier(f.name) for f in EXTRACT_FIELDS)
        query = sql.SQL(
            "WITH keys AS (SELECT DISTINCT user_name, {guid} FROM {t}"
            " WHERE etl_day BETWEEN {a} AND {b} AND user_name IS NOT NULL)"
            " SELECT {names} FROM {t} WHERE etl_day BETWEEN {a} AND {b}"
            " UNION ALL"
            " SELECT {names_t} FROM {t} t JOIN keys k ON t.user_name = k.user_name"
            " AND t.{guid} IS NOT DISTINCT FROM k.{guid}"
            " WHERE t.etl_day NOT BETWEEN {a} AND {b}"
        ).format(
            guid=sql.Identifier("procesoConvenioGuid"),
            t=self.table,
            a=sql.Literal(days.first),
            b=sql.Literal(days.last),
            names=names,
            names_t=sql.SQL(", ").join(
                sql.SQL("t.{}").format(sql.Identifier(f.name)) for f in EXTRACT_FIELDS
            ),
        )
        return copy_out(self.conn, query, EXTRACT_SCHEMA)

    def count(self, days: DayRange | None = None) -> int:
        query: Any = sql.SQL("SELECT count(*) FROM {}").format(self.table)
        params: tuple[Any, ...] = ()
        if days is not None:
            query = sql.SQL("SELECT count(*) FROM {} WHERE etl_day BETWEEN %s AND %s").format(
                self.table
            )
            params = (days.first, days.last)
        row = self.conn.execute(query, params).fetchone()
        return int(row[0]) if row else 0

    def drop_schema(self) -> None:
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )
