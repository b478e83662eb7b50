"""Report 3: how users retry within a process, until acceptance or abandonment.

An episode is a user's attempts within one process up to and including the first
acceptance. A process with no acceptance is abandoned when its last attempt is older than
`abandon_after_hours` at the newest row of the data, and still open otherwise.
"""

from __future__ import annotations

from typing import Any

import duckdb

from etl.reports.query import one, rows
from etl.reports.stats import rate_with_ci

EPISODES = """
WITH ordered AS (
  SELECT process_key, user_name, attempt_number, date, is_accepted, summary_status,
    summary_reason, ms_since_previous_attempt, previous_summary_reason,
    lead(is_accepted) OVER (PARTITION BY process_key ORDER BY attempt_number) AS next_accepted,
    lead(attempt_number) OVER (PARTITION BY process_key ORDER BY attempt_number) IS NOT NULL
      AS retried
  FROM fact
),
processes AS (
  SELECT process_key,
    min(attempt_number) FILTER (WHERE is_accepted) AS first_accept,
    max(attempt_number) AS last_attempt,
    min(attempt_number) AS first_attempt,
    max(date) AS last_at
  FROM ordered GROUP BY process_key
),
episodes AS (
  SELECT p.*,
    CASE WHEN first_accept IS NOT NULL THEN 'accepted'
         WHEN last_at < (SELECT max(date) FROM fact) - INTERVAL ({hours}) HOUR
           THEN 'abandoned'
         ELSE 'open' END AS outcome,
    coalesce(first_accept, last_attempt) AS attempts
  FROM processes p
),
attempts AS (
  SELECT o.* FROM ordered o JOIN episodes e USING (process_key)
  WHERE e.first_accept IS NULL OR o.attempt_number <= e.first_accept
)
"""


def compute(con: duckdb.DuckDBPyConnection, abandon_after_hours: float) -> dict[str, Any]:
    w = EPISODES.format(hours=float(abandon_after_hours))
    outcomes = rows(
        con,
        w + "SELECT outcome, count(*) AS processes, avg(attempts) AS"
        " mean_attempts FROM episodes GROUP BY outcome ORDER BY outcome",
    )
    summary = one(
        con,
        w + "SELECT count(DISTINCT process_key) AS processes,"
        " count(DISTINCT user_name) AS users"
        " FROM ordered",
    )
    distribution = rows(
        con,
        w + "SELECT outcome, attempts, count(*) AS processes FROM episodes"
        " GROUP BY ALL ORDER BY outcome, attempts",
    )
    by_attempt = []
    for r in rows(
        con,
        w + "SELECT attempt_number, count(*) AS n, count(*) FILTER"
        " (WHERE is_accepted) AS accepted FROM attempts GROUP BY ALL"
        " ORDER BY attempt_number",
    ):
        reached = one(
            con,
            w + "SELECT count(*) AS n, count(*) FILTER (WHERE outcome ="
            f" 'accepted') AS ok FROM episodes WHERE attempts >= {r['attempt_number']}"
            f" AND first_attempt <= {r['attempt_number']}",
        )
        by_attempt.append(
            {
                "attempt_number": r["attempt_number"],
                "attempts": r["n"],
                "accepted": r["accepted"],
                "success": rate_with_ci(r["accepted"], r["n"]),
                "eventually_accepted": rate_with_ci(reached["ok"], reached["n"]),
            }
        )
    reasons = [
        {
            **r,
            "retry_rate": r["retried"] / r["failures"],
            "next_attempt_accepted_rate": (r["next_accepted"] / r["retried"])
            if r["retried"]
            else None,
        }
        for r in rows(
            con,
            w + "SELECT summary_reason AS reason, count(*) AS failures,"
            " count(*) FILTER (WHERE retried) AS retried,"
            " count(*) FILTER (WHERE next_accepted) AS next_accepted FROM attempts"
            " WHERE NOT is_accepted GROUP BY ALL ORDER BY retried DESC, reason",
        )
    ]
    gap = "ms_since_previous_attempt"
    gaps = (
        f"count({gap}) AS n, quantile_cont({gap}, 0.5) AS p50_ms,"
        f" quantile_cont({gap}, 0.95) AS p95_ms, avg({gap}) AS mean_ms"
    )
    between = one(con, w + f"SELECT {gaps} FROM attempts WHERE attempt_number > 1")
    between_by_reason = rows(
        con,
        w + f"SELECT previous_summary_reason AS after_reason, {gaps} FROM attempts"
        " WHERE attempt_number > 1 GROUP BY ALL ORDER BY n DESC, after_reason",
    )
    accepted = next((o for o in outcomes if o["outcome"] == "accepted"), None)
    return {
        "definition": (
            "episode = a user's attempts within a process up to the first acceptance; "
            f"abandoned = no acceptance and no attempt for {abandon_after_hours:g} h "
            "before the newest row"
        ),
        "abandon_after_hours": abandon_after_hours,
        "processes": summary.get("processes", 0),
        "users": summary.get("users", 0),
        "outcomes": outcomes,
        "mean_attempts_to_acceptance": accepted["mean_attempts"] if accepted else None,
        "attempts_distribution": distribution,
        "success_by_attempt_number": by_attempt,
        "reasons_leading_to_retries": reasons,
        "time_between_attempts": between,
        "time_between_attempts_by_previous_reason": between_by_reason,
    }
