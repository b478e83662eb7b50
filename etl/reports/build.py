"""Building the report: the three analyses over the fact rows, then JSON, charts, HTML."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from etl.errors import EmptyRange
from etl.reports import acceptance, bottlenecks, retries
from etl.reports.charts import draw_all
from etl.reports.query import fact_db, one
from etl.reports.render import render_html

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
CHARTS_DIR = "charts"


def compute(fact: pa.Table, abandon_after_hours: float, source: str) -> dict[str, Any]:
    if fact.num_rows == 0:
        raise EmptyRange("no transactions to report in the requested days")
    con = fact_db(fact)
    try:
        meta = one(
            con,
            "SELECT count(*) AS rows, count(*) FILTER (WHERE is_synthetic)"
            " AS synthetic_rows, min(day) AS first_day, max(day) AS last_day,"
            " min(date) AS first_at, max(date) AS last_at FROM fact",
        )
        first, last = meta["first_day"], meta["last_day"]
        meta["days"] = first if first == last else f"{first}..{last}"
        meta["source"] = source
        return {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data": meta,
            "bottlenecks": bottlenecks.compute(con),
            "acceptance": acceptance.compute(con),
            "retries": retries.compute(con, abandon_after_hours),
        }
    finally:
        con.close()


def write_report(fact: pa.Table, out: Path, abandon_after_hours: float, source: str) -> Path:
    """Write report.json, charts/*.png and the self-contained report.html; returns the HTML."""
    report = compute(fact, abandon_after_hours, source)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2))
    charts = draw_all(report, out / CHARTS_DIR)
    (out / REPORT_HTML).write_text(render_html(report, charts))
    return out / REPORT_HTML
