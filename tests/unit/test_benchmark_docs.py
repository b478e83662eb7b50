"""docs/benchmarks.md quotes the committed bench/results/latest.json, through bench.report."""

from __future__ import annotations

import json

import pytest

from bench import report
from bench.run_all import TARGETS


def _latest() -> dict[str, object]:
    if not report.LATEST.exists():
        pytest.fail(f"{report.LATEST} is missing: `make bench` writes it and it is committed")
    data: dict[str, object] = json.loads(report.LATEST.read_text())
    return data


def test_the_benchmark_docs_match_the_committed_results() -> None:
    doc = report.DOC.read_text()
    assert report.updated(doc, report.generated(_latest())) == doc, (
        "docs/benchmarks.md does not match bench/results/latest.json: run `python -m bench.report`"
    )


def test_the_committed_results_carry_every_target_and_their_commit() -> None:
    latest = _latest()
    targets = latest["targets"]
    assert isinstance(targets, dict)
    assert set(TARGETS) <= set(targets)
    for key in TARGETS:
        assert isinstance(latest[key], (int, float)), key
    commit = latest["commit"]
    assert isinstance(commit, dict)
    assert isinstance(commit["sha"], str) and len(commit["sha"]) == 40
