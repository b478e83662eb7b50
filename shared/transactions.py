"""The life of a transaction document: how it starts, how a stage decides, how it ends.

Used by the gateway (creation, sweeping stale ones to timeout) and by every worker
(decisions, finalisation), so each rule lives here once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared import codes, metrics, pipeline
from shared.analysis import IMAGE_SIDES
from shared.blobstore import AsyncBlobStore, BlobStore
from shared.codes import Summary
from shared.schema import StageJob
from shared.storage import PENDING, Doc, Store, WorkerStore

log = logging.getLogger(__name__)


def new_transaction(
    *,
    transaction_id: str,
    client_id: str,
    client_name: str,
    user_name: str,
    documento: str,
    process_guid: str | None,
    client_reference: str | None,
    service: str,
    api_hash: str,
    images: Mapping[str, Mapping[str, Any]],
    expires_at: datetime | None,
    deadline_seconds: float,
    policy: Mapping[str, Any] | None = None,
    until: str | None = None,
) -> Doc:
    now_ns = time.time_ns()
    return {
        "_id": transaction_id,
        "file_token": transaction_id,
        "status": PENDING,
        "client_id": client_id,
        "convenio": client_id,
        "client_name": client_name,
        "user_name": user_name,
        "documento": documento,
        "procesoConvenioGuid": process_guid,
        "client_reference": client_reference,
        "service": service,
        "api_hash": api_hash,
        "images": {side: dict(info) for side, info in images.items()},
        "stages": {},
        #: The client's decision policy at submission time (e.g. which accessories reject):
        #: stored so that a redelivered job decides as the first delivery did.
        "policy": dict(policy) if policy else None,
        #: The last stage to run: None for a validation (every stage); "identity" for a probe
        #: image of the subjects API, which needs the face template and nothing after it.
        "until": until,
        "created_at": datetime.fromtimestamp(now_ns / 1e9, UTC),
        "created_ns": now_ns,
        "deadline_at": datetime.fromtimestamp(now_ns / 1e9 + deadline_seconds, UTC),
        "expires_at": expires_at,
        "finished_at": None,
    }


def first_stage_jobs(doc: Mapping[str, Any]) -> list[StageJob]:
    """The first stage's two jobs of a new transaction document."""
    return [
        StageJob(
            transaction_id=str(doc["_id"]),
            image=side,
            policy=doc.get("policy"),
            client_id=str(doc["client_id"]),
            created_ns=int(doc["created_ns"]),
            until=doc.get("until"),
        )
        for side in IMAGE_SIDES
    ]


def summary_of(decision: Mapping[str, Any]) -> Summary:
    """The summary of a stored stage decision (see `shared.pipeline.decide`)."""
    return pipeline.summary_of(decision["outcome"], decision["reasons"])


#: Scores of the pad stage that are heuristics or geometry, not a presentation-attack model.
_PAD_HEURISTICS = frozenset({"as_heuristics", "pad_geometry"})


def _pad_models_that_judged(record: Mapping[str, Any]) -> set[str]:
    """PAD models that ran on this image and could assess it (MiniFASNet declines tight
    crops: `assessed` 0)."""
    return {
        key
        for key, entry in record.get("scores", {}).items()
        if entry.get("status") == "ok"
        and key not in _PAD_HEURISTICS
        and entry.get("values", {}).get("assessed", 1.0) != 0.0
    }


