"""The analysts' columns: exact names and order, and nulls for stages that did not run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from etl.columns import ANALYST_COLUMNS, COLUMN_NAMES, analyst_row

IMG = ("near_img", "far_img")


def _expand(*rows: tuple[str, ...]) -> list[str]:
    """One analysts' table row per tuple, `{img}` expanded near then far (as the ETL reads)."""
    return [name.format(img=img) for row in rows for img in IMG for name in row]


EXPECTED = [
    "api_hash", "user_name", "file_token", "service", "summary_code", "summary_status",
    "summary_desc", "http_code", "total_time_ms", "date", "procesoConvenioGuid", "convenio",
    "documento",
    *_expand(
        ("img_size_{img}_width", "img_size_{img}_height"),
        ("score_liqe_{img}", "score_topiq_{img}"),
        ("score_sharpness_classic_metrics_{img}",),
        ("score_colorfulness_classic_metrics_{img}",),
        ("score_contrast_classic_metrics_{img}",),
        ("score_brightness_classic_metrics_{img}",),
        ("score_blur_score_classic_metrics_{img}",),
        ("score_svd_score_classic_metrics_{img}",),
        ("prob_as_35_selfies_{img}",),
        ("prob_ibeta2_crops_{img}", "prob_ibeta2_full_{img}", "prob_ibeta2_clip_{img}"),
        ("prob_as_heuristics_{img}",),
        ("time_ms_face_detector_{img}", "queue_time_ms_face_detector_{img}"),
        ("time_ms_accessory_detector_{img}", "queue_time_ms_accessory_detector_{img}"),
        ("time_ms_liqe_{img}", "queue_time_ms_liqe_{img}"),
        ("time_ms_topiq_{img}", "queue_time_ms_topiq_{img}"),
        ("time_ms_classic_metrics_{img}",),
        ("time_ms_as_35_selfies_{img}", "queue_time_ms_as_35_selfies_{img}"),
        ("time_ms_ibeta2_crops_{img}", "queue_time_ms_ibeta2_crops_{img}"),
        ("time_ms_ibeta2_full_{img}", "queue_time_ms_ibeta2_full_{img}"),
        ("time_ms_ibeta2_clip_{img}", "queue_time_ms_ibeta2_clip_{img}"),
    ),
]  # fmt: skip


def _stage(time_ms: float, queue_ms: float, scores: dict[str, Any]) -> dict[str, Any]:
    return {"verdict": "pass", "time_ms": time_ms, "queue_time_ms": queue_ms, "scores": scores}


def _doc() -> dict[str, Any]:
    classic = {"model": "classic_metrics", "version": "1.0", "status": "ok", "time_ms": 3.0,
               "values": {"sharpness": 120.0, "brightness": 130.0}}  # fmt: skip
    liqe = {"model": "liqe", "version": "none", "status": "not_run", "time_ms": None, "values": {}}
    return {
        "_id": "t1", "file_token": "t1", "api_hash": "abc", "summary_code": 30,
        "summary_status": "rejected", "created_at": datetime(2026, 1, 2, tzinfo=UTC),
        "images": {"near": {"width": 640, "height": 480}, "far": {"width": 320, "height": 240}},
        "stages": {
            "face_detector": {side: _stage(12.0, 1.5, {}) for side in ("near", "far")},
            "quality": {side: _stage(4.0, 2.5, {"classic_metrics": classic, "liqe": liqe})
                        for side in ("near", "far")},
        },
    }  # fmt: skip


def test_analyst_columns_are_exactly_the_analysts_list_in_order() -> None:
    assert [c.name for c in ANALYST_COLUMNS] == EXPECTED
    assert COLUMN_NAMES[: len(EXPECTED)] == EXPECTED
    assert len(COLUMN_NAMES) == len(set(COLUMN_NAMES))


def test_reads_times_scores_and_sizes_off_the_document() -> None:
    row = analyst_row(_doc())
    assert row["time_ms_face_detector_near_img"] == 12.0
    assert row["queue_time_ms_face_detector_far_img"] == 1.5
    assert row["score_sharpness_classic_metrics_near_img"] == 120.0
    assert row["time_ms_classic_metrics_far_img"] == 3.0
    assert row["img_size_far_img_width"] == 320
    assert row["date"] == datetime(2026, 1, 2, tzinfo=UTC)
    assert row["time_ms_quality_near_img"] == 4.0


def test_stages_and_models_that_did_not_run_are_null_not_zero() -> None:
    row = analyst_row(_doc())
    assert row["time_ms_accessory_detector_near_img"] is None
    assert row["prob_as_heuristics_near_img"] is None
    # LIQE was declared but not installed: no score, no time, no queue time.
    assert row["score_liqe_near_img"] is None
    assert row["time_ms_liqe_near_img"] is None
    assert row["queue_time_ms_liqe_near_img"] is None
