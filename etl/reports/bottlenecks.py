"""Report 1: where the time goes, per service (stage) and image.

Execution and queue time percentiles (linear interpolation, as numpy's default), each
stage's share of the end-to-end time (sum of its time over the sum of total_time_ms; near
and far run side by side, so shares can add up to more than 100 %), trends by hour and by
day, and the top bottleneck named. Stages that did not run are absent, not zero.
"""

from __future__ import annotations

from typing import Any

import duckdb

from etl.reports.query import one, quantiles, ratio, rows
from etl.schema import MODEL_TIMINGS, STAGE_TIMINGS, quote
from shared.pipeline import COLUMN_SERVICE

Q = "[0.5, 0.95, 0.99]"


def _long_timings() -> str:
    """The stage timing columns unpivoted: one row per transaction, stage and image run."""
    parts = [
        f"SELECT date, '{stage}' AS service, '{side}' AS image, {quote(e)} AS exec_ms,"
        f" {quote(q)} AS queue_ms FROM fact WHERE {quote(e)} IS NOT NULL"
        for stage, side, e, q in STAGE_TIMINGS
    ]
    return " UNION ALL ".join(parts)


def _stage_rows(con: duckdb.DuckDBPyConnection, end_to_end: float | None) -> list[dict[str, Any]]:
    found = rows(
        con,
        f"SELECT service, image, count(*) AS runs, quantile_cont(exec_ms, {Q}) AS eq,"
        f" quantile_cont(queue_ms, {Q}) AS qq, avg(exec_ms) AS exec_mean,"
        f" avg(queue_ms) AS queue_mean, sum(exec_ms) AS exec_sum, sum(queue_ms) AS queue_sum"
        f" FROM ({_long_timings()}) GROUP BY service, image",
    )
    by_key = {(r["service"], r["image"]): r for r in found}
    out = []
    for stage, side, _, _ in STAGE_TIMINGS:
        r = by_key.get((stage, side), {})
        exec_sum, queue_sum = r.get("exec_sum") or 0.0, r.get("queue_sum") or 0.0
        out.append(
            {
                "service": stage,
                "column_name": COLUMN_SERVICE[stage],
                "image": side,
                "runs": r.get("runs", 0),
                "exec_ms": {**quantiles(r.get("eq")), "mean": r.get("exec_mean")},
                "queue_ms": {**quantiles(r.get("qq")), "mean": r.get("queue_mean")},
                "exec_share_of_end_to_end": ratio(exec_sum, end_to_end),
                "queue_share_of_end_to_end": ratio(queue_sum, end_to_end),
                "share_of_end_to_end": ratio(exec_sum + queue_sum, end_to_end),
            }
        )
    return out


def _model_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    out = []
    for model, side, column in MODEL_TIMINGS:
        r = one(
            con,
            f"SELECT count({quote(column)}) AS runs,"
            f" quantile_cont({quote(column)}, {Q}) AS eq FROM fact",
        )
        out.append(
            {
                "model": model,
                "image": side,
                "runs": r.get("runs", 0),
                "exec_ms": quantiles(r.get("eq")),
            }
        )
    return out


def _trend(con: duckdb.DuckDBPyConnection, unit: str) -> list[dict[str, Any]]:
    return rows(
        con,
        f"SELECT date_trunc('{unit}', date) AS bucket, service, image, count(*) AS runs,"
        " quantile_cont(exec_ms, 0.5) AS exec_p50, quantile_cont(exec_ms, 0.95) AS exec_p95,"
        " quantile_cont(queue_ms, 0.5) AS queue_p50,"
        " quantile_cont(queue_ms, 0.95) AS queue_p95"
        f" FROM ({_long_timings()}) GROUP BY ALL ORDER BY bucket, service, image",
    )


def _top(stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    ran = [s for s in stages if s["runs"] and s["share_of_end_to_end"] is not None]
    if not ran:
        return None
    top = max(ran, key=lambda s: s["share_of_end_to_end"])
    queue_heavy = (top["queue_share_of_end_to_end"] or 0) > (top["exec_share_of_end_to_end"] or 0)
    dominated_by = "queue" if queue_heavy else "execution"
    return {
        "service": top["service"],
        "image": top["image"],
        "share_of_end_to_end": top["share_of_end_to_end"],
        "dominated_by": dominated_by,
        "exec_p95_ms": top["exec_ms"]["p95"],
        "queue_p95_ms": top["queue_ms"]["p95"],
        "summary": (
            f"{top['service']} ({top['image']} image) takes "
            f"{100 * top['share_of_end_to_end']:.1f}% of end-to-end time, mostly {dominated_by}"
        ),
    }


def compute(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    total = one(
        con,
        "SELECT count(*) AS n, sum(total_time_ms) AS total_ms,"
        f" quantile_cont(total_time_ms, {Q}) AS tq FROM fact",
    )
    stages = _stage_rows(con, total.get("total_ms"))
    return {
        "transactions": total.get("n", 0),
        "end_to_end_ms": quantiles(total.get("tq")),
        "stages": stages,
        "models": _model_rows(con),
        "top_bottleneck": _top(stages),
        "trend_by_hour": _trend(con, "hour"),
        "trend_by_day": _trend(con, "day"),
    }
