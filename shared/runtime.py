"""The stage runtime: consuming, timing, recording and routing, written once for all stages.

A stage is its models plus a `StageDefinition`. For each job the runtime fetches the image
from Redis, runs the stage's models in order (timing each), records the image's result in
MongoDB exactly once, and, when both images of the stage are in, makes the stage's
decision: reject or error ends the transaction; pass publishes the next stage's jobs.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared import codes, metrics, transactions
from shared.aio import LoopThread
from shared.analysis import IMAGE_SIDES, Face, Image, Model, ModelUnavailable, PairResult
from shared.blobstore import AsyncBlobStore, BlobStore
from shared.imaging import decode_rgb
from shared.pipeline import StageName, next_stage
from shared.schema import StageJob
from shared.settings import Settings
from shared.storage import PENDING, Doc, Store

log = logging.getLogger(__name__)

ModelFactory = Callable[[Settings], Sequence[Model]]
#: Near and far stage records (as stored, with the detector's `face` added) -> a pair verdict.
PairCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], PairResult]


@dataclass(frozen=True)
class StageDefinition:
    """What makes a stage a stage: its name and how to build its models."""

    name: StageName
    build_models: ModelFactory
    #: Stages after the detector analyse the face it chose.
    needs_face: bool = True
    #: Runs once both images passed the stage; its rejections reject the pair.
    pair_check: PairCheck | None = None


class ModelFailure(Exception):
    """A model raised on this image; the job is retried until its attempts run out."""


@dataclass
class JobOutcome:
    """What the worker must still do after the runtime handled a job."""

    #: The next stage's jobs to publish (both images), when this job completed a stage.
    follow_ups: list[StageJob] = field(default_factory=list)
    #: Set when the job exhausted its attempts: the dead letter to publish.
    dead_letter: dict[str, Any] | None = None


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def analyze_image(
    models: Sequence[Model], image: Image, face: Face | None
) -> tuple[str, dict[str, Any], list[dict[str, Any]], Face | None, dict[str, float]]:
    """Run a stage's models on one image: (verdict, scores, reasons, face, per-model seconds).

    A model that is not installed is recorded as not run; a model that raises is an error
    (not a rejection): the stage stops and the transaction ends with an internal error.
    """
    scores: dict[str, Any] = {}
    reasons: list[dict[str, Any]] = []
    times: dict[str, float] = {}
    verdict = "pass"
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
            reasons = [{"code": "model_error", "detail": f"{model.key} failed: {exc}",
                        "subject": model.key}]  # fmt: skip
            return "error", scores, reasons, face, times
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
        for rejection in result.rejections:
            reasons.append(rejection.to_dict())
            verdict = "reject"
    return verdict, scores, reasons, face, times


class StageRuntime:
    """One per worker process: owns the models (loaded once, lazily) and the store clients."""

    def __init__(self, definition: StageDefinition, settings: Settings) -> None:
        self.definition = definition
        self.stage: StageName = definition.name
        self.settings = settings
        self._models: Sequence[Model] | None = None
        self._models_lock = threading.Lock()
        self._loop = LoopThread(f"faceval-{self.stage}-loop")
        self.store: Store = self._loop.run(self._make_store())
        self.async_blobs: AsyncBlobStore = self._loop.run(self._make_async_blobs())
        self.blobs = BlobStore(settings.redis_url)
        self.worker = socket.gethostname()

    async def _make_store(self) -> Store:
        return Store(self.settings.mongo_url, self.settings.mongo_db)

    async def _make_async_blobs(self) -> AsyncBlobStore:
        return AsyncBlobStore(self.settings.redis_url)

    def models(self) -> Sequence[Model]:
        if self._models is None:
            with self._models_lock:
                if self._models is None:
                    started = time.perf_counter()
                    self._models = self.definition.build_models(self.settings)
                    elapsed = time.perf_counter() - started
                    metrics.MODEL_LOAD_SECONDS.labels(stage=self.stage).set(elapsed)
                    log.info("%s: %d models loaded in %.2f s", self.stage, len(self._models),
                             elapsed)  # fmt: skip
        return self._models

    def close(self) -> None:
        self._loop.run(self.async_blobs.close())
        self.store.close()
        self._loop.stop()

    # --- one job ----------------------------------------------------------------------------

    def handle(self, job: StageJob, published_ns: int | None) -> JobOutcome:
        """Process one job; says what is left to publish (next stage's jobs, a dead letter).

        Safe to run twice for the same job (redelivery): the image result is written only
        once, and only the job whose write completed the stage acts on the decision.
        Raises ModelFailure while a failing job still has attempts left.
        """
        started_ns = time.time_ns()
        queue_ns = max(0, started_ns - published_ns) if published_ns else 0
        tid, side = job.transaction_id, job.image
        outcome = JobOutcome()
        # No read first: the conditional write tells a redelivery (or an ended transaction)
        # apart afterwards, which saves a database round-trip on every ordinary job.
        go_on, after = self._analyze_and_record(job, started_ns, queue_ns, outcome)
        if not go_on:
            return outcome
        if after is None:
            after = self._loop.run(self.store.get_transaction(tid))
            if after is None or after["status"] != PENDING:
                log.info("%s: transaction %s is gone or finished; job dropped", self.stage, tid)
                if after is not None:
                    # Its finaliser may have died before the cleanup (Redis restarting):
                    # finishing again is idempotent and costs two Redis calls.
                    self._loop.run(transactions.finish_ended(
                        self.async_blobs, after, self.settings.dead_letter_image_ttl_seconds
                    ))  # fmt: skip
                return outcome
        outcome.follow_ups = self._loop.run(self._advance(tid, side, after))
        return outcome

    def _analyze_and_record(
        self, job: StageJob, started_ns: int, queue_ns: int, outcome: JobOutcome
    ) -> tuple[bool, Doc | None]:
        """(whether the job should go on to the decision, the document after its write)."""
        tid, side = job.transaction_id, job.image
        attempt = self.blobs.count_attempt(
            tid, self.stage, side, ttl=self.settings.dead_letter_image_ttl_seconds
        )
        limit = self.settings.max_job_attempts
        metrics.JOBS_IN_PROGRESS.labels(stage=self.stage).inc()
        try:
            work_started = time.perf_counter_ns()
            data = self.blobs.get_image(tid, side)
            if data is None:
                self._loop.run(transactions.finalize(
                    self.store, self.async_blobs, tid, codes.IMAGE_EXPIRED,
                    decided_by=self.stage,
                    reasons=[{"code": "image_expired", "image": side, "stage": self.stage,
                              "detail": "The image was no longer in the image store."}],
                ))  # fmt: skip
                return False, None
            image = decode_rgb(data)
            decode_ns = time.perf_counter_ns() - work_started
            face = Face.from_dict(job.face) if job.face else None
            scores: dict[str, Any] = {}
            times: dict[str, float] = {}
            if attempt > limit:
                # Earlier deliveries never finished: the job kills its worker.
                verdict = "error"
                reasons = [{"code": "poison_job", "subject": None,
                            "detail": f"The job was delivered {attempt} times without "
                                      "finishing (the worker died each time)."}]  # fmt: skip
            elif self.definition.needs_face and face is None:
                verdict = "error"
                reasons = [{"code": "missing_face", "subject": None,
                            "detail": "No face context from the detector."}]  # fmt: skip
            else:
                verdict, scores, reasons, face, times = analyze_image(self.models(), image, face)
            if verdict == "error" and attempt < limit:
                raise ModelFailure(f"attempt {attempt}/{limit}: {reasons[0]['detail']}")
            work_ns = time.perf_counter_ns() - work_started
        finally:
            metrics.JOBS_IN_PROGRESS.labels(stage=self.stage).dec()
        record: dict[str, Any] = {
            "verdict": verdict,
            "reasons": reasons,
            "scores": scores,
            "time_ms": _ms(work_ns),
            "decode_ms": _ms(decode_ns),
            "queue_time_ms": _ms(queue_ns),
            "started_at": datetime.fromtimestamp(started_ns / 1e9, UTC),
            "worker": self.worker,
        }
        if self.stage == "face_detector" and face is not None:
            record["face"] = face.to_dict()
        letter: dict[str, Any] | None = None
        if verdict == "error":
            record["attempts"] = attempt
            letter = {
                "stage": self.stage,
                "job": job.model_dump(mode="json"),
                "attempts": attempt,
                "reasons": reasons,
                "worker": self.worker,
                "dead_lettered_at": datetime.now(UTC).isoformat(),
            }
        after = self._loop.run(self.store.record_image_result(tid, self.stage, side, record))
        if after is not None:
            outcome.dead_letter = letter
            # Observed only on the first write, so a redelivered job is never counted twice.
            labels = {"stage": self.stage, "image": side, "outcome": verdict}
            metrics.STAGE_QUEUE_SECONDS.labels(**labels).observe(queue_ns / 1e9)
            metrics.STAGE_EXECUTION_SECONDS.labels(**labels).observe(work_ns / 1e9)
            metrics.STAGE_JOBS_TOTAL.labels(**labels).inc()
            for key, seconds in times.items():
                metrics.MODEL_EXECUTION_SECONDS.labels(
                    stage=self.stage, model=key, image=side
                ).observe(seconds)
        return True, after

    async def _advance(self, tid: str, side: str, doc: Doc | None) -> list[StageJob]:
        if doc is None:  # a redelivery, or another writer got there first: read it fresh
            doc = await self.store.get_transaction(tid)
        if doc is None or doc["status"] != PENDING:
            return []
        stage_doc = doc.get("stages", {}).get(self.stage, {})
        if any(stage_doc.get(s) is None for s in IMAGE_SIDES):
            return []  # the other image's job will decide
        decision = stage_doc.get("decision")
        if decision is None:
            decision = {
                **self._decide(doc, stage_doc),
                "by": side,
                "advanced": False,
                "decided_at": datetime.now(UTC),
            }
            if not await self.store.claim_decision(tid, self.stage, decision):
                return []
        elif decision["by"] != side or decision.get("advanced"):
            # Someone else decides, or this is a redelivery of a job that already acted.
            return []
        following = next_stage(self.stage)
        if decision["outcome"] != "pass" or following is None:
            failed = decision["outcome"] == "error"
            await transactions.finalize(
                self.store,
                self.async_blobs,
                tid,
                transactions.summary_of(decision),
                decided_by=None if decision["outcome"] == "pass" else self.stage,
                reasons=decision["reasons"],
                retain_images_seconds=self.settings.dead_letter_image_ttl_seconds
                if failed
                else None,
                created_ns=int(doc["created_ns"]),
            )
            return []
        detector = doc["stages"].get("face_detector", {})
        return [
            StageJob(transaction_id=tid, image=s, face=(detector.get(s) or {}).get("face"))
            for s in IMAGE_SIDES
        ]

    def _decide(self, doc: Mapping[str, Any], stage_doc: Mapping[str, Any]) -> dict[str, Any]:
        decision = transactions.stage_decision(self.stage, stage_doc)
        check = self.definition.pair_check
        if check is None or decision["outcome"] != "pass":
            return decision
        detector = doc.get("stages", {}).get("face_detector", {})
        records = {
            side: {**stage_doc[side], "face": (detector.get(side) or {}).get("face")}
            for side in IMAGE_SIDES
        }
        try:
            pair = check(records["near"], records["far"])
        except Exception as exc:
            log.exception("%s: pair check failed", self.stage)
            return {"outcome": "error", "reasons": [{"code": "model_error", "stage": self.stage,
                    "image": None, "subject": "pair_check", "detail": str(exc)}]}  # fmt: skip
        reasons = [{**r.to_dict(), "image": None, "stage": self.stage} for r in pair.rejections]
        return {
            "outcome": "reject" if reasons else "pass",
            "reasons": reasons,
            "pair_scores": {k: float(v) for k, v in pair.scores.items()},
        }

    def mark_advanced(self, tid: str) -> None:
        self._loop.run(self.store.mark_advanced(tid, self.stage))
