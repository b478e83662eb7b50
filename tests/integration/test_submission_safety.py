"""Submitting is safe to retry and never leaves a transaction without its jobs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from shared.blobstore import image_key
from shared.storage import Store
from shared.transactions import new_transaction
from tests.integration.conftest import ApiClient, client_id, submit, wait_final, with_store
from tools.stack import Stack

pytestmark = pytest.mark.integration


def _count_for_reference(stack: Stack, reference: str) -> int:
    async def count(store: Store) -> int:
        return int(await store.transactions.count_documents({"client_reference": reference}))

    return int(with_store(stack, count))


def test_a_retry_with_the_same_idempotency_key_gets_the_same_transaction(
    stack: Stack, client_a: ApiClient, no_face_jpegs: tuple[bytes, bytes]
) -> None:
    key, reference = uuid.uuid4().hex, f"idem-{uuid.uuid4().hex[:8]}"
    headers = {"Idempotency-Key": key}
    files = {"near": ("n.jpg", no_face_jpegs[0]), "far": ("f.jpg", no_face_jpegs[1])}
    form = {"user_id": "12345678", "client_reference": reference}
    first = client_a.http.post("/v1/validations", files=files, data=form, headers=headers)
    # A no-face pair can be final before the gateway reads it back: 200 then, else 202.
    assert first.status_code in (200, 202), first.text
    assert first.json()["status"] == ("pending" if first.status_code == 202 else "completed")
    tid = first.json()["transaction_id"]
    again = client_a.http.post("/v1/validations", files=files, data=form, headers=headers,
                               params={"wait": 30})  # fmt: skip
    assert again.json()["transaction_id"] == tid
    assert again.json()["status"] == "completed"
    assert _count_for_reference(stack, reference) == 1
    other = client_a.http.post(
        "/v1/validations", files=files, data={**form, "user_id": "999"}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    # Another key is another request.
    fresh = submit(client_a, *no_face_jpegs, wait=0, client_reference=reference)
    assert fresh.json()["transaction_id"] != tid
    bad = client_a.http.post("/v1/validations", files=files, data=form,
                             headers={"Idempotency-Key": "x" * 200})  # fmt: skip
    assert bad.status_code == 422


def test_a_transaction_whose_jobs_were_never_published_is_repaired_by_the_sweeper(
    stack: Stack, client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    # As a gateway killed between the MongoDB insert and the publish leaves it.
    tid = f"orphan-{uuid.uuid4().hex[:8]}"
    doc = new_transaction(
        transaction_id=tid, client_id=client_id(stack, client_a), client_name=client_a.name,
        user_name="u", documento="d", process_guid=None, client_reference=None,
        service="test", api_hash="test", images={}, expires_at=None, deadline_seconds=120,
    )  # fmt: skip
    doc["created_at"] = datetime.now(UTC) - timedelta(seconds=60)
    cache = redis.Redis.from_url(stack.settings.redis_url)
    for side, data in zip(("near", "far"), astronaut_jpegs, strict=True):
        cache.set(image_key(tid, side), data, ex=600)
    with_store(stack, lambda store: store.create_transaction(doc))
    final = wait_final(client_a, tid, seconds=60)
    assert final["summary_reason"] == "accepted"
