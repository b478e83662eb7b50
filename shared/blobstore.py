"""The short-lived image store (Redis with a TTL) and the 'transaction finished' signal.

Images travel between stages as Redis keys, never inside messages and never into MongoDB.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from shared.analysis import IMAGE_SIDES

#: A pooled connection idle longer than this is pinged before use, so one left over from
#: before a Redis restart is replaced instead of failing the next command.
HEALTH_CHECK_SECONDS = 5
#: Connection errors and timeouts are retried on a fresh connection with exponential
#: backoff (0.05 s doubling to 1 s, about 3 s in all) before the caller sees them.
RETRIES = 6
SOCKET_TIMEOUT_SECONDS = 5.0


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.05)


def client_options(*, asynchronous: bool) -> dict[str, Any]:
    """Options for every Redis client FaceVal makes: health-checked, retried, bounded."""
    retry = AsyncRetry(_backoff(), RETRIES) if asynchronous else Retry(_backoff(), RETRIES)
    return {
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "retry": retry,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
    }


def image_key(transaction_id: str, side: str) -> str:
    return f"faceval:img:{transaction_id}:{side}"


def done_channel(transaction_id: str) -> str:
    return f"faceval:done:{transaction_id}"


class AsyncBlobStore:
    """Used by the gateway and by finalisation code running on an event loop."""

    def __init__(self, url: str) -> None:
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url, **client_options(asynchronous=True)
        )

    async def put_images(self, transaction_id: str, images: dict[str, bytes], ttl: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for side, data in images.items():
                pipe.set(image_key(transaction_id, side), data, ex=ttl)
            await pipe.execute()

    async def delete_images(self, transaction_id: str) -> None:
        await self.redis.delete(*(image_key(transaction_id, s) for s in IMAGE_SIDES))

    async def retain_images(self, transaction_id: str, seconds: int) -> None:
        for side in IMAGE_SIDES:
            await self.redis.expire(image_key(transaction_id, side), seconds)

    async def images_present(self, transaction_id: str) -> bool:
        keys = [image_key(transaction_id, s) for s in IMAGE_SIDES]
        return int(await self.redis.exists(*keys)) == len(keys)

    async def announce_done(self, transaction_id: str) -> None:
        await self.redis.publish(done_channel(transaction_id), b"1")

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()


class BlobStore:
    """Used by worker threads, which fetch one image per job."""

    def __init__(self, url: str) -> None:
        self.redis: redis.Redis = redis.Redis.from_url(url, **client_options(asynchronous=False))

    def count_attempt(self, transaction_id: str, stage: str, side: str, ttl: int) -> int:
        """Count deliveries of one job, crashes included (a killed worker never says so)."""
        key = f"faceval:attempts:{transaction_id}:{stage}:{side}"
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, ttl)
            count, _ = pipe.execute()
        return int(count)

    def reset_attempts(self, transaction_id: str, stage: str, side: str) -> None:
        self.redis.delete(f"faceval:attempts:{transaction_id}:{stage}:{side}")

    def get_image(self, transaction_id: str, side: str) -> bytes | None:
        data = self.redis.get(image_key(transaction_id, side))
        assert data is None or isinstance(data, bytes)
        return data
