"""Waiting for transactions to finish: one Redis pattern subscription per gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

_PATTERN = "faceval:done:*"


class DoneWaiter:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._events: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="faceval-done-waiter")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.psubscribe(_PATTERN)
                    self._ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "pmessage":
                            continue
                        channel = message["channel"]
                        name = channel.decode() if isinstance(channel, bytes) else str(channel)
                        for event in self._events.get(name.rsplit(":", 1)[-1], ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Waiters fall back to their timeout; keep trying to resubscribe.
                log.warning("done-waiter lost Redis (%s); resubscribing", exc)
                await asyncio.sleep(1.0)

    @contextlib.contextmanager
    def watch(self, transaction_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._events.setdefault(transaction_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._events.get(transaction_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._events[transaction_id]
