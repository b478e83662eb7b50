"""Per-image analysis (shared.pipeline.analyze_image, used by the workers and the in-process
runner): timing, not-run models, errors, rejections, what a stage hands on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.analysis import Face, Image, ModelInfo, ModelResult, Rejection, UnavailableModel
from shared.pipeline import Analysis, Policy, StageDefinition
from shared.pipeline import analyze_image as analyze

Times = dict[str, float]
FREE = StageDefinition(name="quality", build_models=lambda _: [], needs_face=False)


def analyze_image(
    models: list[object], image: Image, face: Face | None, policy: Policy | None = None
) -> tuple[
    str, dict[str, dict[str, object]], list[dict[str, object]], Face | None, dict[str, float]
]:
    result: Analysis = analyze(FREE, models, image, face, policy or Policy())  # type: ignore[arg-type]
    record = result.record
    reasons = [dict(r) for r in record.reasons]
    scores = {k: dict(v) for k, v in record.scores.items()}
    return record.verdict, scores, reasons, record.face, result.model_seconds


IMAGE = np.zeros((64, 64, 3), dtype=np.uint8)
FACE = Face(1, 2, 30, 40, 0.99, ((5, 5), (15, 5), (10, 10), (6, 15), (14, 15)))


@dataclass
class Scoring:
    key: str
    value: float
    reject: bool = False
    info: ModelInfo = ModelInfo("scoring", "1.2")

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        rejections = [Rejection("low_quality", "too soft", "sharpness")] if self.reject else []
        return ModelResult(scores={"value": self.value}, rejections=rejections)


@dataclass
class Detector:
    key: str = "face_detector"
    info: ModelInfo = ModelInfo("detector", "2.0")

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        return ModelResult(scores={"face_count": 1.0}, face=FACE)


@dataclass
class Broken:
    key: str = "broken"
    info: ModelInfo = ModelInfo("broken", "0.1")

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        raise RuntimeError("weights corrupt")


def test_records_scores_with_model_name_version_and_time() -> None:
    verdict, scores, reasons, _, times = analyze_image([Scoring("a", 0.5)], IMAGE, None)
    assert verdict == "pass"
    assert reasons == []
    assert scores["a"]["model"] == "scoring"
    assert scores["a"]["version"] == "1.2"
    assert scores["a"]["status"] == "ok"
    assert scores["a"]["values"] == {"value": 0.5}
    assert scores["a"]["time_ms"] >= 0
    assert set(times) == {"a"}


def test_records_an_uninstalled_model_as_not_run_without_a_score() -> None:
    missing = UnavailableModel("liqe", ModelInfo("liqe", "none"), "not installed")
    verdict, scores, _, _, times = analyze_image([missing, Scoring("a", 1.0)], IMAGE, None)
    assert verdict == "pass"
    assert scores["liqe"]["status"] == "not_run"
    assert scores["liqe"]["values"] == {}
    assert scores["liqe"]["time_ms"] is None
    assert "liqe" not in times


def test_collects_every_rejection_and_keeps_running_later_models() -> None:
    models = [Scoring("a", 1.0, reject=True), Scoring("b", 2.0, reject=True)]
    verdict, scores, reasons, _, _ = analyze_image(models, IMAGE, None)
    assert verdict == "reject"
    assert [r["code"] for r in reasons] == ["low_quality", "low_quality"]
    assert set(scores) == {"a", "b"}


def test_a_finding_the_policy_reports_only_is_a_note_not_a_rejection() -> None:
    policy = Policy(report_only=frozenset({"low_quality"}))
    result = analyze(FREE, [Scoring("a", 1.0, reject=True)], IMAGE, None, policy)
    assert result.record.verdict == "pass"
    assert result.record.reasons == ()
    assert [n["code"] for n in result.record.notes] == ["low_quality"]


def test_a_stage_that_needs_a_face_errors_without_one() -> None:
    needs = StageDefinition(name="quality", build_models=lambda _: [])
    result = analyze(needs, [Scoring("a", 1.0)], IMAGE, None, Policy())
    assert result.record.verdict == "error"
    assert result.record.reasons[0]["code"] == "missing_face"


def test_only_what_a_stage_provides_is_stored_for_later_stages() -> None:
    detector = StageDefinition(name="face_detector", build_models=lambda _: [],
                               needs_face=False, provides=frozenset({"face"}))  # fmt: skip
    record = analyze(detector, [Detector()], IMAGE, None, Policy()).record
    assert record.to_dict(detector.provides)["face"] == FACE.to_dict()
    assert "face" not in record.to_dict(frozenset())


def test_a_model_that_raises_is_an_error_not_a_rejection() -> None:
    verdict, scores, reasons, _, _ = analyze_image([Broken(), Scoring("a", 1.0)], IMAGE, None)
    assert verdict == "error"
    assert scores["broken"]["status"] == "error"
    assert "weights corrupt" in scores["broken"]["error"]
    assert reasons[0]["code"] == "model_error"
    assert "a" not in scores  # the stage stops at the first failure


def test_the_detectors_face_is_passed_to_later_models_and_returned() -> None:
    seen: list[Face | None] = []

    @dataclass
    class Spy:
        key: str = "spy"
        info: ModelInfo = ModelInfo("spy", "1")

        def analyze(self, image: Image, face: Face | None) -> ModelResult:
            seen.append(face)
            return ModelResult(scores={})

    _, _, _, face, _ = analyze_image([Detector(), Spy()], IMAGE, None)
    assert face == FACE
    assert seen == [FACE]
