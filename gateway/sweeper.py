"""Ends transactions that stopped progressing: once per deployment, not once per replica.

Every gateway runs the loop, but only the holder of a short Redis lease sweeps; the lease is
renewed by its holder each round and expires on its own when that gateway dies, so another
replica takes over within `3 x sweep_interval_seconds`.

Each round it also repairs submissions whose gateway died (or lost the broker) between
inserting the transaction and the broker confirming its first jobs: a pending transaction
with no `queued_at` and no stage result after `republish_grace_seconds` gets its first
stage's jobs again. A duplicate is harmless: stage results are conditional writes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

import redis.asyncio as aioredis
from celery import Celery

from gateway.submit import publish_first_stage
from shared import transactions
from shared.blobstore import AsyncBlobStore
from shared.messaging import make_celery
from shared.settings import Settings
from shared.storage import Store, utcnow

log = logging.getLogger(__name__)

LEASE_KEY = "faceval:sweeper:leader"
#: Extend the lease only if this gateway still holds it (compare-and-extend in one step).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SweeperLease:
    """Leadership among gateways for the sweeper, kept in Redis."""

    def __init__(self, redis: aioredis.Redis, ttl_seconds: float, key: str = LEASE_KEY) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.holder = uuid.uuid4().hex

    async def acquire(self) -> bool:
        """True while this gateway leads: acquires a free lease or renews its own."""
        return bool(await self.redis.eval(_RENEW, 1, self.key, self.holder, self.ttl_ms))

    async def release(self) -> None:
        await self.redis.eval(_RELEASE, 1, self.key, self.holder)


async def republish_unqueued(store: Store, celery: Celery, grace_seconds: float) -> int:
    """Publish the first jobs of transactions that never got them; how many were repaired."""
    repaired = 0
    for doc in await store.unqueued_pending(utcnow() - timedelta(seconds=grace_seconds)):
        tid = str(doc["_id"])
        await asyncio.to_thread(publish_first_stage, celery, doc)
        await store.mark_queued(tid)
        log.warning("transaction %s had no confirmed jobs: first stage re-published", tid)
        repaired += 1
    return repaired


async def sweep_forever(store: Store, blobs: AsyncBlobStore, settings: Settings) -> None:
    lease = SweeperLease(blobs.redis, 3 * settings.sweep_interval_seconds)
    celery = make_celery(settings)
    try:
        while True:
            await asyncio.sleep(settings.sweep_interval_seconds)
            try:
                if not await lease.acquire():
                    continue
                await republish_unqueued(store, celery, settings.republish_grace_seconds)
                swept = await transactions.sweep_stale(store, blobs)
                if swept:
                    log.warning("swept %d stale transactions to timeout", swept)
            except Exception as exc:
                log.warning("sweep failed: %s", exc)
    finally:
        try:
            await lease.release()
        except Exception as exc:  # the lease expires by itself
            log.debug("sweeper lease not released: %s", exc)
