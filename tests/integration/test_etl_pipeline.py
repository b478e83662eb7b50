"""The ETL on real servers: transactions that went through the real pipeline (the session
stack), extracted from the MongoDB-wire server, staged in the real PostgreSQL (a unique
schema per run, dropped afterwards), loaded into DuckDB and PostgreSQL, reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from etl import pipeline
from etl.columns import COLUMN_NAMES
from etl.dates import DayRange
from etl.errors import DataQualityError
from etl.extract import extract_documents
from etl.files import Manifest, write_extract
from etl.pipeline import Options
from etl.staging import Staging
from etl.warehouse import DuckDBWarehouse
from shared.pipeline import STAGES
from shared.settings import Settings
from shared.storage import Doc
from tests.integration.conftest import ApiClient, submit, wait_final
from tests.unit.test_etl_dataset import DAY1, DAY2, documents
from tools.stack import Stack, free_port

pytestmark = pytest.mark.integration

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def etl_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for `faceval etl` beside the session stack, with schemas of its own."""
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "FACEVAL_ETL_STAGING_SCHEMA": f"etl_test_staging_{run}",
        "FACEVAL_ETL_WAREHOUSE_SCHEMA": f"etl_test_warehouse_{run}",
        "FACEVAL_ETL_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
    }
    yield env
    _drop_schemas(env["FACEVAL_ETL_STAGING_SCHEMA"], env["FACEVAL_ETL_WAREHOUSE_SCHEMA"])


