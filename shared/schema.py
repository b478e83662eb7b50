"""Typed shapes that cross process boundaries: stage jobs and the public result."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.analysis import ImageSide


class StageJob(BaseModel):
    """One image of one transaction, for one stage. The image itself stays in Redis."""

    transaction_id: str
    image: ImageSide
    #: The face the detector chose, as `Face.to_dict()`; None for the first stage.
    face: dict[str, Any] | None = None
    #: The transaction's decision policy (`Policy.to_dict()`), so no job reads it first.
    policy: dict[str, Any] | None = None
    #: What the transaction document holds and a stage's decision needs, carried so that no
    #: job reads the document: its client, creation time and last stage (a probe's `until`).
    client_id: str | None = None
    created_ns: int | None = None
    until: str | None = None
    #: Rejections earlier stages found and left to a later one (`decide_at`), labelled with
    #: their stage and image: the same list on both images' jobs.
    deferred: list[dict[str, Any]] = Field(default_factory=list)


class ModelScores(BaseModel):
    model: str = Field(description="Name of the model that produced these scores.")
    version: str
    status: Literal["ok", "not_run", "error"]
    time_ms: float | None = None
    values: dict[str, float | None] = Field(default_factory=dict)
    error: str | None = None


class Reason(BaseModel):
    code: str = Field(description="Stable reason code, e.g. no_face, accessory_detected.")
    detail: str
    subject: str | None = Field(None, description="The metric or accessory concerned.")
    image: ImageSide | None = None
    stage: str | None = None


class StageImageResult(BaseModel):
    verdict: Literal["pass", "reject", "error"]
    time_ms: float
    queue_time_ms: float
    scores: dict[str, ModelScores] = Field(default_factory=dict)
    reasons: list[Reason] = Field(default_factory=list)
    notes: list[Reason] = Field(
        default_factory=list,
        description="Findings the client's policy reports without rejecting (e.g. glasses).",
    )
    face: dict[str, Any] | None = None


class StageResult(BaseModel):
    near: StageImageResult | None = None
    far: StageImageResult | None = None
    pair_scores: dict[str, float] = Field(
        default_factory=dict,
        description="Scores of the check across near and far (e.g. identity similarity "
        "and the threshold it was compared with).",
    )


class Liveness(BaseModel):
    assessed: bool = Field(
        description="True only when a presentation-attack model ran on both images."
    )
    models: list[str] = Field(
        default_factory=list, description="The PAD models that ran (heuristics excluded)."
    )


class ValidationResult(BaseModel):
    transaction_id: str
    status: Literal["pending", "completed"]
    summary_code: int | None = Field(None, description="See the summary code catalogue.")
    summary_status: Literal["accepted", "rejected", "error"] | None = None
    summary_reason: str | None = None
    summary_desc: str | None = None
    http_code: int | None = None
    total_time_ms: float | None = None
    decided_by: Literal["face_detector", "accessory", "quality", "identity", "pad"] | None = None
    reasons: list[Reason] = Field(default_factory=list)
    stages: dict[str, StageResult | None] = Field(default_factory=dict)
    liveness: Liveness | None = Field(
        None,
        description="Whether liveness was assessed, and by which models (null while "
        "the PAD stage has not run).",
    )
    created_at: datetime
    finished_at: datetime | None = None
    status_url: str | None = None
    identity_checks: IdentityChecks | None = Field(
        None,
        description="Present when `subject_id` or `check_duplicates` was sent: the 1:1 "
        "and 1:N answers, computed once when the result is first read.",
    )


class Accepted(BaseModel):
    transaction_id: str
    status: Literal["pending", "completed"]
    status_url: str


class ErrorBody(BaseModel):
    code: str = Field(description="Stable error code; see the error catalogue.")
    message: str
    detail: dict[str, Any] | None = None


class ValidationSummary(BaseModel):
    transaction_id: str
    status: Literal["pending", "completed"]
    summary_code: int | None = None
    summary_reason: str | None = None
    created_at: datetime


class ValidationList(BaseModel):
    items: list[ValidationSummary]


# --- identity: subjects, 1:1, 1:N ----------------------------------------------------------


class SubjectCheck(BaseModel):
    subject_id: str
    found: bool = Field(description="False when the subject was erased before the check.")
    match: bool | None = Field(None, description="Whether the face is the subject's.")
    similarity: float | None = None
    threshold: float | None = None
    needs_reenrollment: bool = Field(
        False, description="The subject's template is of another face model: not compared."
    )


class DuplicateMatch(BaseModel):
    subject_id: str
    similarity: float


class DuplicateCheck(BaseModel):
    possible_duplicate: bool = Field(
        description="The face matches (at the identity threshold) a subject enrolled under "
        "another external id than this validation's user_id."
    )
    subject_ids: list[str] = Field(
        default_factory=list, description="Those subjects, most similar first."
    )
    matches: list[DuplicateMatch] = Field(
        default_factory=list,
        description="Every subject matching the face, its own external id included.",
    )
    threshold: float


class IdentityChecks(BaseModel):
    assessed: bool = Field(
        description="False when the validation ended before the identity stage passed: "
        "nothing was compared."
    )
    model: str | None = None
    model_version: str | None = None
    subject: SubjectCheck | None = None
    duplicates: DuplicateCheck | None = None


class SubjectCreated(BaseModel):
    subject_id: str
    external_id: str
    images_used: int
    model: str
    model_version: str
    replaced: bool = Field(
        description="True when this external id was enrolled before: its template was "
        "replaced (the subject id stays)."
    )


class Subject(BaseModel):
    subject_id: str
    external_id: str
    images_used: int
    model: str
    model_version: str
    created_at: datetime
    updated_at: datetime


class SubjectList(BaseModel):
    items: list[Subject]
    next_after: str | None = Field(
        None, description="Pass as `after` for the next page; null on the last page."
    )


class Verification(BaseModel):
    subject_id: str
    match: bool
    similarity: float
    threshold: float
    model: str
    model_version: str


class SearchMatch(BaseModel):
    subject_id: str
    external_id: str
    similarity: float
    match: bool = Field(description="At or above the identity threshold (not just the floor).")


class SearchResult(BaseModel):
    matches: list[SearchMatch]
    threshold: float
    floor: float
    model: str
    model_version: str
