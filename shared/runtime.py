"""The stage runtime: consuming, timing, recording and routing, written once for all stages.

A stage is its models plus a `StageDefinition`. For each job the runtime fetches the image
from Redis, runs the stage's models in order (timing each), records the image's result in
MongoDB exactly once, and, when both images of the stage are in, makes the stage's
decision: reject or error ends the transaction; pass publishes the next stage's jobs.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared import codes, metrics, transactions
from shared.aio import LoopThread
from shared.analysis import IMAGE_SIDES, Face, Model
from shared.blobstore import AsyncBlobStore, BlobStore
from shared.imaging import decode_rgb
from shared.pipeline import (
    Decision,
    ImageRecord,
    Policy,
    StageDefinition,
    StageName,
    analyze_image,
    carried_to,
    decide,
    next_stage,
)
from shared.schema import StageJob
from shared.settings import Settings
from shared.storage import PENDING, Doc, Store

log = logging.getLogger(__name__)

__all__ = ["JobOutcome", "ModelFailure", "StageDefinition", "StageRuntime"]


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


def provided(doc: Mapping[str, Any], side: str, what: str) -> Any:
    """What an earlier stage handed on for this image (its record's `face`, `embedding`)."""
    for stage_doc in doc.get("stages", {}).values():
        value = (stage_doc.get(side) or {}).get(what)
        if value is not None:
            return value
    return None


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
            policy = self.policy_of(job)
            if attempt > limit:
                # Earlier deliveries never finished: the job kills its worker.
                reason = {"code": "poison_job", "subject": None,
                          "detail": f"The job was delivered {attempt} times without "
                                    "finishing (the worker died each time)."}  # fmt: skip
                analysed = ImageRecord("error", (reason,))
                times: dict[str, float] = {}
            else:
                analysis = analyze_image(self.definition, self.models(), image, face, policy)
                analysed, times = analysis.record, analysis.model_seconds
            verdict, reasons = analysed.verdict, [dict(r) for r in analysed.reasons]
            if verdict == "error" and attempt < limit:
                raise ModelFailure(f"attempt {attempt}/{limit}: {reasons[0]['detail']}")
            work_ns = time.perf_counter_ns() - work_started
        finally:
            metrics.JOBS_IN_PROGRESS.labels(stage=self.stage).dec()
        record: dict[str, Any] = {
            **analysed.to_dict(self.definition.provides),
            "time_ms": _ms(work_ns),
            "decode_ms": _ms(decode_ns),
            "queue_time_ms": _ms(queue_ns),
            "started_at": datetime.fromtimestamp(started_ns / 1e9, UTC),
            "worker": self.worker,
        }
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
                **self.decide(doc, stage_doc).to_dict(),
                "by": side,
                "advanced": False,
                "decided_at": datetime.now(UTC),
            }
            if not await self.store.claim_decision(tid, self.stage, decision):
                return []
        elif decision["by"] != side or decision.get("advanced"):
            # Someone else decides, or this is a redelivery of a job that already acted.
            return []
        # A probe (enrolment, 1:1, 1:N) stops after the stage it needs (`until`).
        following = None if doc.get("until") == self.stage else next_stage(self.stage)
        if decision["outcome"] != "pass" or following is None:
            failed = decision["outcome"] == "error"
            await transactions.finalize(
                self.store,
                self.async_blobs,
                tid,
                transactions.summary_of(decision),
                decided_by=None
                if decision["outcome"] == "pass"
                else str((decision["reasons"] or [{}])[0].get("stage") or self.stage),
                reasons=decision["reasons"],
                retain_images_seconds=self.settings.dead_letter_image_ttl_seconds
                if failed
                else None,
                created_ns=int(doc["created_ns"]),
                description=transactions.accepted_description(doc)
                if decision["outcome"] == "pass"
                else None,
            )
            return []
        policy = doc.get("policy")
        return [
            StageJob(transaction_id=tid, image=s, face=provided(doc, s, "face"), policy=policy)
            for s in IMAGE_SIDES
        ]

    def policy_of(self, job: StageJob) -> Policy:
        if job.policy is not None:
            return Policy.from_dict(job.policy)
        return Policy.build(self.settings)

    def decide(self, doc: Mapping[str, Any], stage_doc: Mapping[str, Any]) -> Decision:
        """The stage's decision from its two stored records (with what earlier stages handed
        on), by the pipeline's one decision function."""
        records = {}
        for side in IMAGE_SIDES:
            record = ImageRecord.from_dict(stage_doc[side])
            face = record.face or _face(provided(doc, side, "face"))
            records[side] = dataclasses.replace(record, face=face)
        raw_policy = doc.get("policy")
        policy = Policy.from_dict(raw_policy) if raw_policy else Policy.build(self.settings)
        earlier = {
            name: {side: ImageRecord.from_dict(stage[side]) for side in IMAGE_SIDES}
            for name, stage in doc.get("stages", {}).items()
            if name != self.stage and all(stage.get(side) for side in IMAGE_SIDES)
        }
        carried = carried_to(self.stage, earlier)
        return decide(self.definition, records["near"], records["far"], policy, carried)

    def mark_advanced(self, tid: str) -> None:
        self._loop.run(self.store.mark_advanced(tid, self.stage))


def _face(data: Any) -> Face | None:
    return Face.from_dict(data) if isinstance(data, Mapping) else None
