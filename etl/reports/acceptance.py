"""Report 2: acceptance per client, with 95 % Wilson intervals, and why the rest failed.

The acceptance rate is accepted / (accepted + rejected): errors (timeouts, internal
errors) are the service's failures, not the user's, so they are counted apart.
"""

from __future__ import annotations

from typing import Any

import duckdb

from etl.reports.query import rows
from etl.reports.stats import rate_with_ci

COUNTS = (
    "count(*) AS transactions,"
    " count(*) FILTER (WHERE summary_status = 'accepted') AS accepted,"
    " count(*) FILTER (WHERE summary_status = 'rejected') AS rejected,"
    " count(*) FILTER (WHERE summary_status = 'error') AS errors"
)


def _with_rate(row: dict[str, Any]) -> dict[str, Any]:
    decided = row["accepted"] + row["rejected"]
    rate = rate_with_ci(row["accepted"], decided)
    return {
        **row,
        "acceptance_rate": rate["rate"],
        "ci95_low": rate["ci95_low"],
        "ci95_high": rate["ci95_high"],
    }


def compute(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    overall = _with_rate(rows(con, f"SELECT {COUNTS} FROM fact")[0])
    per_client = [
        _with_rate(r)
        for r in rows(
            con, f"SELECT convenio AS client, {COUNTS} FROM fact GROUP BY convenio ORDER BY client"
        )
    ]
    daily = [
        _with_rate(r)
        for r in rows(
            con,
            f"SELECT day, convenio AS client, {COUNTS} FROM fact GROUP BY ALL ORDER BY day, client",
        )
    ]
    by_reason = rows(
        con,
        "SELECT summary_reason AS reason, summary_code AS code, decided_stage AS stage,"
        " count(*) AS count FROM fact WHERE summary_status = 'rejected'"
        " GROUP BY ALL ORDER BY count DESC, reason, stage",
    )
    by_stage = rows(
        con,
        "SELECT decided_stage AS stage, count(*) AS count FROM fact"
        " WHERE summary_status = 'rejected' GROUP BY ALL ORDER BY count DESC, stage",
    )
    per_client_reason = rows(
        con,
        "SELECT convenio AS client, summary_reason AS reason, decided_stage AS stage,"
        " count(*) AS count FROM fact WHERE summary_status = 'rejected'"
        " GROUP BY ALL ORDER BY client, count DESC, reason",
    )
    errors = rows(
        con,
        "SELECT summary_reason AS reason, decided_stage AS stage, count(*) AS count FROM fact"
        " WHERE summary_status = 'error' GROUP BY ALL ORDER BY count DESC, reason",
    )
    return {
        "definition": "acceptance rate = accepted / (accepted + rejected); 95% Wilson interval",
        "overall": overall,
        "per_client": per_client,
        "per_client_by_day": daily,
        "rejections_by_reason": by_reason,
        "rejections_by_stage": by_stage,
        "rejections_by_client_and_reason": per_client_reason,
        "errors_by_reason": errors,
    }
