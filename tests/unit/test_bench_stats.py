from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.stats import (
    format_table,
    latency_summary,
    makespan_throughput,
    markdown_table,
    meets,
    percentile,
    ratio,
    spread,
    spread_cell,
    steady_throughput,
    write_json,
)


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = [7.0, 1.0, 3.5, 12.0, 9.25, 4.0, 2.0, 30.0, 5.5, 6.0, 11.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edge_cases() -> None:
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0
    assert percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary() -> None:
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary["n"] == 100
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["min"] == 1.0 and summary["max"] == 100.0
    assert latency_summary([])["p50"] is None


def test_spread_over_repetitions_drops_missing() -> None:
    assert spread([3.0, None, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0, "reps": 3}
    assert spread([None]) == {"min": None, "median": None, "max": None, "reps": 0}


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 3.0) == pytest.approx(0.3333)
    assert ratio(None, 2.0) is None
    assert ratio(2.0, None) is None
    assert ratio(2.0, 0.0) is None


def test_steady_throughput_ignores_fill_and_drain() -> None:
    # A pipeline that fills for 5 s, then completes one item every 0.1 s, then a slow tail.
    completions = [5.0 + 0.1 * i for i in range(100)] + [20.0]
    assert steady_throughput(completions) == pytest.approx(10.0, rel=0.02)
    # The makespan rate counts the fill and the tail, so it is lower.
    assert makespan_throughput(0.0, completions) == pytest.approx(101 / 20.0)


def test_throughput_degenerate_inputs() -> None:
    assert steady_throughput([1.0, 2.0]) is None
    assert steady_throughput([1.0, 1.0, 1.0]) is None
    assert makespan_throughput(0.0, []) is None
    assert makespan_throughput(5.0, [5.0]) is None


def test_tables_and_cells() -> None:
    text = format_table(["name", "value"], [["a", 1.23456], ["bb", None], ["c", 123.4]])
    lines = text.splitlines()
    assert lines[0].startswith("name")
    assert "1.235" in lines[2] and "-" in lines[3] and "123.4" in lines[4]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    md = markdown_table(["a", "b"], [[1, 2.5]])
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2.500 |"]
    assert spread_cell({"min": 1.0, "median": 2.0, "max": 3.0}) == "2.00 (1.00-3.00)"
    assert spread_cell(None) == "-"


def test_write_json(tmp_path: Path) -> None:
    path = write_json("x.json", {"a": 1, "b": [1.5]}, directory=tmp_path / "results")
    assert json.loads(path.read_text()) == {"a": 1, "b": [1.5]}


def test_meets_targets() -> None:
    assert meets(1.4, "<=", 1.5) is True
    assert meets(1.6, "<=", 1.5) is False
    assert meets(0.85, ">=", 0.85) is True
    assert meets(None, ">=", 0.85) is None
    with pytest.raises(ValueError):
        meets(1.0, "<", 2.0)
