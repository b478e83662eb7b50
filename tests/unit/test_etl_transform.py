"""Transform: derived columns on the hand-checked dataset, and loud data-quality failures."""

from __future__ import annotations

from typing import Any

import pytest

from etl.errors import DataQualityError
from etl.extract import extract_documents
from etl.transform import transform
from tests.unit.test_etl_dataset import documents


def _fact(docs: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    table = transform(extract_documents(docs if docs is not None else documents(), "s"))
    return {row["file_token"]: row for row in table.to_pylist()}


def test_attempts_are_numbered_per_user_and_process_in_date_order() -> None:
    fact = _fact()
    assert [fact[t]["attempt_number"] for t in ("t04", "t05", "t06")] == [1, 2, 3]
    assert fact["t06"]["attempts_in_process"] == 3
    assert fact["t02"]["attempt_number"] == 2
    assert fact["t02"]["ms_since_previous_attempt"] == 120_000
    assert fact["t02"]["previous_summary_reason"] == "low_quality"
    assert fact["t01"]["ms_since_previous_attempt"] is None
    assert fact["t01"]["retried_after"] is True
    assert fact["t02"]["retried_after"] is False


def test_stages_that_did_not_run_stay_null_and_are_left_out_of_the_sums() -> None:
    t04 = _fact()["t04"]  # no face: only the detector ran
    assert t04["time_ms_pad_near_img"] is None
    assert t04["queue_time_ms_accessory_detector_far_img"] is None
    assert t04["stages_run"] == 1
    assert t04["exec_ms_total"] == 40 + 10
    assert t04["queue_ms_total"] == 5 + 1
    assert t04["queue_share"] == pytest.approx(6 / 56)
    assert t04["exec_share"] == pytest.approx(50 / 56)


def test_decided_stage_is_the_rejecting_stage_else_the_last_stage_that_ran() -> None:
    fact = _fact()
    assert fact["t05"]["decided_stage"] == "accessory"
    assert fact["t02"]["decided_stage"] == "pad"  # accepted: every stage passed
    assert fact["t09"]["decided_stage"] == "face_detector"  # timeout: where it stopped
    assert fact["t09"]["decided_by"] is None
    assert str(fact["t08"]["day"]) == "2026-03-03"
    assert fact["t08"]["is_accepted"] is True
    assert fact["t08"]["is_synthetic"] is False


def test_negative_time_fails_loudly_naming_the_column() -> None:
    docs = documents()
    docs[2]["stages"]["quality"]["far"]["queue_time_ms"] = -3.0
    with pytest.raises(DataQualityError, match=r"negative times in queue_time_ms_quality_far_img"):
        _fact(docs)


def test_unknown_summary_code_fails_loudly() -> None:
    docs = documents()
    docs[0]["summary_code"] = 77
    with pytest.raises(DataQualityError, match=r"unknown summary code/status: 77/rejected"):
        _fact(docs)


def test_code_that_does_not_match_its_status_fails_loudly() -> None:
    docs = documents()
    docs[1]["summary_status"] = "rejected"  # code 0 is accepted
    with pytest.raises(DataQualityError, match=r"unknown summary code/status: 0/rejected"):
        _fact(docs)


def test_duplicate_file_tokens_fail_loudly_with_every_problem_in_one_message() -> None:
    docs = documents()
    docs.append({**docs[3]})
    docs[0]["stages"]["face_detector"]["near"]["time_ms"] = -1.0
    with pytest.raises(DataQualityError) as caught:
        _fact(docs)
    message = str(caught.value)
    assert message.startswith("data quality check failed: ")
    assert "1 duplicate file_token(s), e.g. t04" in message
    assert "time_ms_face_detector_near_img (1)" in message
