"""Benchmark: the full ETL on 1,000,000 synthetic transactions, rows/s for each step.

    .venv/bin/python bench/etl_bench.py [--rows 1000000] [--mongo-rows 20000]

What is measured (docs/etl.md has the figures):
- extract: synthetic *documents* inserted into a fresh embedded MongoDB-wire server
  (secantusdb), then the real extraction (read, `analyst_row`, re-keying, Arrow) of
  `--mongo-rows` of them. Extraction is per-document Python, so it is measured on a
  smaller count and its rate extrapolates linearly.
- files: the 1M-row extract written as CSV and Parquet.
- stage: COPY into PostgreSQL staging (a throw-away schema), replacing its days.
- transform: read back from staging (COPY out), data-quality checks, derived columns.
- load duckdb / load postgres: the wide fact table, replacing its days, one transaction.
- report: the three analyses, charts and HTML, from the DuckDB warehouse.
The 1M rows are generated column-wise (etl.synthetic) and fed in after extraction.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psycopg

from etl.dates import DayRange
from etl.extract import extract_from_mongo, operational_store
from etl.files import Manifest, write_extract
from etl.reports.build import write_report
from etl.staging import Staging
from etl.synthetic import synthetic_documents, synthetic_table
from etl.transform import transform
from etl.warehouse import DuckDBWarehouse, PostgresWarehouse
from shared.settings import Settings
from shared.storage import Store
from tools.stack import free_port

T = TypeVar("T")
DAYS = 7


def timed(step: str, rows: int, action: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    print(
        f"{step:<16} {rows:>10,} rows {seconds:8.2f} s {rows / seconds:>12,.0f} rows/s", flush=True
    )
    return result


def bench_extract(settings: Settings, rows: int, days: DayRange) -> None:
    docs = synthetic_documents(rows, seed=11, first_day=days.first, days=DAYS)

    async def insert() -> None:
        store = Store(settings.mongo_url, settings.mongo_db)
        try:
            for start in range(0, len(docs), 5000):
                await store.insert_transactions(docs[start : start + 5000])
        finally:
            store.close()

    with operational_store(settings):
        timed("mongo insert", rows, lambda: asyncio.run(insert()))
        table = timed("extract", rows, lambda: extract_from_mongo(settings, days, True))
    assert table.num_rows == rows, table.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mongo-rows", type=int, default=20_000)
    args = parser.parse_args()
    first = datetime.now(UTC).date() - timedelta(days=DAYS)
    days = DayRange(first, first + timedelta(days=DAYS - 1))
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="etl-bench-") as tmp:
        work = Path(tmp)
        settings = Settings(
            mongo_url=f"mongodb://127.0.0.1:{free_port()}/",
            mongo_db="etl_bench",
            state_dir=work / "state",
            etl_staging_schema=f"etl_bench_staging_{run}",
            etl_warehouse_schema=f"etl_bench_warehouse_{run}",
        )
        print(
            f"ETL benchmark: {args.rows:,} synthetic transactions over {DAYS} days "
            f"(extraction on {args.mongo_rows:,} documents)"
        )
        bench_extract(settings, args.mongo_rows, days)
        table = timed("generate", args.rows, lambda: synthetic_table(args.rows, 3, first, DAYS))
        now = datetime.now(UTC)
        manifest = Manifest(
            days.first, days.last, table.num_rows, table.num_rows, True, now, days.end
        )
        timed("csv+parquet", args.rows, lambda: write_extract(table, manifest, work / "out"))
        try:
            with Staging(settings.etl_postgres_url, settings.etl_staging_schema) as staging:
                timed("stage", args.rows, lambda: staging.replace_days(table, days))
                staged = timed("read staging", args.rows, lambda: staging.read(days))
            fact = timed("transform", args.rows, lambda: transform(staged))
            with DuckDBWarehouse(work / "warehouse.duckdb") as duck:
                timed("load duckdb", args.rows, lambda: duck.load(fact, days))
                timed("reload duckdb", args.rows, lambda: duck.load(fact, days))
                from_duck = timed("read duckdb", args.rows, lambda: duck.read())
            with PostgresWarehouse(settings.etl_postgres_url, settings.etl_warehouse_schema) as pg:
                timed("load postgres", args.rows, lambda: pg.load(fact, days))
            timed("report", args.rows, lambda: write_report(from_duck, work / "out", 24.0, "bench"))
        finally:
            with psycopg.connect(settings.etl_postgres_url, autocommit=True) as conn:
                for schema in (settings.etl_staging_schema, settings.etl_warehouse_schema):
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


if __name__ == "__main__":
    main()