def _drop_schemas(*schemas: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def _etl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "etl", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def _final(client: ApiClient, near: bytes, far: bytes, **form: str) -> dict[str, Any]:
    body: dict[str, Any] = submit(client, near, far, 30, **form).json()
    if body["status"] != "completed":
        body = wait_final(client, body["transaction_id"])
    assert body["status"] == "completed", body
    return body


def _pg_count(query: str) -> int:
    with psycopg.connect(PG_URL) as conn:
        row = conn.execute(query.encode()).fetchone()
    return int(row[0]) if row else 0


def test_etl_run_reports_real_pipeline_transactions_anonymised_and_idempotently(
    stack: Stack,
    client_a: ApiClient,
    client_b: ApiClient,
    astronaut_jpegs: tuple[bytes, bytes],
    no_face_jpegs: tuple[bytes, bytes],
    blurred_jpegs: tuple[bytes, bytes],
    read_doc: Callable[[str], Doc | None],
    etl_env: dict[str, str],
    tmp_path: Path,
) -> None:
    raw_user = f"RAW{uuid.uuid4().hex[:10]}"
    process = str(uuid.uuid4())
    rejected = _final(client_a, *no_face_jpegs, user_id=raw_user, process_guid=process)
    accepted = _final(client_a, *astronaut_jpegs, user_id=raw_user, process_guid=process)
    blurred = _final(client_b, *blurred_jpegs, user_id=f"{raw_user}b")
    assert (rejected["summary_reason"], accepted["summary_reason"]) == ("no_face", "accepted")
    tokens = [r["transaction_id"] for r in (rejected, accepted, blurred)]
    docs = [read_doc(t) for t in tokens]
    first_day = min(d["created_at"] for d in docs if d).date()
    out = tmp_path / "out"

    done = _etl(etl_env, "run", "--out", str(out), "--since", str(first_day))
    assert done.returncode == 0, done.stderr
    assert {
        "extract.csv",
        "extract.parquet",
        "data_dictionary.md",
        "report.html",
        "report.json",
    } <= {p.name for p in out.iterdir()}
    assert list((out / "charts").glob("*.png"))

    extract = pa_csv.read_csv(out / "extract.csv")
    assert extract.column_names == COLUMN_NAMES
    rows = {r["file_token"]: r for r in extract.to_pylist() if r["file_token"] in tokens}
    assert set(rows) == set(tokens)
    assert rows[tokens[0]]["summary_code"] == 10
    assert rows[tokens[0]]["time_ms_pad_near_img"] is None  # early termination: null
    assert rows[tokens[1]]["time_ms_pad_near_img"] > 0
    assert rows[tokens[0]]["user_name"] == rows[tokens[1]]["user_name"]
    stored = docs[0]["user_name"] if docs[0] else ""
    for path in [p for p in out.rglob("*") if p.is_file()] + [tmp_path / "warehouse.duckdb"]:
        data = path.read_bytes()
        assert raw_user.encode() not in data, path
        assert stored.encode() not in data, path  # the operational pseudonym is re-keyed
    assert raw_user not in str(pq.read_table(out / "extract.parquet").to_pylist())

    report = json.loads((out / "report.json").read_text())
    clients = {c["client"]: c for c in report["acceptance"]["per_client"]}
    assert clients[docs[0]["convenio"] if docs[0] else ""]["accepted"] >= 1
    assert report["bottlenecks"]["top_bottleneck"]["service"] in STAGES
    assert report["retries"]["processes"] >= 2

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    retry = con.execute(
        "SELECT attempt_number, previous_summary_reason, decided_stage FROM fact_transaction"
        " WHERE file_token = ?",
        [tokens[1]],
    ).fetchall()
    first = con.execute(
        "SELECT decided_stage, retried_after FROM fact_transaction WHERE file_token = ?",
        [tokens[0]],
    ).fetchall()
    total = con.execute("SELECT count(*) FROM fact_transaction").fetchall()[0][0]
    con.close()
    assert retry == [(2, "no_face", "pad")]
    assert first == [("face_detector", True)]

    staging = f'"{etl_env["FACEVAL_ETL_STAGING_SCHEMA"]}".transactions'
    staged = _pg_count(f"SELECT count(*) FROM {staging}")
    again = _etl(etl_env, "run", "--out", str(out), "--since", str(first_day))
    assert again.returncode == 0, again.stderr
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM fact_transaction").fetchall()[0][0] == total
    con.close()
    assert _pg_count(f"SELECT count(*) FROM {staging}") == staged
    assert staged == total

    pg = _etl(etl_env, "run", "--out", str(out), "--since", str(first_day), "--backend", "postgres")
    assert pg.returncode == 0, pg.stderr
    fact = f'"{etl_env["FACEVAL_ETL_WAREHOUSE_SCHEMA"]}".fact_transaction'
    assert _pg_count(f"SELECT count(*) FROM {fact}") == total
    quoted = ", ".join(f"'{t}'" for t in tokens)
    assert _pg_count(f"SELECT count(*) FROM {fact} WHERE file_token IN ({quoted})") == 3


def test_unreachable_databases_and_empty_ranges_fail_with_stable_messages(
    stack: Stack, etl_env: dict[str, str], tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    empty = _etl(etl_env, "run", "--out", out, "--since", "2001-01-01", "--until", "2001-01-02")
    assert empty.returncode == 3
    assert "faceval etl run: no finished transactions in 2001-01-01..2001-01-02" in empty.stderr

    port = free_port()
    no_mongo = {
        **etl_env,
        "FACEVAL_MONGO_URL": f"mongodb://127.0.0.1:{port}/",
        "FACEVAL_EMBEDDED_MONGO": "false",
    }
    down = _etl(no_mongo, "extract", "--out", out, "--since", "2001-01-01")
    assert down.returncode == 2
    assert f"faceval etl extract: cannot reach MongoDB at 127.0.0.1:{port}" in down.stderr

    no_pg = {**etl_env, "FACEVAL_ETL_POSTGRES_URL": f"postgresql://postgres@127.0.0.1:{port}/x"}
    down = _etl(no_pg, "report", "--out", out, "--backend", "postgres")
    assert down.returncode == 2
    assert f"faceval etl report: cannot reach PostgreSQL at 127.0.0.1:{port}/x" in down.stderr


# --- incremental runs across days, on PostgreSQL staging (no stack needed) -------------------


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    schema = f"etl_test_staging_{uuid.uuid4().hex[:8]}"
    yield Settings(etl_staging_schema=schema, etl_warehouse=tmp_path / "w.duckdb")
    _drop_schemas(schema)


def _day_extract(out: Path, docs: list[dict[str, Any]], day: str) -> None:
    on_day = [d for d in docs if d["created_at"].date().isoformat() == day]
    days = DayRange(date.fromisoformat(day), date.fromisoformat(day))
    manifest = Manifest(days.first, days.last, len(on_day), 0, False, datetime.now(UTC), days.end)
    write_extract(extract_documents(on_day, "s"), manifest, out)


def _steps(settings: Settings, out: Path) -> None:
    options = Options(out=out)
    pipeline.stage(settings, options, print)
    pipeline.transform_step(settings, options, print)
    pipeline.load(settings, options, print)


def _facts(settings: Settings) -> dict[str, dict[str, Any]]:
    with DuckDBWarehouse(settings.etl_warehouse) as warehouse:
        return {r["file_token"]: r for r in warehouse.read().to_pylist()}


def test_attempts_are_numbered_across_nightly_runs_and_reruns_do_not_duplicate(
    settings: Settings, tmp_path: Path
) -> None:
    docs = documents()
    # User u3's third attempt comes the next day: the nightly run of day 2 must see days 1.
    t06 = next(d for d in docs if d["file_token"] == "t06")
    t06["created_at"] = t06["created_at"] + timedelta(days=1)
    out = tmp_path / "out"

    _day_extract(out, docs, DAY1)
    _steps(settings, out)
    assert _facts(settings)["t05"]["retried_after"] is False  # nothing later known yet

    _day_extract(out, docs, DAY2)
    _steps(settings, out)
    facts = _facts(settings)
    assert facts["t06"]["attempt_number"] == 3
    assert facts["t06"]["previous_summary_reason"] == "accessory_detected"
    assert facts["t06"]["ms_since_previous_attempt"] == (24 * 60 + 4) * 60_000
    assert facts["t05"]["retried_after"] is True  # day 1's row was recomputed
    assert len(facts) == 10

    _steps(settings, out)  # day 2 again
    assert len(_facts(settings)) == 10
    with Staging(settings.etl_postgres_url, settings.etl_staging_schema) as staging:
        assert staging.count() == 10
        assert staging.count(DayRange(date.fromisoformat(DAY2), date.fromisoformat(DAY2))) == 4
        day1_rows = extract_documents([d for d in docs if d["file_token"] == "t01"], "s")
        with pytest.raises(DataQualityError, match="outside the days being replaced"):
            staging.replace_days(
                day1_rows, DayRange(date.fromisoformat(DAY2), date.fromisoformat(DAY2))
            )
        assert staging.count() == 10
