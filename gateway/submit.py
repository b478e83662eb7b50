"""Accepting a validation: checks, then images to Redis, the document to MongoDB and the
first stage's two jobs to RabbitMQ, or nothing at all.

Retries are safe with an `Idempotency-Key` (one transaction per key and client), and an
inserted transaction always gets its jobs: it is marked `queued_at` once the broker
confirmed them, and the sweeper re-publishes one left unmarked (publish-or-repair).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import Celery
from fastapi import UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.deps import Client, Deps
from gateway.errors import ApiError
from gateway.identity_checks import settle_identity_checks
from gateway.limits import check_rate
from shared import transactions
from shared.imaging import CheckedImage, ImageRejected, inspect_upload
from shared.messaging import publish_job
from shared.pipeline import STAGES, Policy
from shared.pseudonym import pseudonymise
from shared.results import to_result
from shared.schema import Accepted
from shared.storage import PENDING, Doc, expiry, utcnow

log = logging.getLogger(__name__)

SERVICE = "POST /v1/validations"
FORM_FIELDS = {
    "near", "far", "user_id", "process_guid", "client_reference", "subject_id",
    "check_duplicates",
}  # fmt: skip
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")
#: How long a retry waits for the first request with its key to store its transaction.
_CLAIM_WAIT_SECONDS = 3.0


@dataclass(frozen=True)
class Upload:
    checked: CheckedImage
    data: bytes


@dataclass(frozen=True)
class Submission:
    user_id: str
    process_guid: str | None
    client_reference: str | None
    #: A probe of the subjects API names its own service and stops after `until`.
    service: str = SERVICE
    until: str | None = None
    #: More fields for the transaction document (a validation's identity requests).
    extra: Mapping[str, Any] = field(default_factory=dict)


async def admit(d: Deps, who: Client) -> None:
    """Per-client rate limit, then load shedding: refused before any upload is read."""
    limit = who.rate_limit_per_minute or d.settings.rate_limit_per_minute
    retry_after = await check_rate(d.blobs.redis, who.id, limit)
    if retry_after is not None:
        raise ApiError(
            "rate_limited",
            f"At most {limit} validations a minute for this client.",
            headers={"Retry-After": str(retry_after)},
        )
    if d.depth.known and d.depth.depth > d.settings.max_queue_depth:
        raise ApiError("overloaded", headers={"Retry-After": "10"})


def normalised_guid(process_guid: str | None) -> str | None:
    if not process_guid:
        return None
    try:
        return str(uuid.UUID(process_guid))
    except ValueError as exc:
        raise ApiError("invalid_field", "process_guid must be a GUID.") from exc


async def read_images(d: Deps, uploads: dict[str, UploadFile]) -> dict[str, Upload]:
    """Each upload read up to the limit and checked (format, size, pixels, full decode)."""
    checked: dict[str, Upload] = {}
    for side, upload in uploads.items():
        raw = await upload.read(d.settings.max_upload_bytes + 1)
        try:
            info = await run_in_threadpool(
                inspect_upload,
                raw,
                max_bytes=d.settings.max_upload_bytes,
                max_pixels=d.settings.max_image_pixels,
                min_side=d.settings.min_image_side,
            )
        except ImageRejected as exc:
            raise ApiError(exc.code, f"{side}: {exc.message}", detail={"image": side}) from exc
        checked[side] = Upload(info, raw)
    return checked


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise ApiError(
            "invalid_field", f"{IDEMPOTENCY_HEADER} must be 1-128 visible ASCII characters."
        )
    return value


def fingerprint(form: Submission, images: dict[str, Upload]) -> str:
    """What makes two requests the same request (a retry), for an Idempotency-Key."""
    digest = hashlib.sha256()
    for part in (form.user_id, form.process_guid or "", form.client_reference or ""):
        digest.update(part.encode() + b"\0")
    for side in sorted(images):
        digest.update(side.encode() + hashlib.sha256(images[side].data).digest())
    return digest.hexdigest()


async def submit_once(
    d: Deps, who: Client, form: Submission, images: dict[str, Upload], key: str | None
) -> tuple[str, bool]:
    """(transaction id, whether this request created it): a retry with the same key gets
    the transaction the first request created; the same key for another request is 422."""
    tid = uuid.uuid4().hex
    if key is not None:
        earlier = await _claim(d, who, key, tid, fingerprint(form, images))
        if earlier is not None:
            return earlier, False
    try:
        await create_validation(d, who, form, images, tid)
    except Exception:
        if key is not None:
            # Nothing was created: the key stays usable for the client's retry.
            with contextlib.suppress(Exception):
                await d.store.release_idempotency_key(who.id, key, tid)
        raise
    return tid, True


async def _claim(d: Deps, who: Client, key: str, tid: str, print_: str) -> str | None:
    expires = utcnow() + timedelta(seconds=d.settings.idempotency_retention_seconds)
    held = await d.store.claim_idempotency_key(who.id, key, tid, print_, expires)
    if held is None:
        return None
    if held["fingerprint"] != print_:
        raise ApiError("idempotency_key_reused")
    earlier = str(held["transaction_id"])
    # The first request may still be storing its transaction (or about to fail and free
    # the key): wait a little for it rather than answer with an id that does not exist.
    deadline = asyncio.get_running_loop().time() + _CLAIM_WAIT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        if await d.store.get_transaction(earlier, ("client_id",)) is not None:
            return earlier
        await asyncio.sleep(0.1)
    raise ApiError(
        "service_unavailable",
        f"A request with this {IDEMPOTENCY_HEADER} is still being processed; retry later.",
        headers={"Retry-After": "1"},
    )


async def create_validation(
    d: Deps, who: Client, form: Submission, images: dict[str, Upload], tid: str | None = None
) -> str:
    """Store and queue a checked pair; the transaction id, or 503 with nothing left behind."""
    tid = tid or uuid.uuid4().hex
    secret = d.settings.pseudonym_secret.get_secret_value()
    doc = transactions.new_transaction(
        transaction_id=tid,
        client_id=who.id,
        client_name=who.name,
        user_name=pseudonymise(secret, "user", f"{who.id}:{form.user_id}"),
        documento=pseudonymise(secret, "document", form.user_id),
        process_guid=form.process_guid,
        client_reference=form.client_reference,
        service=form.service,
        api_hash=d.api_hash,
        images={
            s: {
                "width": u.checked.width,
                "height": u.checked.height,
                "format": u.checked.format,
                "bytes": u.checked.size_bytes,
            }
            for s, u in images.items()
        },
        expires_at=None,
        deadline_seconds=d.settings.transaction_deadline_seconds,
        policy=Policy.build(d.settings, who.id, who.policy).to_dict(),
        until=form.until,
    )
    doc["expires_at"] = expiry(doc["created_at"], d.settings.retention_days)
    doc.update(form.extra)
    try:
        await d.blobs.put_images(
            tid, {s: u.data for s, u in images.items()}, ttl=d.settings.image_ttl_seconds
        )
        await d.store.create_transaction(doc)
        await run_in_threadpool(publish_first_stage, d.celery, doc)
    except Exception as exc:
        log.warning("could not queue %s: %s", tid, exc)
        # Not accepted, so not kept: the client was told to retry.
        with contextlib.suppress(Exception):
            await d.store.transactions.delete_one({"_id": tid, "status": PENDING})
            await d.blobs.delete_images(tid)
        raise ApiError("service_unavailable", headers={"Retry-After": "5"}) from exc
    try:
        await d.store.mark_queued(tid)
    except Exception as exc:
        # Accepted and queued all the same; the sweeper re-publishes it (a harmless duplicate).
        log.warning("could not mark %s queued: %s", tid, exc)
    return tid


def publish_first_stage(celery: Celery, doc: Doc) -> None:
    for job in transactions.first_stage_jobs(doc):
        publish_job(celery, STAGES[0], job)


async def respond(
    d: Deps, tid: str, who: Client, wait: float, status_url: str, *, created: bool
) -> Response:
    """The result when final (waiting up to `wait` s for it), else 202 for a new one."""
    doc: Doc | None
    if wait > 0:
        with d.waiter.watch(tid) as done:
            doc = await d.store.get_client_transaction(tid, who.id)
            if doc is not None and doc["status"] == PENDING:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout=wait)
                doc = await d.store.get_client_transaction(tid, who.id)
    else:
        doc = await d.store.get_client_transaction(tid, who.id)
    if doc is None:
        # Another client's transaction is indistinguishable from a missing one.
        raise ApiError("not_found")
    if doc["status"] == PENDING and created:
        body = Accepted(transaction_id=tid, status="pending", status_url=status_url)
        return JSONResponse(body.model_dump(), status_code=202, headers={"Location": status_url})
    doc = await settle_identity_checks(d, who, doc)
    result = to_result(doc, status_url)
    return JSONResponse(result.model_dump(mode="json"), status_code=200)
