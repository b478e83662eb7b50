"""Near/far geometric consistency: synthetic 3-D versus flat heads, the flat sample pairs,
the fused probability, and the pad stage's wiring."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from services.face_detector.stage import STAGE as DETECTOR_STAGE
from services.pad.geometry import (
    FaceGeometry,
    NearFarConsistency,
    image_spoof_probability,
)
from services.pad.stage import STAGE
from shared.analysis import Face, Image
from shared.models_registry import BUNDLED_MANIFEST
from shared.pipeline import ImageRecord, Policy, analyze_image
from shared.settings import Settings
from tools.samples import astronaut_pair, group_pair

WIDTH = 640
#: A head in mm, nose tip at the origin, depth (z) away from the camera. Deliberately not
#: the module's constants (eyes 30, outline 80 mm behind the nose tip).
HEAD = {
    "eyes": [(-31.0, -35.0, 25.0), (31.0, -35.0, 25.0)],
    "nose": [(0.0, 0.0, 0.0)],
    "mouth": [(-25.0, 35.0, 22.0), (25.0, 35.0, 22.0)],
    "outline": [(-72.0, -20.0, 90.0), (72.0, -20.0, 90.0), (0.0, -90.0, 50.0), (0.0, 80.0, 45.0)],
}


def photograph(distance: float, flat: bool) -> Face:
    """The head (or a flat print of it) seen by a 70-degree camera `distance` mm away."""
    focal = WIDTH / (2 * math.tan(math.radians(35)))

    def project(points: list[tuple[float, float, float]]) -> list[tuple[float, float]]:
        return [
            (
                WIDTH / 2 + focal * x / (distance + (0 if flat else z)),
                WIDTH / 2 + focal * y / (distance + (0 if flat else z)),
            )
            for x, y, z in points
        ]

    outline = np.array(project(HEAD["outline"]))
    x0, y0 = outline.min(axis=0)
    x1, y1 = outline.max(axis=0)
    marks = project(HEAD["eyes"] + HEAD["nose"] + HEAD["mouth"])
    return Face(float(x0), float(y0), float(x1 - x0), float(y1 - y0), 0.99, tuple(marks))


def record(face: Face, prob: float = 0.02) -> dict[str, Any]:
    canvas = np.zeros((WIDTH, WIDTH, 3), np.uint8)
    values = dict(FaceGeometry().analyze(canvas, face).scores)
    return {
        "scores": {
            "pad_geometry": {"status": "ok", "values": values},
            "minifasnet": {"status": "ok", "values": {"prob": prob}},
            "as_35_selfies": {"status": "not_run", "values": {}},
        },
        "face": face.to_dict(),
    }


def test_a_real_head_shows_the_perspective_change_and_a_print_does_not() -> None:
    check = NearFarConsistency()
    real = check(record(photograph(250, False)), record(photograph(500, False))).scores
    flat = check(record(photograph(250, True)), record(photograph(500, True))).scores
    assert real["geometry_informative"] == flat["geometry_informative"] == 1.0
    assert real["geometry_observed_change"] > 0.04
    assert real["geometry_flatness"] < 0.3
    assert flat["geometry_observed_change"] == pytest.approx(0.0, abs=1e-9)
    assert flat["geometry_flatness"] == 1.0
    assert flat["fused_prob"] > real["fused_prob"]


def test_equal_distances_are_uninformative() -> None:
    scores = NearFarConsistency()(record(photograph(400, False)), record(photograph(400, True)))
    assert scores.scores["geometry_informative"] == 0.0
    assert scores.scores["geometry_flatness"] == 0.5


def test_fused_probability_follows_the_documented_formula() -> None:
    near, far = record(photograph(250, True), prob=0.3), record(photograph(500, True), prob=0.1)
    scores = NearFarConsistency()(near, far).scores
    # logit(0.3) + 2.0 * (1.0 - 0.5) -> 0.538
    assert scores["image_prob"] == 0.3
    assert scores["fused_prob"] == pytest.approx(1 / (1 + math.exp(-(math.log(0.3 / 0.7) + 1))))


def test_rejects_only_when_enabled() -> None:
    near, far = record(photograph(250, True), prob=0.45), record(photograph(500, True), prob=0.45)
    assert NearFarConsistency()(near, far).rejections == ()
    [rejection] = NearFarConsistency(reject=True)(near, far).rejections
    assert (rejection.code, rejection.subject) == ("spoof_detected", "near_far_geometry")


def test_image_probability_is_the_highest_model_that_ran() -> None:
    rec = record(photograph(300, False), prob=0.2)
    rec["scores"]["ibeta2_full"] = {"status": "ok", "values": {"prob": 0.7}}
    rec["scores"]["ibeta2_crops"] = {"status": "not_run", "values": {}}
    assert image_spoof_probability(rec, ("minifasnet", "ibeta2_full", "ibeta2_crops")) == 0.7
    # A model outside the fused list does not count.
    assert image_spoof_probability(rec, ("minifasnet",)) != 0.7


def _stage_records(near: Image, far: Image) -> dict[str, ImageRecord]:
    settings = Settings(model_manifest=BUNDLED_MANIFEST)
    policy = Policy.build(settings)
    detector, pad = DETECTOR_STAGE.build_models(settings), STAGE.build_models(settings)
    records = {}
    for side, image in (("near", near), ("far", far)):
        face = analyze_image(DETECTOR_STAGE, detector, image, None, policy).record.face
        assert face is not None
        records[side] = analyze_image(STAGE, pad, image, face, policy).record
    return records


def test_the_pad_stage_runs_the_pair_check_on_the_flat_sample_pairs() -> None:
    assert STAGE.pair_check is not None
    policy = Policy()
    records = _stage_records(*astronaut_pair())
    result = STAGE.pair_check(records["near"], records["far"], policy)
    # One photograph cropped twice is flat: the check measures it, but the detector's
    # box noise is as large as the effect, so it stays report-only and passes.
    assert result.scores["geometry_informative"] == 1.0
    assert 0.0 <= result.scores["geometry_flatness"] <= 1.0
    assert result.rejections == ()
    if all(r.scores["minifasnet"]["status"] == "ok" for r in records.values()):
        # MiniFASNet finds the real photo live, which outweighs the flatness.
        assert result.scores["fused_prob"] < 0.5
    else:
        # No trained PAD model ran (its files are not pulled): nothing to say per image.
        assert result.scores["image_prob"] == 0.5
    same = _stage_records(*group_pair())
    pair = STAGE.pair_check(same["near"], same["far"], policy)
    assert pair.scores["geometry_informative"] == 0.0


def test_pair_scores_reach_the_extra_columns() -> None:
    from etl.columns import analyst_row

    pair = NearFarConsistency()(record(photograph(250, True)), record(photograph(500, True)))
    doc = {"stages": {"pad": {"decision": {"outcome": "pass", "pair_scores": pair.scores}}}}
    row = analyst_row(doc)
    assert row["prob_pad_fused"] == pair.scores["fused_prob"]
    assert row["score_geometry_flatness_pad_pair"] == 1.0
