"""Warehouse loads are idempotent: a day re-run is replaced, never duplicated."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from etl.dates import DayRange
from etl.extract import extract_documents
from etl.transform import transform
from etl.warehouse import DuckDBWarehouse
from tests.unit.test_etl_dataset import DAY1, DAY2, documents

BOTH = DayRange(date.fromisoformat(DAY1), date.fromisoformat(DAY2))
SECOND = DayRange(date.fromisoformat(DAY2), date.fromisoformat(DAY2))


def test_loading_the_same_days_twice_keeps_one_copy(tmp_path: Path) -> None:
    fact = transform(extract_documents(documents(), "s"))
    with DuckDBWarehouse(tmp_path / "w.duckdb") as warehouse:
        warehouse.load(fact, BOTH)
        warehouse.load(fact, BOTH)
        assert warehouse.count() == 10
        assert warehouse.count(SECOND) == 3
        loads = warehouse.execute("SELECT count(*), sum(rows_loaded) FROM etl_loads")
        assert loads == [(2, 20)]


def test_rerunning_a_day_replaces_it_and_leaves_other_days_alone(tmp_path: Path) -> None:
    docs = documents()
    with DuckDBWarehouse(tmp_path / "w.duckdb") as warehouse:
        warehouse.load(transform(extract_documents(docs, "s")), BOTH)
        # Day 2 again, now without t10 (say it was deleted upstream): day 2 is replaced.
        day2 = [d for d in docs if d["file_token"] in ("t08", "t09")]
        warehouse.load(transform(extract_documents(day2, "s")), SECOND)
        tokens = {r["file_token"] for r in warehouse.read().to_pylist()}
    assert len(tokens) == 9 and "t10" not in tokens and "t01" in tokens


def test_the_warehouse_survives_reopening(tmp_path: Path) -> None:
    with DuckDBWarehouse(tmp_path / "w.duckdb") as warehouse:
        warehouse.load(transform(extract_documents(documents(), "s")), BOTH)
    with DuckDBWarehouse(tmp_path / "w.duckdb") as warehouse:
        assert warehouse.count() == 10
        codes = warehouse.execute("SELECT count(*) FROM dim_summary WHERE code = 90")
        assert codes == [(1,)]


def test_the_watermark_only_moves_forward(tmp_path: Path) -> None:
    later = datetime(2026, 3, 3, 12, tzinfo=UTC)
    with DuckDBWarehouse(tmp_path / "w.duckdb") as warehouse:
        assert warehouse.watermark() is None
        assert warehouse.advance_watermark(later) == later
        assert warehouse.advance_watermark(datetime(2026, 3, 1, tzinfo=UTC)) == later
        assert warehouse.watermark() == later


def test_a_warehouse_made_before_a_model_was_added_gets_its_columns(tmp_path: Path) -> None:
    from etl.schema import FACT_NAMES

    path = tmp_path / "w.duckdb"
    with DuckDBWarehouse(path) as warehouse:
        # As if the last columns (a model added to the manifest since) were not there.
        for name in FACT_NAMES[-2:]:
            warehouse.execute(f'ALTER TABLE fact_transaction DROP COLUMN "{name}"')
    with DuckDBWarehouse(path) as warehouse:
        warehouse.load(transform(extract_documents(documents(), "s")), BOTH)
        assert warehouse.count() == 10
        assert set(warehouse.read().column_names) == set(FACT_NAMES)