def liveness_of(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """Which PAD models judged both images (None while the PAD stage has not run)."""
    stage = doc.get("stages", {}).get("pad")
    if not stage or any(stage.get(side) is None for side in IMAGE_SIDES):
        return None
    judged = [_pad_models_that_judged(stage[side]) for side in IMAGE_SIDES]
    models = sorted(set.intersection(*judged))
    return {"assessed": bool(models), "models": models}


def accepted_description(doc: Mapping[str, Any]) -> str | None:
    """An accepted pair never claims a live face unless a PAD model ran on both images."""
    liveness = liveness_of(doc)
    if liveness is not None and not liveness["assessed"]:
        return codes.ACCEPTED_LIVENESS_NOT_ASSESSED
    return None


def final_fields(
    summary: Summary,
    created_ns: int,
    *,
    decided_by: str | None,
    reasons: Sequence[Mapping[str, Any]] = (),
    description: str | None = None,
) -> dict[str, Any]:
    """The fields a transaction's one final write sets (with `status`: completed)."""
    now_ns = time.time_ns()
    return {
        "summary_code": summary.code,
        "summary_status": str(summary.status),
        "summary_reason": summary.reason,
        "summary_desc": description or summary.description,
        "http_code": summary.http_code,
        "total_time_ms": round((now_ns - created_ns) / 1e6, 3),
        "decided_by": decided_by,
        "reasons": [dict(r) for r in reasons],
        "finished_at": datetime.fromtimestamp(now_ns / 1e9, UTC),
    }


def count_final(transaction_id: str, client_id: str, until: str | None, fields: Doc) -> None:
    """Metrics and log of the one final write that won. Called before any step that can
    fail, so a retry (which finds the transaction ended) never counts it again. Probe
    images of the subjects API (`until` set) are not validations."""
    if until is not None:
        return
    status = str(fields["summary_status"])
    metrics.VALIDATIONS_TOTAL.labels(
        status=status, reason=str(fields["summary_reason"]), client=client_id
    ).inc()
    metrics.VALIDATION_SECONDS.labels(status=status).observe(fields["total_time_ms"] / 1000)
    log.info(
        "transaction %s ended: %s (%s) in %.1f ms",
        transaction_id,
        fields["summary_reason"],
        fields["decided_by"],
        fields["total_time_ms"],
    )


async def finalize(
    store: Store,
    blobs: AsyncBlobStore,
    transaction_id: str,
    summary: Summary,
    *,
    decided_by: str | None,
    reasons: Sequence[Mapping[str, Any]] = (),
    retain_images_seconds: int | None = None,
    created_ns: int | None = None,
    description: str | None = None,
) -> Doc | None:
    """End a pending transaction once; None if something else had already ended it.

    Images are deleted, except for a dead-lettered transaction, which keeps them for
    `retain_images_seconds` so that an operator can requeue it.
    """
    if created_ns is None:
        doc = await store.get_transaction(transaction_id, ("status", "created_ns"))
        if doc is None or doc["status"] != PENDING:
            return None
        created_ns = int(doc["created_ns"])
    fields = final_fields(
        summary, created_ns, decided_by=decided_by, reasons=reasons, description=description
    )
    final = await store.finalize(transaction_id, fields)
    if final is not None:
        count_final(transaction_id, str(final["client_id"]), final.get("until"), fields)
    # Whoever ended it: images never outlive their transaction.
    await finish(blobs, transaction_id, retain_images_seconds)
    return final


def finalize_sync(
    store: WorkerStore,
    blobs: BlobStore,
    job: StageJob,
    summary: Summary,
    *,
    decided_by: str | None,
    reasons: Sequence[Mapping[str, Any]] = (),
) -> bool:
    """`finalize` from a worker's thread, for a transaction ended outside a stage decision
    (its image expired): what the job carries replaces a read of the document."""
    # No context only when the transaction is gone (see StageRuntime._with_context): then
    # the conditional write fails and nothing is counted.
    created_ns = job.created_ns if job.created_ns is not None else time.time_ns()
    fields = final_fields(summary, created_ns, decided_by=decided_by, reasons=reasons)
    won = store.finalize(job.transaction_id, fields)
    if won:
        count_final(job.transaction_id, str(job.client_id), job.until, fields)
    finish_sync(blobs, job.transaction_id)
    return won


async def finish(
    blobs: AsyncBlobStore, transaction_id: str, retain_images_seconds: int | None = None
) -> None:
    """The cleanup an ended transaction owns: its images deleted (or kept a while for a
    requeue) and `done` announced to waiting gateways. Idempotent, so a job redelivered after
    its worker failed here (Redis restarting) runs it again: see `finish_ended`."""
    if retain_images_seconds:
        await blobs.retain_images(transaction_id, retain_images_seconds)
    else:
        await blobs.delete_images(transaction_id)
    await blobs.announce_done(transaction_id)


def finish_sync(
    blobs: BlobStore, transaction_id: str, retain_images_seconds: int | None = None
) -> None:
    """`finish` from a worker's thread."""
    if retain_images_seconds:
        blobs.retain_images(transaction_id, retain_images_seconds)
    else:
        blobs.delete_images(transaction_id)
    blobs.announce_done(transaction_id)


def retained_seconds(doc: Mapping[str, Any], dead_letter_ttl: int) -> int | None:
    """How long an ended transaction's images stay: a failed one keeps them for a requeue."""
    return dead_letter_ttl if doc.get("summary_reason") == codes.INTERNAL_ERROR.reason else None


async def sweep_stale(store: Store, blobs: AsyncBlobStore) -> int:
    """Time out transactions past their deadline, so none stays pending forever."""
    swept = 0
    for transaction_id in await store.stale_pending(datetime.now(UTC)):
        if await finalize(store, blobs, transaction_id, codes.TIMEOUT, decided_by=None):
            swept += 1
    return swept
