"""The ETL's steps and `run`, which chains them; each step's input is the previous
step's files in the output folder, so every step can also be run (and re-run) alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from etl.dates import DayRange, today
from etl.errors import EmptyRange
from etl.extract import (
    extract_from_mongo,
    first_transaction_day,
    mongo_host,
    operational_store,
)
from etl.files import (
    EXTRACT_PARQUET,
    TRANSFORMED,
    Manifest,
    read_manifest,
    read_parquet,
    write_extract,
)
from etl.reports.build import write_report
from etl.staging import Staging
from etl.synthetic import SYNTHETIC_API_HASH
from etl.transform import transform
from etl.warehouse import open_warehouse
from shared.settings import Settings

Say = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    out: Path
    backend: str | None = None
    since: date | None = None
    until: date | None = None
    include_synthetic: bool = False

    @property
    def explicit_days(self) -> DayRange | None:
        if self.since is None and self.until is None:
            return None
        first = self.since or self.until
        assert first is not None
        return DayRange(first, self.until or today())


def settle(settings: Settings) -> timedelta:
    """How long after creation a transaction is surely finished (or swept to timeout)."""
    return timedelta(
        seconds=settings.transaction_deadline_seconds + 2 * settings.sweep_interval_seconds
    )


def days_to_extract(settings: Settings, options: Options) -> DayRange:
    """The explicit range, else from the watermark's day (re-read: it may have been
    partial) to today, else from the oldest transaction on a first run."""
    explicit = options.explicit_days
    if explicit is not None:
        return explicit
    with open_warehouse(settings, options.backend) as warehouse:
        mark = warehouse.watermark()
    first = mark.date() if mark else first_transaction_day(settings, options.include_synthetic)
    if first is None:
        raise EmptyRange(
            f"no finished transactions in MongoDB at {mongo_host(settings.mongo_url)} "
            f"(database {settings.mongo_db})"
        )
    return DayRange(min(first, today()), today())


def _timed(say: Say, step: str, rows: int, started: float, detail: str = "") -> None:
    seconds = time.perf_counter() - started
    rate = f", {rows / seconds:,.0f} rows/s" if seconds > 0 and rows else ""
    say(f"{step}: {rows:,} rows{detail} in {seconds:.2f} s{rate}")


def extract(settings: Settings, options: Options, say: Say) -> Manifest:
    started = time.perf_counter()
    with operational_store(settings):
        days = days_to_extract(settings, options)
        now = datetime.now(UTC)
        table = extract_from_mongo(settings, days, options.include_synthetic)
    if table.num_rows == 0:
        raise EmptyRange(f"no finished transactions in {days}")
    synthetic = int(pc.sum(pc.equal(table["api_hash"], SYNTHETIC_API_HASH)).as_py() or 0)
    manifest = Manifest(
        first_day=days.first,
        last_day=days.last,
        rows=table.num_rows,
        synthetic_rows=synthetic,
        include_synthetic=options.include_synthetic,
        extracted_at=now,
        complete_until=min(days.end, now - settle(settings)),
    )
    write_extract(table, manifest, options.out)
    _timed(say, "extract", table.num_rows, started, f" ({days}) -> {options.out}/extract.csv")
    return manifest


def stage(settings: Settings, options: Options, say: Say) -> int:
    started = time.perf_counter()
    manifest = read_manifest(options.out)
    table = read_parquet(options.out / EXTRACT_PARQUET, "extract")
    with Staging(settings.etl_postgres_url, settings.etl_staging_schema) as staging:
        rows = staging.replace_days(table, manifest.days)
    _timed(say, "stage", rows, started, f" -> PostgreSQL {settings.etl_staging_schema}")
    return rows


def transform_step(settings: Settings, options: Options, say: Say) -> int:
    started = time.perf_counter()
    manifest = read_manifest(options.out)
    with Staging(settings.etl_postgres_url, settings.etl_staging_schema) as staging:
        staged = staging.read(manifest.days)
    fact = transform(staged)
    pq.write_table(fact, options.out / TRANSFORMED, compression="zstd")
    _timed(say, "transform", fact.num_rows, started, " (checked)")
    return int(fact.num_rows)


def load(settings: Settings, options: Options, say: Say) -> int:
    started = time.perf_counter()
    manifest = read_manifest(options.out)
    fact = read_parquet(options.out / TRANSFORMED, "transform")
    with open_warehouse(settings, options.backend) as warehouse:
        rows = warehouse.load(fact, manifest.days)
        mark = warehouse.advance_watermark(manifest.complete_until)
        name = warehouse.name
    _timed(say, "load", rows, started, f" -> {name} (watermark {mark.isoformat()})")
    return rows


def report(settings: Settings, options: Options, say: Say) -> Path:
    started = time.perf_counter()
    days = options.explicit_days
    with open_warehouse(settings, options.backend) as warehouse:
        fact = warehouse.read(days)
        name = warehouse.name
    if fact.num_rows == 0:
        raise EmptyRange(
            f"no transactions in the {name} warehouse" + (f" for {days}" if days else "")
        )
    path = write_report(fact, options.out, settings.etl_abandon_after_hours, f"{name} warehouse")
    _timed(say, "report", fact.num_rows, started, f" -> {path}")
    return path


def run(settings: Settings, options: Options, say: Say) -> Path:
    """Everything new: extract, stage, transform, load, then the reports."""
    extract(settings, options, say)
    stage(settings, options, say)
    transform_step(settings, options, say)
    load(settings, options, say)
    return report(settings, options, say)
