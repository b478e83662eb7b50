"""The pipeline: the stages in order, what a stage is, the ONE decision function, and the
in-process runner built on it.

Everything that decides a validation calls `decide` (both image records of a stage in, the
stage's verdict out): the distributed workers (shared/runtime.py), the in-process runner
below, and through it the benchmarks, `faceval eval ...` and `faceval calibrate`. No other
module re-implements the rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from shared import codes
from shared.analysis import (
    IMAGE_SIDES,
    Embedding,
    Face,
    Image,
    ImageSide,
    Model,
    ModelUnavailable,
    PairResult,
)
from shared.codes import Summary

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

StageName = Literal["face_detector", "accessory", "quality", "identity", "pad"]
STAGES: Final[tuple[StageName, ...]] = ("face_detector", "accessory", "quality", "identity", "pad")

#: The `time_ms_<service>_...` name of each stage in the analysts' columns.
COLUMN_SERVICE: Final[dict[StageName, str]] = {
    "face_detector": "face_detector",
    "accessory": "accessory_detector",
    "quality": "quality",
    "identity": "identity",
    "pad": "pad",
}

#: Default port of each worker's /metrics endpoint (identity came last: ports never move).
METRICS_PORT: Final[dict[StageName, int]] = {
    "face_detector": 9101,
    "accessory": 9102,
    "quality": 9103,
    "pad": 9104,
    "identity": 9105,
}

Verdict = Literal["pass", "reject", "error"]
#: What a stage hands to the stages after it.
Provision = Literal["face", "embedding"]


def queue_name(stage: StageName, prefix: str = "faceval") -> str:
    return f"{prefix}.{stage}"


def task_name(stage: StageName) -> str:
    return f"faceval.{stage}.analyze"


def next_stage(stage: StageName) -> StageName | None:
    index = STAGES.index(stage)
    return STAGES[index + 1] if index + 1 < len(STAGES) else None


def previous_stage(stage: StageName) -> StageName | None:
    index = STAGES.index(stage)
    return STAGES[index - 1] if index > 0 else None


def is_stage(name: str) -> bool:
    return name in STAGES


# --- policy: what a client may decide differently ------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The decision settings of one transaction: the deployment's defaults with the client's
    overrides applied, stored on the transaction so that every delivery decides alike."""

    #: Reason codes that are reported in the result but do not reject (e.g. clear glasses).
    report_only: frozenset[str] = frozenset()
    #: Named thresholds pair checks read (e.g. "identity": the same-person similarity).
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        settings: Settings,
        client_id: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Policy:
        """Defaults from settings; a client's record may set `report_only`, add to `reject`
        (codes taken out of report_only) and set `thresholds` ("identity": 1:1 and 1:N,
        "identity_pair": the near/far check)."""
        report_only = set(settings.report_only_reasons)
        thresholds: dict[str, float] = {
            "identity": settings.identity_threshold,
            "identity_pair": settings.identity_pair_threshold,
        }
        if client_id is not None and client_id in settings.identity_client_thresholds:
            thresholds["identity"] = settings.identity_client_thresholds[client_id]
        if overrides:
            if "report_only" in overrides:
                report_only = {str(v) for v in overrides["report_only"]}
            report_only -= {str(v) for v in overrides.get("reject", ())}
            thresholds.update(
                {str(k): float(v) for k, v in dict(overrides.get("thresholds", {})).items()}
            )
        return cls(frozenset(report_only), thresholds)

    def to_dict(self) -> dict[str, Any]:
        return {"report_only": sorted(self.report_only), "thresholds": dict(self.thresholds)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        return cls(
            frozenset(str(v) for v in data.get("report_only", ())),
            {str(k): float(v) for k, v in dict(data.get("thresholds", {})).items()},
        )


# --- records, decisions, stages ------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord:
    """One image's result at one stage, as recorded (and as a pair check receives it)."""

    verdict: Verdict
    #: Each {"code", "detail", "subject"}: rejections when the verdict is reject, the error
    #: when it is error. Reasons the policy reports without rejecting are in `notes`.
    reasons: tuple[Mapping[str, Any], ...] = ()
    #: model key -> {"model", "version", "status", "time_ms", "values", ...}
    scores: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notes: tuple[Mapping[str, Any], ...] = ()
    face: Face | None = None
    embedding: Embedding | None = None
    #: Rejections left to a later stage to decide (each names it in `decide_at`).
    deferred: tuple[Mapping[str, Any], ...] = ()

    def values(self, model: str) -> Mapping[str, float]:
        """The scores one model gave (empty when it did not run)."""
        return dict((self.scores.get(model) or {}).get("values", {}))

    def to_dict(self, provides: frozenset[Provision]) -> dict[str, Any]:
        data: dict[str, Any] = {
            "verdict": self.verdict,
            "reasons": [dict(r) for r in self.reasons],
            "scores": {k: dict(v) for k, v in self.scores.items()},
        }
        if self.notes:
            data["notes"] = [dict(n) for n in self.notes]
        if self.deferred:
            data["deferred"] = [dict(d) for d in self.deferred]
        if "face" in provides and self.face is not None:
            data["face"] = self.face.to_dict()
        if "embedding" in provides and self.embedding is not None:
            data["embedding"] = self.embedding.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageRecord:
        face, embedding = data.get("face"), data.get("embedding")
        return cls(
            verdict=data["verdict"],
            reasons=tuple(data.get("reasons", ())),
            scores=dict(data.get("scores", {})),
            notes=tuple(data.get("notes", ())),
            deferred=tuple(data.get("deferred", ())),
            face=Face.from_dict(face) if isinstance(face, Mapping) else None,
            embedding=Embedding.from_dict(embedding) if isinstance(embedding, Mapping) else None,
        )


#: Near and far records of a stage (both passed it), and the policy -> a pair verdict.
PairCheck = Callable[[ImageRecord, ImageRecord, Policy], PairResult]
ModelFactory = Callable[["Settings"], Sequence[Model]]


@dataclass(frozen=True)
class StageDefinition:
    """What makes a stage a stage: its name, how to build its models, what it needs and
    hands on, and an optional check across the pair."""

    name: StageName
    build_models: ModelFactory
    #: Stages after the detector analyse the face it chose.
    needs_face: bool = True
    #: What its records carry for later stages (and for pair checks).
    provides: frozenset[Provision] = frozenset()
    #: Runs once both images passed the stage; its rejections reject the pair.
    pair_check: PairCheck | None = None
    #: Reason codes this stage finds but leaves to a later stage (`decide_at`) to decide:
    #: the detector's framing findings wait for the accessory stage, so a masked face that
    #: is also small or turned is reported as masked, the more useful answer.
    defer: frozenset[str] = frozenset()
    decide_at: StageName | None = None
    #: Its models hold the GIL for most of their work (dlib; NumPy code of many small
    #: operations): a worker then runs them in child processes, one per task thread, so
    #: that a stage's near and far images still run at once (`shared.analysis_pool`).
    #: Models that release it (ONNX Runtime, OpenCV) run on the task threads.
    holds_gil: bool = False


@dataclass(frozen=True)
class Decision:
    outcome: Verdict
    #: Each {"code", "detail", "subject", "image" (None for a pair), "stage"}.
    reasons: list[dict[str, Any]]
    pair_scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reasons": self.reasons, "pair_scores": self.pair_scores}

    @property
    def summary(self) -> Summary:
        return summary_of(self.outcome, self.reasons)


def summary_of(outcome: str, reasons: Sequence[Mapping[str, Any]]) -> Summary:
    if outcome == "error":
        return codes.INTERNAL_ERROR
    if outcome == "reject":
        # A generic code names its subject when the catalogue has it (an accessory_detected
        # face_mask is summarised as face_mask).
        names = [r.get("subject") if r.get("subject") in codes.BY_REASON else r["code"]
                 for r in reasons]  # fmt: skip
        return codes.summary_for_rejections([str(n) for n in names])
    return codes.ACCEPTED


def reported_only(reason: Mapping[str, Any], policy: Policy) -> bool:
    """Whether the policy reports this finding without rejecting (by code or subject)."""
    return reason.get("code") in policy.report_only or reason.get("subject") in policy.report_only


def decide(
    definition: StageDefinition,
    near: ImageRecord,
    far: ImageRecord,
    policy: Policy,
    carried: Sequence[Mapping[str, Any]] = (),
) -> Decision:
    """THE decision of one stage: any error wins, then any rejection of either image, then
    the rejections earlier stages left to this one (`carried`), then the stage's pair
    check; otherwise the stage passes."""
    stage = definition.name
    records = {"near": near, "far": far}

    def reasons_of(verdict: Verdict) -> list[dict[str, Any]]:
        return [
            {**r, "image": side, "stage": stage}
            for side, rec in records.items()
            if rec.verdict == verdict
            for r in rec.reasons
        ]

    errors = reasons_of("error")
    if errors:
        return Decision("error", errors)
    rejections = reasons_of("reject")
    if rejections:
        return Decision("reject", rejections)
    if carried:
        return Decision("reject", [dict(r) for r in carried])
    if definition.pair_check is None:
        return Decision("pass", [])
    try:
        pair = definition.pair_check(near, far, policy)
    except Exception as exc:
        log.exception("%s: pair check failed", stage)
        reason = {"code": "model_error", "detail": f"pair check failed: {exc}",
                  "subject": "pair_check", "image": None, "stage": stage}  # fmt: skip
        return Decision("error", [reason])
    scores = {k: float(v) for k, v in pair.scores.items()}
    reasons = [
        {**r.to_dict(), "image": None, "stage": stage}
        for r in pair.rejections
        if not reported_only(r.to_dict(), policy)
    ]
    return Decision("reject" if reasons else "pass", reasons, scores)


def labelled_deferred(stage: str, records: Mapping[ImageSide, ImageRecord]) -> list[dict[str, Any]]:
    """The rejections `stage` found and left to a later stage, labelled with their stage
    and image (what a stage's next jobs carry on, `decide_at` included)."""
    return [
        {**reason, "image": side, "stage": stage}
        for side, record in records.items()
        for reason in record.deferred
    ]


def due_at(stage: StageName, deferred: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Of labelled deferred rejections, those `stage` decides (without `decide_at`)."""
    return [
        {k: v for k, v in reason.items() if k != "decide_at"}
        for reason in deferred
        if reason.get("decide_at") == stage
    ]


def carried_to(
    stage: StageName, earlier: Mapping[str, Mapping[ImageSide, ImageRecord]]
) -> list[dict[str, Any]]:
    """The rejections earlier stages left for `stage` to decide, labelled with their own
    stage and image (they are decided here, but found there)."""
    found = [reason for name, records in earlier.items()
             for reason in labelled_deferred(name, records)]  # fmt: skip
    return due_at(stage, found)


def decided_by(decision: Decision, stage: StageName) -> str | None:
    """The stage whose rule ended the transaction (a carried rejection names its own)."""
    if decision.outcome == "pass":
        return None
    return str(decision.reasons[0].get("stage") or stage) if decision.reasons else stage


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


@dataclass(frozen=True)
class Analysis:
    """One image through one stage's models."""

    record: ImageRecord
    #: model key -> seconds, for the models that ran.
    model_seconds: dict[str, float]


def analyze_image(
    definition: StageDefinition,
    models: Sequence[Model],
    image: Image,
    face: Face | None,
    policy: Policy,
) -> Analysis:
    """Run a stage's models on one image, in order, timing each.

    A model that is not installed is recorded as not run; a model that raises is an error
    (not a rejection): the stage stops and the transaction ends with an internal error.
    Rejections whose code the policy reports only become notes.
    """
    if definition.needs_face and face is None:
        reason = {"code": "missing_face", "subject": None,
                  "detail": "No face context from the detector."}  # fmt: skip
        return Analysis(ImageRecord("error", (reason,)), {})
    scores: dict[str, dict[str, Any]] = {}
    reasons: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []
    times: dict[str, float] = {}
    embedding: Embedding | None = None
    for model in models:
        entry: dict[str, Any] = {"model": model.info.name, "version": model.info.version}
        started = time.perf_counter_ns()
        try:
            result = model.analyze(image, face)
        except ModelUnavailable as exc:
            scores[model.key] = {**entry, "status": "not_run", "time_ms": None,
                                 "values": {}, "error": str(exc)}  # fmt: skip
            continue
        except Exception as exc:
            log.exception("model %s failed", model.key)
            elapsed = time.perf_counter_ns() - started
            scores[model.key] = {**entry, "status": "error", "time_ms": _ms(elapsed),
                                 "values": {}, "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
            error = {"code": "model_error", "detail": f"{model.key} failed: {exc}",
                     "subject": model.key}  # fmt: skip
            return Analysis(ImageRecord("error", (error,), scores, face=face), times)
        elapsed = time.perf_counter_ns() - started
        times[model.key] = elapsed / 1e9
        scores[model.key] = {
            **entry,
            "status": "ok",
            "time_ms": _ms(elapsed),
            "values": {k: float(v) for k, v in result.scores.items()},
        }
        if result.details:
            scores[model.key]["details"] = dict(result.details)
        if result.face is not None:
            face = result.face
        if result.embedding is not None:
            embedding = result.embedding
        for rejection in result.rejections:
            item = {**rejection.to_dict(), "model": model.key}
            if reported_only(item, policy):
                notes.append(item)
            elif rejection.code in definition.defer and definition.decide_at is not None:
                deferred.append({**item, "decide_at": definition.decide_at})
            else:
                reasons.append(item)
    verdict: Verdict = "reject" if reasons else "pass"
    record = ImageRecord(
        verdict, tuple(reasons), scores, tuple(notes), face, embedding, tuple(deferred)
    )
    return Analysis(record, times)


# --- the in-process runner -----------------------------------------------------------------


@dataclass
class StageRun:
    records: dict[ImageSide, ImageRecord]
    decision: Decision
    #: side -> seconds of the stage's models on that image.
    seconds: dict[ImageSide, float]
    model_seconds: dict[ImageSide, dict[str, float]]


@dataclass
class PipelineRun:
    """One pair through the stages, in process: what the workers would have decided."""

    stages: dict[str, StageRun] = field(default_factory=dict)
    summary: Summary = codes.ACCEPTED
    decided_by: str | None = None
    final_reasons: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reasons(self) -> list[dict[str, Any]]:
        return self.final_reasons

    @property
    def floor_s(self) -> float:
        """The analyzers' critical path: per stage the longer of near and far."""
        return sum(max(run.seconds.values()) for run in self.stages.values())


class InProcessPipeline:
    """The stages' own models in this process, decided by `decide`, stopping at the first
    stage that does not pass: the workers' early termination minus queues and storage."""

    def __init__(self, definitions: Sequence[StageDefinition], settings: Settings) -> None:
        self.settings = settings
        self.stages: list[tuple[StageDefinition, Sequence[Model]]] = []
        self.load_s: dict[str, float] = {}
        for definition in definitions:
            started = time.perf_counter()
            models = definition.build_models(settings)
            self.load_s[definition.name] = time.perf_counter() - started
            self.stages.append((definition, models))

    def run(
        self,
        images: Mapping[ImageSide, Image],
        policy: Policy | None = None,
        *,
        until: StageName | None = None,
    ) -> PipelineRun:
        """Near and far (the same array twice for a single photo) through every stage, or
        through `until` included."""
        policy = policy or Policy.build(self.settings)
        faces: dict[ImageSide, Face | None] = dict.fromkeys(IMAGE_SIDES)
        run = PipelineRun()
        for definition, models in self.stages:
            records: dict[ImageSide, ImageRecord] = {}
            seconds: dict[ImageSide, float] = {}
            model_seconds: dict[ImageSide, dict[str, float]] = {}
            for side in IMAGE_SIDES:
                started = time.perf_counter()
                if side == "far" and images["far"] is images["near"]:
                    # One photo as both near and far (an evaluation): the models are
                    # deterministic, so the near analysis stands for the far one too.
                    analysis = Analysis(records["near"], model_seconds["near"])
                else:
                    analysis = analyze_image(definition, models, images[side], faces[side], policy)
                seconds[side] = time.perf_counter() - started
                model_seconds[side] = analysis.model_seconds
                record = analysis.record
                if "face" in definition.provides and record.face is not None:
                    faces[side] = record.face
                records[side] = record
            earlier = {name: stage.records for name, stage in run.stages.items()}
            carried = carried_to(definition.name, earlier)
            decision = decide(definition, records["near"], records["far"], policy, carried)
            run.stages[definition.name] = StageRun(records, decision, seconds, model_seconds)
            if decision.outcome != "pass":
                run.summary = decision.summary
                run.decided_by = decided_by(decision, definition.name)
                run.final_reasons = decision.reasons
                break
            if until is not None and definition.name == until:
                break
        return run
