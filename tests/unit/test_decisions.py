"""How a stage decides from its near and far results, and how that becomes a summary."""

from __future__ import annotations

from typing import Any

from shared import codes
from shared.analysis import Embedding, PairResult, Rejection
from shared.pipeline import Decision, ImageRecord, Policy, StageDefinition, decide
from shared.transactions import summary_of


def _result(verdict: str, *reasons: str, subject: str | None = None) -> ImageRecord:
    return ImageRecord.from_dict(
        {
            "verdict": verdict,
            "reasons": [{"code": r, "detail": r, "subject": subject} for r in reasons],
        }
    )


def _stage(name: str, check: Any = None) -> StageDefinition:
    return StageDefinition(name=name, build_models=lambda _: [], pair_check=check)  # type: ignore[arg-type]


def stage_decision(stage: str, records: dict[str, ImageRecord]) -> dict[str, Any]:
    decision: Decision = decide(_stage(stage), records["near"], records["far"], Policy())
    out = decision.to_dict()
    del out["pair_scores"]
    return out


def test_passes_when_both_images_pass() -> None:
    decision = stage_decision("quality", {"near": _result("pass"), "far": _result("pass")})
    assert decision == {"outcome": "pass", "reasons": []}
    assert summary_of(decision) is codes.ACCEPTED


def test_rejects_when_either_image_is_rejected_and_names_the_image() -> None:
    decision = stage_decision(
        "accessory", {"near": _result("pass"), "far": _result("reject", "accessory_detected")}
    )
    assert decision["outcome"] == "reject"
    assert decision["reasons"] == [
        {"code": "accessory_detected", "detail": "accessory_detected", "subject": None,
         "image": "far", "stage": "accessory"}
    ]  # fmt: skip
    assert summary_of(decision).code == 20


def test_an_accessory_rejection_is_summarised_by_the_accessory_it_names() -> None:
    far = _result("reject", "accessory_detected", subject="face_mask")
    decision = stage_decision("accessory", {"near": _result("pass"), "far": far})
    assert summary_of(decision).reason == "face_mask"
    assert summary_of(decision).code == 21


def test_a_pair_check_runs_only_when_both_images_pass_and_reports_its_scores() -> None:
    calls: list[tuple[ImageRecord, ImageRecord]] = []

    def mismatch(near: ImageRecord, far: ImageRecord, policy: Policy) -> PairResult:
        calls.append((near, far))
        return PairResult({"similarity": 0.2, "threshold": 0.9},
                          [Rejection("face_mismatch", "two people", "identity")])  # fmt: skip

    stage = _stage("identity", mismatch)
    rejected = decide(stage, _result("reject", "x"), _result("pass"), Policy())
    assert rejected.outcome == "reject" and calls == []
    decision = decide(stage, _result("pass"), _result("pass"), Policy())
    assert decision.outcome == "reject"
    assert decision.reasons[0]["code"] == "face_mismatch"
    assert decision.reasons[0]["image"] is None
    assert decision.pair_scores == {"similarity": 0.2, "threshold": 0.9}
    assert decision.summary.code == 50


def test_a_pair_check_that_raises_is_an_error() -> None:
    def broken(near: ImageRecord, far: ImageRecord, policy: Policy) -> PairResult:
        raise ValueError("templates of two models")

    decision = decide(_stage("identity", broken), _result("pass"), _result("pass"), Policy())
    assert decision.outcome == "error"
    assert decision.summary is codes.INTERNAL_ERROR


def test_policy_takes_client_overrides_over_the_defaults() -> None:
    from shared.settings import Settings

    settings = Settings(
        report_only_reasons=["glasses"],
        identity_threshold=0.9,
        identity_client_thresholds={"c2": 0.8},
    )
    assert Policy.build(settings).report_only == {"glasses"}
    strict = Policy.build(settings, "c1", {"reject": ["glasses"], "thresholds": {"identity": 0.95}})
    assert strict.report_only == frozenset()
    assert strict.thresholds["identity"] == 0.95
    assert Policy.from_dict(strict.to_dict()) == strict
    assert Policy.build(settings, "c2").thresholds["identity"] == 0.8


def test_records_round_trip_through_storage_with_what_the_stage_provides() -> None:
    vector = Embedding("m", "1", __import__("numpy").ones(4, "float32") / 2)
    record = ImageRecord("pass", embedding=vector)
    stored = record.to_dict(frozenset({"embedding"}))
    again = ImageRecord.from_dict(stored)
    assert again.embedding is not None
    assert again.embedding.model == "m"
    assert list(again.embedding.vector) == [0.5, 0.5, 0.5, 0.5]


def test_an_error_wins_over_a_rejection() -> None:
    decision = stage_decision(
        "pad", {"near": _result("reject", "spoof_detected"), "far": _result("error", "model_error")}
    )
    assert decision["outcome"] == "error"
    assert summary_of(decision) is codes.INTERNAL_ERROR


def test_summary_follows_the_documented_priority() -> None:
    assert codes.summary_for_rejections(["face_too_small", "no_face"]).reason == "no_face"
    assert codes.summary_for_rejections(["unknown_reason"]) is codes.INTERNAL_ERROR


def test_summary_codes_are_unique_and_stable() -> None:
    numbers = [s.code for s in codes.SUMMARIES]
    assert len(numbers) == len(set(numbers))
    assert codes.BY_REASON["accepted"].code == 0
    assert codes.BY_REASON["no_face"].code == 10
    assert codes.BY_REASON["timeout"].http_code == 504


def test_every_code_is_documented_in_the_api_docs() -> None:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    for summary in codes.SUMMARIES:
        assert f"| {summary.code} | `{summary.reason}` |" in text
    for error in codes.UPLOAD_ERRORS:
        assert f"| `{error.code}` | {error.http_status} |" in text


def test_findings_a_stage_defers_are_decided_after_the_later_stages_own() -> None:
    from shared.analysis import Face, ModelInfo, ModelResult
    from shared.pipeline import analyze_image, carried_to, decided_by

    face = Face(0, 0, 10, 10, 0.9, ((1, 1), (2, 1), (1.5, 2), (1, 3), (2, 3)))

    class Small:
        key, info = "detector", ModelInfo("d", "1")

        def analyze(self, image: Any, f: Any) -> ModelResult:
            return ModelResult({}, [Rejection("face_too_small", "20 px")], face=face)

    detector = StageDefinition(
        name="face_detector",
        build_models=lambda _: [],
        needs_face=False,
        provides=frozenset({"face"}),
        defer=frozenset({"face_too_small"}),
        decide_at="accessory",
    )
    image = __import__("numpy").zeros((8, 8, 3), "uint8")
    record = analyze_image(detector, [Small()], image, None, Policy()).record
    assert record.verdict == "pass" and record.deferred[0]["code"] == "face_too_small"
    carried = carried_to("accessory", {"face_detector": {"near": record, "far": record}})
    masked = _result("reject", "face_mask", subject="face_mask")
    first = decide(_stage("accessory"), masked, _result("pass"), Policy(), carried)
    assert first.summary.reason == "face_mask"  # the later stage's own finding wins
    later = decide(_stage("accessory"), _result("pass"), _result("pass"), Policy(), carried)
    assert later.summary.reason == "face_too_small"
    assert decided_by(later, "accessory") == "face_detector"
    assert {r["image"] for r in later.reasons} == {"near", "far"}
