"""The three reports' numbers on the hand-checked dataset (see test_etl_dataset)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from etl.errors import EmptyRange
from etl.extract import extract_documents
from etl.reports.build import compute, write_report
from etl.reports.stats import wilson
from etl.schema import FACT_SCHEMA
from etl.transform import transform
from tests.unit.test_etl_dataset import documents


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return compute(transform(extract_documents(documents(), "s")), 24.0, "test")


def _stage(report: dict[str, Any], service: str, image: str) -> dict[str, Any]:
    found = [
        s
        for s in report["bottlenecks"]["stages"]
        if s["service"] == service and s["image"] == image
    ]
    assert len(found) == 1
    stage: dict[str, Any] = found[0]
    return stage


def test_wilson_interval_matches_the_worked_example() -> None:
    # 3 of 6: centre 0.5, half-width 1.96 * sqrt(0.25/6 + 1.96^2/144) / (1 + 1.96^2/6).
    low, high = wilson(3, 6)
    assert low == pytest.approx(0.1876, abs=1e-4)
    assert high == pytest.approx(0.8124, abs=1e-4)
    assert wilson(0, 0) == (None, None)
    assert wilson(5, 5)[1] == 1.0


def test_bottleneck_percentiles_and_shares(report: dict[str, Any]) -> None:
    detector = _stage(report, "face_detector", "near")
    # 10, 20, ..., 100 ms: p50 55, p95 at rank 8.55 -> 95.5, p99 at 8.91 -> 99.1.
    assert detector["runs"] == 10
    assert detector["exec_ms"]["p50"] == pytest.approx(55.0)
    assert detector["exec_ms"]["p95"] == pytest.approx(95.5)
    assert detector["exec_ms"]["p99"] == pytest.approx(99.1)
    assert detector["queue_ms"]["p95"] == pytest.approx(5.0)
    # (550 execution + 50 queue) of 10 x 1000 ms end to end.
    assert detector["share_of_end_to_end"] == pytest.approx(0.06)
    quality = _stage(report, "quality", "near")
    assert quality["runs"] == 6  # t01, t02, t03, t06, t07, t08: no zeros for the rest
    assert quality["exec_share_of_end_to_end"] == pytest.approx(0.12)
    assert quality["queue_share_of_end_to_end"] == pytest.approx(0.03)
    assert _stage(report, "pad", "far")["runs"] == 5


def test_top_bottleneck_is_named(report: dict[str, Any]) -> None:
    top = report["bottlenecks"]["top_bottleneck"]
    assert (top["service"], top["image"], top["dominated_by"]) == ("quality", "near", "execution")
    assert top["share_of_end_to_end"] == pytest.approx(0.15)
    assert top["summary"] == "quality (near image) takes 15.0% of end-to-end time, mostly execution"


def test_bottleneck_trend_by_hour(report: dict[str, Any]) -> None:
    ten = [
        p
        for p in report["bottlenecks"]["trend_by_hour"]
        if p["bucket"].startswith("2026-03-02T10")
        and p["service"] == "face_detector"
        and p["image"] == "near"
    ]
    assert len(ten) == 1
    assert ten[0]["runs"] == 2 and ten[0]["exec_p50"] == pytest.approx(15.0)
    days = {p["bucket"][:10] for p in report["bottlenecks"]["trend_by_day"]}
    assert days == {"2026-03-02", "2026-03-03"}


def test_acceptance_per_client_with_intervals(report: dict[str, Any]) -> None:
    clients = {c["client"]: c for c in report["acceptance"]["per_client"]}
    a, b = clients["client-a"], clients["client-b"]
    assert (a["transactions"], a["accepted"], a["rejected"], a["errors"]) == (6, 3, 3, 0)
    assert a["acceptance_rate"] == pytest.approx(0.5)
    assert (a["ci95_low"], a["ci95_high"]) == pytest.approx((0.1876, 0.8124), abs=1e-4)
    # Errors (the timeout) are not in the rate: 1 accepted of 3 decided.
    assert (b["transactions"], b["accepted"], b["rejected"], b["errors"]) == (4, 1, 2, 1)
    assert b["acceptance_rate"] == pytest.approx(1 / 3)
    assert report["acceptance"]["overall"]["acceptance_rate"] == pytest.approx(4 / 9)


def test_rejections_by_reason_and_stage(report: dict[str, Any]) -> None:
    acceptance = report["acceptance"]
    by_reason = {(r["reason"], r["stage"]): r["count"] for r in acceptance["rejections_by_reason"]}
    assert by_reason == {
        ("no_face", "face_detector"): 2,
        ("low_quality", "quality"): 1,
        ("accessory_detected", "accessory"): 1,
        ("spoof_detected", "pad"): 1,
    }
    by_stage = {r["stage"]: r["count"] for r in acceptance["rejections_by_stage"]}
    assert by_stage == {"face_detector": 2, "quality": 1, "accessory": 1, "pad": 1}
    assert acceptance["errors_by_reason"] == [
        {"reason": "timeout", "stage": "face_detector", "count": 1}
    ]
    day2 = [d for d in acceptance["per_client_by_day"] if d["day"] == "2026-03-03"]
    assert [(d["client"], d["accepted"], d["rejected"]) for d in day2] == [("client-b", 1, 1)]


def test_retry_outcomes_and_attempts_until_acceptance(report: dict[str, Any]) -> None:
    retries = report["retries"]
    assert (retries["processes"], retries["users"]) == (7, 7)
    outcomes = {o["outcome"]: (o["processes"], o["mean_attempts"]) for o in retries["outcomes"]}
    # P4's only attempt is 29.5 h before the newest row: abandoned; P6 and P7 still open.
    assert outcomes == {"accepted": (4, 1.75), "abandoned": (1, 1.0), "open": (2, 1.0)}
    assert retries["mean_attempts_to_acceptance"] == pytest.approx(1.75)


def test_success_probability_by_attempt_number(report: dict[str, Any]) -> None:
    by_attempt = {a["attempt_number"]: a for a in report["retries"]["success_by_attempt_number"]}
    assert (by_attempt[1]["attempts"], by_attempt[1]["accepted"]) == (7, 2)
    assert (by_attempt[2]["attempts"], by_attempt[2]["accepted"]) == (2, 1)
    assert (by_attempt[3]["attempts"], by_attempt[3]["accepted"]) == (1, 1)
    assert by_attempt[1]["success"]["rate"] == pytest.approx(2 / 7)
    assert by_attempt[1]["eventually_accepted"]["rate"] == pytest.approx(4 / 7)
    assert by_attempt[2]["eventually_accepted"]["rate"] == pytest.approx(1.0)


def test_reasons_that_lead_to_retries_and_time_between_attempts(report: dict[str, Any]) -> None:
    retries = report["retries"]
    reasons = {
        r["reason"]: (r["failures"], r["retried"], r["next_accepted"])
        for r in retries["reasons_leading_to_retries"]
    }
    assert reasons == {
        "no_face": (2, 1, 0),
        "low_quality": (1, 1, 1),
        "accessory_detected": (1, 1, 1),
        "spoof_detected": (1, 0, 0),
        "timeout": (1, 0, 0),
    }
    between = retries["time_between_attempts"]
    # 120 s, 60 s and 240 s: median 120 s, mean 140 s, p95 at rank 1.9 -> 228 s.
    assert between["n"] == 3
    assert between["p50_ms"] == pytest.approx(120_000)
    assert between["mean_ms"] == pytest.approx(140_000)
    assert between["p95_ms"] == pytest.approx(228_000)
    after = {
        r["after_reason"]: r["p50_ms"] for r in retries["time_between_attempts_by_previous_reason"]
    }
    assert after == {"low_quality": 120_000, "no_face": 60_000, "accessory_detected": 240_000}


def test_report_files_hold_the_same_numbers_and_inline_charts(tmp_path: Path) -> None:
    fact = transform(extract_documents(documents(), "s"))
    html = write_report(fact, tmp_path, 24.0, "test").read_text()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["data"]["rows"] == 10 and saved["data"]["synthetic_rows"] == 0
    assert saved["retries"]["mean_attempts_to_acceptance"] == pytest.approx(1.75)
    assert "quality (near image) takes 15.0% of end-to-end time" in html
    assert html.count("data:image/png;base64,") == len(list((tmp_path / "charts").glob("*.png")))
    assert "SYNTHETIC" not in html


def test_an_empty_range_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmptyRange, match="no transactions to report"):
        write_report(FACT_SCHEMA.empty_table(), tmp_path, 24.0, "test")
