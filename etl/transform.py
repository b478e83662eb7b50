"""Transform: typed rows, checked, with the derived analytical columns.

Runs in an in-memory DuckDB over the staged rows (Arrow, zero copy). Nulls stay nulls: a
stage that did not run has no time, and the sums below add only the stages that ran.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from etl import quality
from etl.schema import DERIVED_FIELDS, EXTRACT_SCHEMA, FACT_SCHEMA, STAGE_TIMINGS, quote
from etl.synthetic import SYNTHETIC_API_HASH
from shared.pipeline import STAGES


def memory_db() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    # Days and hours are UTC whatever the machine's zone is.
    con.execute("SET TimeZone = 'UTC'")
    return con


def _sum_or_null(columns: list[str]) -> str:
    present = " OR ".join(f"{quote(c)} IS NOT NULL" for c in columns)
    total = " + ".join(f"coalesce({quote(c)}, 0)" for c in columns)
    return f"CASE WHEN {present} THEN {total} END"


def _stage_ran(stage: str) -> str:
    cols = [t[2] for t in STAGE_TIMINGS if t[0] == stage]
    return " OR ".join(f"{quote(c)} IS NOT NULL" for c in cols)


def derived_sql(relation: str) -> str:
    exec_cols = [t[2] for t in STAGE_TIMINGS]
    queue_cols = [t[3] for t in STAGE_TIMINGS]
    last_stage = " ".join(f"WHEN {_stage_ran(s)} THEN '{s}'" for s in reversed(STAGES))
    stages_run = " + ".join(f"CAST(({_stage_ran(s)}) AS INTEGER)" for s in STAGES)
    window = "PARTITION BY process_key ORDER BY date, file_token"
    derived = {
        "day": "CAST(date AS DATE)",
        "hour": "date_trunc('hour', date)",
        "is_synthetic": f"coalesce(api_hash = '{SYNTHETIC_API_HASH}', false)",
        "is_accepted": "coalesce(summary_status = 'accepted', false)",
        "last_stage_run": "last_stage_run",
        "decided_stage": "coalesce(decided_by, last_stage_run)",
        "stages_run": "stages_run",
        "process_key": "process_key",
        "attempt_number": f"row_number() OVER ({window})",
        "attempts_in_process": "count(*) OVER (PARTITION BY process_key)",
        "ms_since_previous_attempt": (
            f"(epoch_us(date) - epoch_us(lag(date) OVER ({window}))) / 1000.0"
        ),
        "previous_summary_reason": f"lag(summary_reason) OVER ({window})",
        "retried_after": f"lead(file_token) OVER ({window}) IS NOT NULL",
        "exec_ms_total": "exec_ms_total",
        "queue_ms_total": "queue_ms_total",
        "queue_share": "queue_ms_total / nullif(queue_ms_total + exec_ms_total, 0)",
        "exec_share": "exec_ms_total / nullif(queue_ms_total + exec_ms_total, 0)",
    }
    assert list(derived) == [f.name for f in DERIVED_FIELDS]
    extract_cols = ", ".join(quote(n) for n in EXTRACT_SCHEMA.names)
    derived_cols = ",\n    ".join(f"{expr} AS {quote(name)}" for name, expr in derived.items())
    return f"""
WITH base AS (
  SELECT *,
    CASE {last_stage} END AS last_stage_run,
    {stages_run} AS stages_run,
    -- A user's attempts are grouped within the client's process; rows with no user stand
    -- alone.
    coalesce(user_name || '|' || coalesce("procesoConvenioGuid", ''), 'token:' || file_token)
      AS process_key,
    {_sum_or_null(exec_cols)} AS exec_ms_total,
    {_sum_or_null(queue_cols)} AS queue_ms_total
  FROM {relation}
)
SELECT {extract_cols},
    {derived_cols}
FROM base
ORDER BY date, file_token
"""


def transform(staged: pa.Table) -> pa.Table:
    """Check the staged rows (raises DataQualityError) and add the derived columns."""
    con = memory_db()
    try:
        con.register("staged", staged.select(EXTRACT_SCHEMA.names).cast(EXTRACT_SCHEMA))
        quality.check(con, "staged")
        result = con.sql(derived_sql("staged")).to_arrow_table()
    finally:
        con.close()
    return result.cast(FACT_SCHEMA)
