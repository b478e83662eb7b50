"""The stage runtime: consuming, timing, recording and routing, written once for all stages.

A stage is its models plus a `StageDefinition`. For each job the runtime counts the delivery
and fetches the image from Redis (one round trip), runs the stage's models in order (timing
each), and joins the image's result with the other image's in Redis (one atomic round trip).
The job that completes the stage decides it and writes both records and the decision to
MongoDB in one conditional update (with the final fields when the decision ends the
transaction); a pass publishes the next stage's jobs. Jobs carry what a decision needs (the
policy, the face, deferred findings, the client and creation time), so no job reads the
transaction document on the way. Per accepted pair that is one MongoDB write per stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared import codes, metrics, transactions
from shared.analysis import IMAGE_SIDES, Face, ImageSide, Model
from shared.analysis_pool import AnalysisPool, BrokenProcessPool
from shared.blobstore import BlobStore, JobStart, Joined
from shared.imaging import decode_rgb
from shared.pipeline import (
    Decision,
    ImageRecord,
    Policy,
    StageDefinition,
    StageName,
    analyze_image,
    decide,
    decided_by,
    due_at,
    labelled_deferred,
    next_stage,
    previous_stage,
)
from shared.schema import StageJob
from shared.settings import Settings
from shared.storage import PENDING, WorkerStore

log = logging.getLogger(__name__)

__all__ = [
    "JobOutcome",
    "ModelFailure",
    "SendJobs",
    "StageDefinition",
    "StageOutOfOrder",
    "StageRuntime",
]


class ModelFailure(Exception):
    """A model raised on this image; the job is retried until its attempts run out."""


class StageOutOfOrder(Exception):
    """This stage decided before the stage before it was recorded in MongoDB (that stage
    sends its jobs before its write lands, or its write failed and is being retried): the
    job is retried, and keeps its joined result."""


#: How long a decider waits, in steps, for the stage before to record (its write overtaken
#: by the jobs it sent just before) before handing the job back to the broker for a retry.
_AWAIT_PREVIOUS_SECONDS = (0.002, 0.004, 0.008, 0.016, 0.032)

#: Publishes a stage's jobs without waiting for the broker's confirms (the caller waits for
#: them before acknowledging the job).
SendJobs = Callable[[StageName, Sequence[StageJob]], None]


@dataclass
class JobOutcome:
    """What the worker must still do after the runtime handled a job."""

    #: The next stage's jobs (both images) when this job completed a stage: already given
    #: to `handle`'s `send` when it had one, else for the caller to publish.
    follow_ups: list[StageJob] = field(default_factory=list)
    #: Set when the job exhausted its attempts: the dead letter to publish.
    dead_letter: dict[str, Any] | None = None


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


@dataclass(frozen=True)
class JoinEntry:
    """One image's result at a stage as it waits in Redis for the other image's."""

    record: dict[str, Any]
    #: The face this image's job carried (the detector's record carries its own).
    face: dict[str, Any] | None

    def dump(self) -> str:
        record = dict(self.record)
        record["started_at"] = record["started_at"].timestamp()
        return json.dumps({"record": record, "face": self.face}, separators=(",", ":"))

    @classmethod
    def load(cls, text: str) -> JoinEntry:
        data = json.loads(text)
        record = data["record"]
        record["started_at"] = datetime.fromtimestamp(record["started_at"], UTC)
        return cls(record=record, face=data["face"])

    @property
    def face_handed_on(self) -> dict[str, Any] | None:
        face = self.record.get("face")
        return face if isinstance(face, dict) else self.face


class StageRuntime:
    """One per worker process: owns the models (loaded once, lazily) and the store clients,
    shared by the worker's task threads."""

    def __init__(self, definition: StageDefinition, settings: Settings) -> None:
        self.definition = definition
        self.stage: StageName = definition.name
        self.settings = settings
        self._models: Sequence[Model] | None = None
        self._models_lock = threading.Lock()
        #: For a stage whose models hold the GIL, with more than one task thread.
        self._pool: AnalysisPool | None = None
        self.store = WorkerStore(settings.mongo_url, settings.mongo_db)
        self.blobs = BlobStore(settings.redis_url)
        self.worker = socket.gethostname()
        self._ttl = settings.dead_letter_image_ttl_seconds
        #: The join outlives the images it waits for (a dead-lettered transaction's too).
        self._join_ttl = max(settings.image_ttl_seconds, self._ttl)

    def models(self) -> Sequence[Model]:
        """The stage's models, loaded once (in the children, for a stage run in a pool)."""
        if self._models is None:
            with self._models_lock:
                if self._models is None:
                    started = time.perf_counter()
                    if self.definition.holds_gil and self.settings.worker_concurrency > 1:
                        self._pool = AnalysisPool(
                            self.definition, self.settings, self.settings.worker_concurrency
                        )
                        self._models = ()
                        where = f"in {self.settings.worker_concurrency} child processes"
                    else:
                        self._models = self.definition.build_models(self.settings)
                        where = f"{len(self._models)} models"
                    elapsed = time.perf_counter() - started
                    metrics.MODEL_LOAD_SECONDS.labels(stage=self.stage).set(elapsed)
                    log.info("%s: models loaded (%s) in %.2f s", self.stage, where, elapsed)
        return self._models

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self.blobs.close()
        self.store.close()

    # --- one job ----------------------------------------------------------------------------

    def handle(
        self,
        job: StageJob,
        published_ns: int | None,
        delivery: str = "",
        send: SendJobs | None = None,
    ) -> JobOutcome:
        """Process one job; says what it handed on (the next stage's jobs: already given to
        `send` when there is one, else for the caller to publish) and any dead letter.

        Safe to run twice for the same job (redelivery): the stage's records and decision
        are written once, by the one conditional write that wins; a redelivery of the job
        that won (`delivery`, the broker message's task id) publishes the next jobs again
        in case it died before doing so. Raises ModelFailure while a failing job still has
        attempts left.
        """
        started_ns = time.time_ns()
        queue_ns = max(0, started_ns - published_ns) if published_ns else 0
        job = self._with_context(job)
        tid, side = job.transaction_id, job.image
        outcome = JobOutcome()
        start = self.blobs.begin_job(tid, self.stage, side, ttl=self._join_ttl)
        if start.image is None:
            self._image_expired(job)
            return outcome
        if start.joined is not None:
            # An earlier delivery finished and joined this image, then lost its acknowledgement
            # (a broker connection loss): its result stands, the models need not run again,
            # and the delivery is neither observed twice nor counted towards a poison job.
            entry = JoinEntry.load(start.joined)
            joined = self.blobs.join(tid, self.stage, side, start.joined, ttl=self._join_ttl)
        else:
            entry, joined = self._analyze_and_join(job, start, started_ns, queue_ns, outcome)
        if joined.entries is not None:
            entries = {
                s: entry if s == side else JoinEntry.load(joined.entries[s]) for s in IMAGE_SIDES
            }
            outcome.follow_ups = self._decide_stage(job, entries, delivery, send)
        elif not joined.images_present:
            # Redis lost the images after this job fetched its own (a restart), and with them
            # any result the other image had joined: no stage after this one could run, and
            # waiting for that result would only end in a timeout.
            self._image_expired(job)
        return outcome

    def _analyze_and_join(
        self, job: StageJob, start: JobStart, started_ns: int, queue_ns: int, outcome: JobOutcome
    ) -> tuple[JoinEntry, Joined]:
        assert start.image is not None
        side = job.image
        record, verdict, times, work_ns = self._analyze(
            job, start.image, start.attempt, started_ns, queue_ns
        )
        entry = JoinEntry(record, job.face)
        joined = self.blobs.join(job.transaction_id, self.stage, side, entry.dump(),
                                 ttl=self._join_ttl)  # fmt: skip
        if start.attempt == 1 or verdict == "error":
            # Observed on a job's first delivery only, so a redelivered job is not counted
            # twice (a dead letter is published by the delivery that gave up).
            if verdict == "error":
                outcome.dead_letter = self._dead_letter(job, record)
            labels = {"stage": self.stage, "image": side, "outcome": verdict}
            metrics.STAGE_QUEUE_SECONDS.labels(**labels).observe(queue_ns / 1e9)
            metrics.STAGE_EXECUTION_SECONDS.labels(**labels).observe(work_ns / 1e9)
            metrics.STAGE_JOBS_TOTAL.labels(**labels).inc()
            for key, seconds in times.items():
                metrics.MODEL_EXECUTION_SECONDS.labels(
                    stage=self.stage, model=key, image=side
                ).observe(seconds)
        return entry, joined

    def _image_expired(self, job: StageJob) -> None:
        """End the transaction: an image is gone (expired, lost by Redis, or the transaction
        ended and its images went with it: then this only repeats the idempotent cleanup)."""
        transactions.finalize_sync(
            self.store, self.blobs, job, codes.IMAGE_EXPIRED, decided_by=self.stage,
            reasons=[{"code": "image_expired", "image": job.image, "stage": self.stage,
                      "detail": "The image was no longer in the image store."}],
        )  # fmt: skip

    def _analyze(
        self, job: StageJob, data: bytes, attempt: int, started_ns: int, queue_ns: int
    ) -> tuple[dict[str, Any], str, dict[str, float], int]:
        """(the image's record, its verdict, seconds per model, the work's nanoseconds)."""
        limit = self.settings.max_job_attempts
        metrics.JOBS_IN_PROGRESS.labels(stage=self.stage).inc()
        try:
            work_started = time.perf_counter_ns()
            policy = self.policy_of(job)
            models = self.models()
            if attempt > limit:
                # Earlier deliveries never finished: the job kills its worker.
                reason = {"code": "poison_job", "subject": None,
                          "detail": f"The job was delivered {attempt} times without "
                                    "finishing (the worker died each time)."}  # fmt: skip
                analysed = ImageRecord("error", (reason,))
                times: dict[str, float] = {}
                decode_ns = 0
            elif self._pool is not None:
                try:
                    analysis, decode_ns = self._pool.analyze(data, job.face, policy)
                    analysed, times = analysis.record, analysis.model_seconds
                except BrokenProcessPool:
                    # The child died on this image (killed, or a crash in native code).
                    reason = {"code": "model_error", "subject": None,
                              "detail": "the analysis process died on this image"}  # fmt: skip
                    analysed, times, decode_ns = ImageRecord("error", (reason,)), {}, 0
            else:
                image = decode_rgb(data)
                decode_ns = time.perf_counter_ns() - work_started
                face = Face.from_dict(job.face) if job.face else None
                analysis = analyze_image(self.definition, models, image, face, policy)
                analysed, times = analysis.record, analysis.model_seconds
            if analysed.verdict == "error" and attempt < limit:
                raise ModelFailure(f"attempt {attempt}/{limit}: {analysed.reasons[0]['detail']}")
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
        if analysed.verdict == "error":
            record["attempts"] = attempt
        return record, analysed.verdict, times, work_ns

    def _dead_letter(self, job: StageJob, record: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "job": job.model_dump(mode="json"),
            "attempts": record.get("attempts"),
            "reasons": record["reasons"],
            "worker": self.worker,
            "dead_lettered_at": datetime.now(UTC).isoformat(),
        }

    def _decide_stage(
        self,
        job: StageJob,
        entries: Mapping[ImageSide, JoinEntry],
        delivery: str,
        send: SendJobs | None,
    ) -> list[StageJob]:
        """Both images are in: decide, write the stage once, say what to publish next (sent
        already, when `send` is given)."""
        tid = job.transaction_id
        decision = self.decide(job, entries)
        following = None if job.until == self.stage else next_stage(self.stage)
        records = {s: e.record for s, e in entries.items()}
        stored = {
            **decision.to_dict(),
            "by": job.image,
            "delivery": delivery,
            "decided_at": datetime.now(UTC),
        }
        final = None
        follow_ups: list[StageJob] = []
        if decision.outcome != "pass" or following is None:
            final = self._final_fields(job, decision, records)
        else:
            follow_ups = self._next_jobs(job, entries)
            if send is not None:
                # The broker persists the next jobs while MongoDB takes the write: the job
                # is acknowledged only after both (the worker waits for the confirms). The
                # next stage cannot record before this one (the write's `after`), so
                # sending first never reorders the stages in MongoDB.
                send(following, follow_ups)
        before = previous_stage(self.stage)
        won: dict[str, Any] = {}
        waits = list(_AWAIT_PREVIOUS_SECONDS)
        for _ in range(2 * len(waits) + 2):
            if self.store.record_stage(tid, self.stage, records, stored, final, after=before):
                if final is None:
                    return follow_ups
                transactions.count_final(tid, str(job.client_id), job.until, final)
                failed = decision.outcome == "error"
                transactions.finish_sync(self.blobs, tid, self._ttl if failed else None)
                return []
            # Lost the write: a redelivery, the other image's job deciding too (it can see
            # both entries only when one of them is a redelivery), the transaction had
            # ended, or the stage before has not recorded yet. Jobs sent above are then
            # harmless duplicates.
            fields = ["status", "summary_reason", f"stages.{self.stage}.decision"]
            if before is not None:
                fields.append(f"stages.{before}.decision")
            doc = self.store.get_transaction(tid, fields)
            if doc is None:
                return []
            if doc["status"] != PENDING:
                # Its finaliser may have died before the cleanup (Redis restarting):
                # finishing again is idempotent and costs two Redis calls.
                retained = transactions.retained_seconds(doc, self._ttl)
                transactions.finish_sync(self.blobs, tid, retained)
                return []
            stages = doc.get("stages", {})
            won = stages.get(self.stage, {}).get("decision") or {}
            if won or before is None:
                break
            if not stages.get(before, {}).get("decision"):
                if not waits:
                    raise StageOutOfOrder(f"{tid}: {self.stage} decided before {before} "
                                          "was recorded")  # fmt: skip
                # The stage before sent these jobs just before its write, which is on its way.
                time.sleep(waits.pop(0))
            # else it recorded between this write and this read: write again.
        else:
            raise StageOutOfOrder(f"{tid}: {self.stage} could not record after {before}")
        if delivery and won.get("delivery") == delivery and won.get("outcome") == "pass":
            # This job won before and may have died before publishing: its jobs, sent again
            # above (the same decision from the same entries), stand; the next stage's join
            # and conditional write make a duplicate harmless.
            return follow_ups
        return []

    def _next_jobs(self, job: StageJob, entries: Mapping[ImageSide, JoinEntry]) -> list[StageJob]:
        records = {s: ImageRecord.from_dict(e.record) for s, e in entries.items()}
        deferred = [r for r in job.deferred if r.get("decide_at") != self.stage]
        deferred += labelled_deferred(self.stage, records)
        update: dict[str, Any] = {"deferred": deferred}
        return [
            job.model_copy(update={**update, "image": s, "face": entries[s].face_handed_on})
            for s in IMAGE_SIDES
        ]

    def _with_context(self, job: StageJob) -> StageJob:
        """The job with the transaction's context, read once for a job published before jobs
        carried it (during a rolling upgrade); every other job already has it."""
        if job.client_id is not None and job.created_ns is not None:
            return job
        fields = ("client_id", "created_ns", "until", "policy")
        doc = self.store.get_transaction(job.transaction_id, fields)
        if doc is None:
            return job
        return job.model_copy(update={"client_id": str(doc["client_id"]),
                                      "created_ns": int(doc["created_ns"]),
                                      "until": doc.get("until"),
                                      "policy": job.policy or doc.get("policy")})  # fmt: skip

    def _final_fields(
        self, job: StageJob, decision: Decision, records: Mapping[ImageSide, Mapping[str, Any]]
    ) -> dict[str, Any]:
        # No context only when the transaction is gone: then the conditional write fails.
        created_ns = job.created_ns if job.created_ns is not None else time.time_ns()
        description = None
        if decision.outcome == "pass":
            description = transactions.accepted_description({"stages": {self.stage: records}})
        return transactions.final_fields(
            decision.summary,
            created_ns,
            decided_by=decided_by(decision, self.stage),
            reasons=decision.reasons,
            description=description,
        )

    def policy_of(self, job: StageJob) -> Policy:
        if job.policy is not None:
            return Policy.from_dict(job.policy)
        return Policy.build(self.settings)

    def decide(self, job: StageJob, entries: Mapping[ImageSide, JoinEntry]) -> Decision:
        """The stage's decision from its two records (with the face each job carried and
        the findings earlier stages left to it), by the pipeline's one decision function."""
        records = {}
        for side, entry in entries.items():
            record = ImageRecord.from_dict(entry.record)
            face = record.face or (Face.from_dict(entry.face) if entry.face else None)
            records[side] = dataclasses.replace(record, face=face)
        carried = due_at(self.stage, job.deferred)
        return decide(self.definition, records["near"], records["far"], self.policy_of(job),
                      carried)  # fmt: skip
