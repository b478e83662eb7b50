"""Running report SQL over the fact rows and getting JSON-ready values back."""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from etl.transform import memory_db


def fact_db(fact: pa.Table) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB where the report's rows are the relation `fact`."""
    con = memory_db()
    con.register("fact", fact)
    return con


def plain(value: Any) -> Any:
    """A value JSON can hold: dates as ISO text, NaN as null, lists element-wise."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def rows(con: duckdb.DuckDBPyConnection, query: str) -> list[dict[str, Any]]:
    relation = con.sql(query)
    names = relation.columns
    return [{n: plain(v) for n, v in zip(names, row, strict=True)} for row in relation.fetchall()]


def one(con: duckdb.DuckDBPyConnection, query: str) -> dict[str, Any]:
    found = rows(con, query)
    return found[0] if found else {}


def ratio(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return part / whole


def quantiles(values: list[float] | None, prefix: str = "p") -> dict[str, float | None]:
    """[p50, p95, p99] as returned by quantile_cont(x, [0.5, 0.95, 0.99])."""
    names = ("50", "95", "99")
    if not values:
        return {prefix + n: None for n in names}
    return {prefix + n: v for n, v in zip(names, values, strict=False)}
