"""Ending a transaction: counted once by the final write's winner, and the cleanup it owns
(images, the `done` signal) finished by whoever finds it ended if the first try failed."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from shared import codes, metrics, transactions
from shared.blobstore import AsyncBlobStore
from shared.storage import COMPLETED, PENDING, Store


class FakeStore:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"_id": "t1", "status": PENDING, "client_id": "c1",
                                    "created_ns": 0}  # fmt: skip

    async def finalize(self, transaction_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        if self.doc["status"] != PENDING:
            return None
        self.doc.update(fields, status=COMPLETED)
        return dict(self.doc)


class FlakyBlobs:
    """Fails its first `failures` calls the way a connection from before a restart does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[str, str]] = []

    def _call(self, what: str, transaction_id: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise RedisConnectionError("Connection closed by server.")
        self.calls.append((what, transaction_id))

    async def delete_images(self, transaction_id: str) -> None:
        self._call("delete", transaction_id)

    async def retain_images(self, transaction_id: str, seconds: int) -> None:
        self._call(f"retain {seconds}", transaction_id)

    async def announce_done(self, transaction_id: str) -> None:
        self._call("done", transaction_id)


def _counted() -> float:
    sample = metrics.VALIDATIONS_TOTAL.labels(status="rejected", reason="no_face", client="c1")
    return float(sample._value.get())


def test_a_finaliser_that_loses_redis_counts_once_and_a_redelivery_finishes_the_cleanup() -> None:
    store, blobs = FakeStore(), FlakyBlobs(failures=1)
    before = _counted()

    async def scenario() -> None:
        with pytest.raises(RedisConnectionError):
            await transactions.finalize(
                cast(Store, store), cast(AsyncBlobStore, blobs), "t1", codes.BY_REASON["no_face"],
                decided_by="face_detector", created_ns=0,
            )  # fmt: skip
        assert store.doc["status"] == COMPLETED
        # The redelivered job finds it ended: it finishes what the finaliser owned.
        await transactions.finish(
            cast(AsyncBlobStore, blobs), "t1", transactions.retained_seconds(store.doc, 3600)
        )

    asyncio.run(scenario())
    assert _counted() == before + 1
    assert blobs.calls == [("delete", "t1"), ("done", "t1")]


def test_a_failed_transaction_found_ended_keeps_its_images_for_a_requeue() -> None:
    blobs = FlakyBlobs(failures=0)
    doc = {"_id": "t2", "status": COMPLETED, "summary_reason": "internal_error"}
    asyncio.run(
        transactions.finish(
            cast(AsyncBlobStore, blobs), "t2", transactions.retained_seconds(doc, 3600)
        )
    )
    assert blobs.calls == [("retain 3600", "t2"), ("done", "t2")]
