"""How a stage decides from its near and far results, and how that becomes a summary."""

from __future__ import annotations

from typing import Any

from shared import codes
from shared.transactions import stage_decision, summary_of


def _result(verdict: str, *reasons: str) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "reasons": [{"code": r, "detail": r, "subject": None} for r in reasons],
    }


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
