"""PostgreSQL plumbing: connecting with a clear error, and moving Arrow tables in and out
with COPY (CSV), which is an order of magnitude faster than row inserts."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from etl.errors import DatabaseUnavailable
from etl.progress import progress_bar

COPY_BATCH_ROWS = 20_000


def redact(url: str) -> str:
    """host:port/database only: URLs may carry a password and messages end up in logs."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"


def connect(url: str) -> psycopg.Connection[Any]:
    try:
        # Autocommit: each `with conn.transaction()` is then a real transaction, not a
        # savepoint inside an implicit one that closing would silently roll back.
        conn = psycopg.connect(url, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "refused"
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {redact(url)}: {reason}") from exc
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def copy_in(conn: psycopg.Connection[Any], table: sql.Composable, data: pa.Table, step: str) -> int:
    """Append `data` to `table` (columns matched by name), inside the caller's transaction."""
    columns = sql.SQL(", ").join(sql.Identifier(n) for n in data.column_names)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(table, columns)
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    with (
        conn.cursor() as cur,
        cur.copy(statement) as copy,
        progress_bar(data.num_rows, step) as bar,
    ):
        for batch in data.to_batches(max_chunksize=COPY_BATCH_ROWS):
            buffer = io.BytesIO()
            pa_csv.write_csv(pa.Table.from_batches([batch]), buffer, options)
            copy.write(buffer.getbuffer())
            bar.update(batch.num_rows)
    return int(data.num_rows)


def copy_out(conn: psycopg.Connection[Any], query: sql.Composable, schema: pa.Schema) -> pa.Table:
    """Run `query` and read its rows as an Arrow table of `schema` (columns in that order)."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(query)
    chunks: list[bytes] = []
    with conn.cursor() as cur, cur.copy(statement) as copy:
        chunks.extend(bytes(data) for data in copy)
    raw = b"".join(chunks)
    if not raw:
        return schema.empty_table()
    convert = pa_csv.ConvertOptions(
        column_types={f.name: f.type for f in schema},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )
    table = pa_csv.read_csv(
        io.BytesIO(raw),
        read_options=pa_csv.ReadOptions(block_size=64 << 20),
        convert_options=convert,
    )
    return table.select(schema.names).cast(schema)


def schema_table(schema_name: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema_name), sql.Identifier(table))
