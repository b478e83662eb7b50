"""No raw identifier, stored pseudonym or non-listed sensitive field leaves the ETL."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from etl.anonymise import rekey
from etl.columns import ANALYST_COLUMNS, COLUMN_NAMES
from etl.dates import DayRange
from etl.extract import extract_documents
from etl.files import EXTRACT_CSV, Manifest, write_extract
from etl.reports.build import write_report
from etl.transform import transform
from etl.warehouse import DuckDBWarehouse
from tests.unit.test_etl_dataset import (
    DAY1,
    DAY2,
    RAW_DOCUMENT_PREFIX,
    RAW_USER_PREFIX,
    SECRET_REFERENCE,
    documents,
)

SECRET = "etl-test-secret"
FORBIDDEN = (
    RAW_USER_PREFIX,
    RAW_DOCUMENT_PREFIX,
    SECRET_REFERENCE,
    "Secret Bank Name",
    "worker-host-7",
    "free text about the user",
)


def _run_everything(out: Path) -> None:
    from datetime import UTC, date, datetime

    table = extract_documents(documents(), SECRET)
    now = datetime.now(UTC)
    days = DayRange(date.fromisoformat(DAY1), date.fromisoformat(DAY2))
    manifest = Manifest(days.first, days.last, table.num_rows, 0, False, now, days.end)
    write_extract(table, manifest, out)
    with DuckDBWarehouse(out / "warehouse.duckdb") as warehouse:
        warehouse.load(transform(table), days)
        fact = warehouse.read()
    write_report(fact, out, 24.0, "test")


def test_no_raw_identifier_or_dropped_field_survives_in_any_output_file(tmp_path: Path) -> None:
    _run_everything(tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {
        "extract.csv",
        "extract.parquet",
        "report.html",
        "report.json",
        "warehouse.duckdb",
        "data_dictionary.md",
    }
    for path in files:
        data = path.read_bytes()
        for secret in FORBIDDEN:
            assert secret.encode() not in data, f"{secret!r} found in {path.name}"
    # Compressed files are checked on their decoded values too.
    values = str(pq.read_table(tmp_path / "extract.parquet").to_pylist())
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    values += str(con.sql("SELECT * FROM fact_transaction").fetchall())
    con.close()
    for secret in FORBIDDEN:
        assert secret not in values


def test_identifiers_are_rekeyed_consistently_so_a_user_joins_across_runs(tmp_path: Path) -> None:
    first = extract_documents(documents(), SECRET).to_pylist()
    again = extract_documents(documents()[:3], SECRET).to_pylist()
    assert first[0]["user_name"] == first[1]["user_name"] == again[0]["user_name"]
    assert first[0]["user_name"] != first[2]["user_name"]
    assert first[0]["user_name"] == rekey(SECRET, "user_name", f"{RAW_USER_PREFIX}u1")
    # The stored pseudonym itself is not exported either, and user and document differ.
    assert first[0]["user_name"] != first[0]["documento"]
    assert len(first[0]["user_name"]) == 32


def test_another_secret_gives_unlinkable_pseudonyms() -> None:
    one = extract_documents(documents()[:1], SECRET).to_pylist()[0]
    other = extract_documents(documents()[:1], "another-secret").to_pylist()[0]
    assert one["user_name"] != other["user_name"]
    assert one["documento"] != other["documento"]


def test_extract_csv_has_exactly_the_columns_with_the_analysts_list_first(tmp_path: Path) -> None:
    _run_everything(tmp_path)
    header = (tmp_path / EXTRACT_CSV).read_text().splitlines()[0].replace('"', "").split(",")
    assert header == COLUMN_NAMES
    assert header[: len(ANALYST_COLUMNS)] == [c.name for c in ANALYST_COLUMNS]
    assert len(ANALYST_COLUMNS) == 77
