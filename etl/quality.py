"""Data-quality checks that fail loudly: one error naming every broken invariant.

Run on each batch before it is loaded, so the warehouse never holds a negative time, a
summary code outside the public catalogue, or a transaction twice.
"""

from __future__ import annotations

import duckdb

from etl.errors import DataQualityError
from etl.schema import TIME_COLUMNS, quote
from shared.codes import SUMMARIES

EXAMPLES = 3


def _examples(con: duckdb.DuckDBPyConnection, query: str) -> list[str]:
    return [str(row[0]) for row in con.execute(query).fetchall()]


def problems(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    """Every broken invariant of `relation` (a table or view in `con`), as sentences."""
    found: list[str] = []
    duplicates = _examples(
        con,
        f"SELECT file_token FROM {relation} WHERE file_token IS NOT NULL"
        f" GROUP BY file_token HAVING count(*) > 1 ORDER BY 1",
    )
    if duplicates:
        found.append(
            f"{len(duplicates)} duplicate file_token(s), e.g. {', '.join(duplicates[:EXAMPLES])}"
        )
    row = con.execute(
        f"SELECT count(*) FILTER (file_token IS NULL), count(*) FILTER (date IS NULL)"
        f" FROM {relation}"
    ).fetchone()
    if row and row[0]:
        found.append(f"{row[0]} row(s) without a file_token")
    if row and row[1]:
        found.append(f"{row[1]} row(s) without a date")
    counts = ", ".join(f"count(*) FILTER ({quote(c)} < 0)" for c in TIME_COLUMNS)
    negatives = con.execute(f"SELECT {counts} FROM {relation}").fetchone() or ()
    bad = [f"{c} ({n})" for c, n in zip(TIME_COLUMNS, negatives, strict=True) if n]
    if bad:
        found.append(f"negative times in {', '.join(bad)}")
    known = ", ".join(f"({s.code}, '{s.status}')" for s in SUMMARIES)
    unknown = _examples(
        con,
        f"SELECT DISTINCT coalesce(CAST(summary_code AS TEXT), 'null') || '/' ||"
        f" coalesce(summary_status, 'null') FROM {relation}"
        f" WHERE (summary_code, summary_status) NOT IN (VALUES {known})"
        f" OR summary_code IS NULL OR summary_status IS NULL ORDER BY 1",
    )
    if unknown:
        found.append(f"unknown summary code/status: {', '.join(unknown[:EXAMPLES])}")
    return found


def check(con: duckdb.DuckDBPyConnection, relation: str) -> None:
    found = problems(con, relation)
    if found:
        raise DataQualityError("data quality check failed: " + "; ".join(found))
