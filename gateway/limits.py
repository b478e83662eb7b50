"""Back-pressure at the door: per-client rate limits, and shedding when queues are too deep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis

from shared.queues import stage_queue_stats

log = logging.getLogger(__name__)

_WINDOW_SECONDS = 60


async def check_rate(redis: aioredis.Redis, client_id: str, per_minute: int) -> int | None:
    """Count one request in the client's current minute; seconds to wait if over the limit."""
    now = time.time()
    window = int(now // _WINDOW_SECONDS)
    key = f"faceval:rate:{client_id}:{window}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, _WINDOW_SECONDS + 1)
        count, _ = await pipe.execute()
    if int(count) <= per_minute:
        return None
    return max(1, int((window + 1) * _WINDOW_SECONDS - now) + 1)


class QueueDepthWatch:
    """Polls the stage queues in the background so requests never wait on the broker for it."""

    def __init__(self, broker_url: str, prefix: str, interval: float) -> None:
        self._broker_url = broker_url
        self._prefix = prefix
        self._interval = interval
        self.depth = 0
        self.known = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="faceval-queue-depth")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            try:
                stats = await asyncio.to_thread(
                    stage_queue_stats, self._broker_url, self._prefix, 2.0
                )
                self.depth = sum(s.ready for s in stats.values())
                self.known = True
            except Exception as exc:
                # Unknown depth never sheds: publishing itself reports a broker outage.
                self.known = False
                log.debug("queue depth unavailable: %s", exc)
            await asyncio.sleep(self._interval)
