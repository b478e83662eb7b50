from __future__ import annotations

import json

import pytest

from bench.noop_worker import NoopModel, noop_stage
from bench.pairs import ACCEPTED, bench_pairs
from bench.raw_chain import body
from shared.analysis import Model
from shared.imaging import decode_rgb
from shared.pipeline import STAGES


def test_noop_stage_is_a_stage_that_needs_nothing() -> None:
    for stage in STAGES:
        definition = noop_stage(stage)
        assert definition.name == stage
        assert definition.needs_face is False
        assert definition.pair_check is None
        (model,) = definition.build_models(None)  # type: ignore[arg-type]
        assert isinstance(model, Model)
    result = NoopModel().analyze(decode_rgb(bench_pairs()["astronaut"].near), None)
    assert result.rejections == () and result.face is None


def test_raw_chain_messages_have_the_requested_size() -> None:
    for size in (120, 700, 1500):
        raw = body("0" * 32, "near", size)
        assert len(raw) == size
        assert json.loads(raw)["side"] == "near"
    # Never truncated below what the message needs.
    assert json.loads(body("0" * 32, "far", 10))["id"] == "0" * 32


def test_bench_pairs_cover_every_outcome_once_with_the_pad_one_marked_simulated() -> None:
    pairs = bench_pairs()
    assert set(ACCEPTED) <= set(pairs)
    stages = {p.expected_stage for p in pairs.values()}
    assert {"face_detector", "quality", "pad", None} <= stages
    assert [p.name for p in pairs.values() if p.simulated] == ["print_attack"]
    for pair in pairs.values():
        assert pair.near[:3] == b"\xff\xd8\xff" and pair.far[:3] == b"\xff\xd8\xff"


def test_delivery_summary_compares_celery_with_pika_and_splits_its_delay() -> None:
    from bench.delivery import summarise

    rounds = {
        "pika": [{"total": [0.4, 0.5, 0.6]}, {"total": [0.5, 0.5, 0.5]}],
        "celery_threads": [
            {"total": [0.9, 1.0, 1.1], "to_request": [0.7, 0.8, 0.9]},
            {"total": [1.0, 1.0, 1.0], "to_request": [0.8, 0.8, 0.8]},
        ],
    }
    report = summarise(rounds)
    assert report["variants"]["pika"]["p50_ms"]["total"]["median"] == 0.5
    assert report["variants"]["celery_threads"]["p50_ms"]["total"]["median"] == 1.0
    assert report["ratios"] == {"celery_threads_over_pika_p50": 2.0}
    assert report["variants"]["celery_threads"]["request_to_task_p50_ms"] == 0.2


def test_parallel_floor_keeps_the_longer_side_per_stage_alone_and_together() -> None:
    from bench.parallel_floor import summarise

    def side(alone: dict[str, float], together: dict[str, float], decode: float) -> tuple[
        str, dict[str, dict[str, float]], float
    ]:  # fmt: skip
        return ("astronaut", {"alone": alone, "together": together}, decode)

    runs = {
        "near": [side({"a": 0.010, "b": 0.002}, {"a": 0.011, "b": 0.002}, 0.001)],
        "far": [side({"a": 0.008, "b": 0.004}, {"a": 0.009, "b": 0.005}, 0.002)],
    }
    pair = summarise(runs)["pairs"]["astronaut"]
    assert pair["floor_alone_ms"]["median"] == 14.0  # 10 (near) + 4 (far)
    assert pair["floor_together_ms"]["median"] == 16.0  # 11 + 5
    assert pair["together_over_alone"] == round(16 / 14, 4)
    assert pair["decode_ms"]["median"] == 2.0
    assert pair["stages_ms"]["b"]["together"]["median"] == 5.0


def test_model_chain_summary_takes_each_pipelines_median_p50_and_faceval_over_the_chain() -> None:
    from bench.model_chain import summarise

    def rep(p50_ms: float, over: float) -> dict[str, dict[str, float]]:
        return {"latency_ms": {"p50": p50_ms}, "over_floor": {"p50": over}}

    report = summarise({
        "model_chain": [rep(120.0, 1.20), rep(110.0, 1.10), rep(130.0, 1.30)],
        "faceval": [rep(150.0, 1.50), rep(140.0, 1.40), rep(160.0, 1.60)],
    })  # fmt: skip
    assert report["summary"]["model_chain"]["light_p50_ms"]["median"] == 120.0
    assert report["summary"]["faceval"]["light_p50_over_floor"]["median"] == 1.5
    assert report["summary"]["faceval"]["light_p50_over_floor"]["min"] == 1.4
    assert report["faceval_over_model_chain_p50"] == 1.25


def test_a_model_chain_hop_hands_on_the_face_its_detector_found() -> None:
    from bench.pairs import bench_pairs
    from bench.raw_chain import _stage_analysis
    from shared.imaging import decode_rgb

    image = decode_rgb(bench_pairs()["astronaut"].near)
    face = _stage_analysis(0)(image, None)
    assert face is not None
    assert isinstance(face["width"], float) and face["width"] > 0
    # A later stage analyses that face and hands the same one on.
    assert _stage_analysis(1)(image, face) == face


def test_a_model_chain_hop_stops_on_an_image_its_stage_does_not_pass() -> None:
    import numpy as np

    from bench.raw_chain import _stage_analysis

    blank = np.zeros((480, 600, 3), dtype=np.uint8)  # no face for the detector to find
    with pytest.raises(SystemExit, match="face_detector: reject"):
        _stage_analysis(0)(blank, None)
