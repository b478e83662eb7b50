"""The public result of a validation, read off its transaction document."""

from __future__ import annotations

from typing import Any

from shared.analysis import IMAGE_SIDES
from shared.pipeline import STAGES
from shared.schema import (
    IdentityChecks,
    Liveness,
    Reason,
    StageImageResult,
    StageResult,
    ValidationResult,
)
from shared.storage import Doc
from shared.transactions import liveness_of


def _reason(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data.get(k) for k in ("code", "detail", "subject", "image", "stage")}


def _image_result(data: dict[str, Any] | None) -> StageImageResult | None:
    if data is None:
        return None
    return StageImageResult(
        verdict=data["verdict"],
        time_ms=data["time_ms"],
        queue_time_ms=data["queue_time_ms"],
        scores=data.get("scores", {}),
        reasons=[Reason(**_reason(r)) for r in data.get("reasons", [])],
        notes=[Reason(**_reason(r)) for r in data.get("notes", [])],
        face=data.get("face"),
    )


def _identity_checks(doc: Doc) -> IdentityChecks | None:
    checks = doc.get("identity_checks")
    return IdentityChecks(**checks) if checks else None


def to_result(doc: Doc, status_url: str | None = None) -> ValidationResult:
    stages: dict[str, StageResult | None] = {}
    for stage in STAGES:
        stage_doc = doc.get("stages", {}).get(stage)
        # A stage that never ran (early termination) is null, not zeros.
        stages[stage] = (
            StageResult(
                **{side: _image_result(stage_doc.get(side)) for side in IMAGE_SIDES},
                pair_scores=(stage_doc.get("decision") or {}).get("pair_scores") or {},
            )
            if stage_doc
            else None
        )
    liveness = liveness_of(doc)
    return ValidationResult(
        transaction_id=doc["_id"],
        status=doc["status"],
        summary_code=doc.get("summary_code"),
        summary_status=doc.get("summary_status"),
        summary_reason=doc.get("summary_reason"),
        summary_desc=doc.get("summary_desc"),
        http_code=doc.get("http_code"),
        total_time_ms=doc.get("total_time_ms"),
        decided_by=doc.get("decided_by"),
        reasons=[Reason(**r) for r in doc.get("reasons", [])],
        stages=stages,
        liveness=Liveness(**liveness) if liveness else None,
        created_at=doc["created_at"],
        finished_at=doc.get("finished_at"),
        status_url=status_url,
        identity_checks=_identity_checks(doc),
    )
