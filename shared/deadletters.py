"""Listing and requeueing dead letters: jobs that failed every attempt.

Browsing a queue without consuming it is plain AMQP (basic.get, then reject with requeue),
so this uses pika directly rather than Celery.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from shared.analysis import IMAGE_SIDES
from shared.blobstore import AsyncBlobStore, BlobStore
from shared.messaging import dead_letter_queue, make_celery, publish_job
from shared.pipeline import StageName
from shared.queues import pika_url
from shared.runtime import JoinEntry
from shared.schema import StageJob
from shared.settings import Settings
from shared.storage import Store


@dataclass(frozen=True)
class DeadLetter:
    delivery_tag: int
    body: dict[str, Any]

    @property
    def transaction_id(self) -> str:
        return str(self.body["job"]["transaction_id"])

    def describe(self) -> str:
        reasons = "; ".join(r.get("detail", r.get("code", "")) for r in self.body["reasons"])
        return (
            f"{self.transaction_id} {self.body['stage']}/{self.body['job']['image']} "
            f"after {self.body['attempts']} attempts at {self.body['dead_lettered_at']}: "
            f"{reasons}"
        )


@contextmanager
def _channel(settings: Settings) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(pika_url(settings.broker_url)))
    try:
        channel = connection.channel()
        queue = dead_letter_queue(settings.queue_prefix)
        channel.queue_declare(queue.name, durable=True)
        yield channel
    finally:
        # Closing requeues every letter fetched but not acknowledged.
        connection.close()


def _fetch_all(channel: BlockingChannel, queue: str) -> list[DeadLetter]:
    count = channel.queue_declare(queue, passive=True).method.message_count
    letters = []
    for _ in range(count):
        method, _props, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        letters.append(DeadLetter(int(method.delivery_tag), json.loads(body)))
    return letters


def list_dead_letters(settings: Settings) -> list[DeadLetter]:
    with _channel(settings) as channel:
        return _fetch_all(channel, dead_letter_queue(settings.queue_prefix).name)


async def _reopen(settings: Settings, tid: str, stage: str, images: list[str]) -> str | None:
    """Reopen a transaction; None when done, else why its letters cannot be requeued."""
    store = Store(settings.mongo_url, settings.mongo_db)
    blobs = AsyncBlobStore(settings.redis_url)
    try:
        if not await blobs.images_present(tid):
            return "its images have expired"
        deadline = datetime.now(UTC) + timedelta(seconds=settings.transaction_deadline_seconds)
        if not await store.reopen(tid, stage, images, deadline):
            return "its transaction no longer ended with an internal error"
        # The stage's images that are not requeued keep their results: put them back in the
        # join, where the requeued jobs look for them.
        doc = await store.get_transaction(tid) or {}
        kept = {
            side: JoinEntry(record, _face_of(doc, side)).dump()
            for side, record in doc.get("stages", {}).get(stage, {}).items()
            if side in IMAGE_SIDES and side not in images
        }
        if kept:
            await blobs.seed_join(tid, stage, kept, settings.dead_letter_image_ttl_seconds)
        return None
    finally:
        await blobs.close()
        store.close()


def _face_of(doc: Mapping[str, Any], side: str) -> dict[str, Any] | None:
    """The face an earlier stage handed on for this image (what its job carried)."""
    for stage_doc in doc.get("stages", {}).values():
        face = (stage_doc.get(side) or {}).get("face")
        if isinstance(face, dict):
            return face
    return None


def requeue_dead_letters(
    settings: Settings, transaction_ids: set[str] | None
) -> list[tuple[DeadLetter, str | None]]:
    """Requeue the chosen letters (all if None); returns each with the reason it was kept."""
    celery = make_celery(settings)
    attempts = BlobStore(settings.redis_url)
    results: list[tuple[DeadLetter, str | None]] = []
    with _channel(settings) as channel:
        groups: dict[tuple[str, str], list[DeadLetter]] = {}
        for letter in _fetch_all(channel, dead_letter_queue(settings.queue_prefix).name):
            if transaction_ids is None or letter.transaction_id in transaction_ids:
                groups.setdefault((letter.transaction_id, letter.body["stage"]), []).append(letter)
        for (tid, stage_name), letters in groups.items():
            # One reopen per transaction and stage: its near and far letters go back together.
            images = sorted({str(letter.body["job"]["image"]) for letter in letters})
            problem = asyncio.run(_reopen(settings, tid, stage_name, images))
            for letter in letters:
                if problem is None:
                    job = StageJob.model_validate(letter.body["job"])
                    stage: StageName = letter.body["stage"]
                    attempts.reset_attempts(job.transaction_id, stage, job.image)
                    publish_job(celery, stage, job)
                    channel.basic_ack(letter.delivery_tag)
                results.append((letter, problem))
    return results
