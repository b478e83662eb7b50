"""The short-lived image store (Redis with a TTL) and the 'transaction finished' signal.

Images travel between stages as Redis keys, never inside messages and never into MongoDB.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def join_key(transaction_id: str) -> str:
    """One hash per transaction: each stage's image results until the stage decides
    (`<stage>:<side>`), and the delivery count of each job (`attempts:<stage>:<side>`)."""
    return f"faceval:join:{transaction_id}"


def _attempts_field(stage: str, side: str) -> str:
    return f"attempts:{stage}:{side}"


def _transaction_keys(transaction_id: str) -> list[str]:
    return [join_key(transaction_id), *(image_key(transaction_id, s) for s in IMAGE_SIDES)]


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
        """The images and the stage join of an ended transaction."""
        await self.redis.delete(*_transaction_keys(transaction_id))

    async def retain_images(self, transaction_id: str, seconds: int) -> None:
        """Keep the images a while (for a requeue, which re-seeds the join from MongoDB)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(join_key(transaction_id))
            for side in IMAGE_SIDES:
                pipe.expire(image_key(transaction_id, side), seconds)
            await pipe.execute()

    async def seed_join(
        self, transaction_id: str, stage: str, entries: dict[str, str], ttl: int
    ) -> None:
        """Put back image results a requeued stage keeps (their side -> join entry)."""
        key = join_key(transaction_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for side, entry in entries.items():
                pipe.hset(key, f"{stage}:{side}", entry)
            pipe.expire(key, ttl)
            await pipe.execute()

    async def images_present(self, transaction_id: str) -> bool:
        keys = [image_key(transaction_id, s) for s in IMAGE_SIDES]
        return int(await self.redis.exists(*keys)) == len(keys)

    async def announce_done(self, transaction_id: str) -> None:
        await self.redis.publish(done_channel(transaction_id), b"1")

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()


@dataclass(frozen=True)
class JobStart:
    """What a job's first round trip found."""

    #: This delivery's number (1 on the first).
    attempt: int
    #: The image, or None once it has gone (expired, or the transaction ended).
    image: bytes | None
    #: This image's entry at this stage when an earlier delivery of the job already joined
    #: it (it finished, then lost its acknowledgement to a broker connection loss).
    joined: str | None


@dataclass(frozen=True)
class Joined:
    """What a job found when it joined its stage."""

    #: Both images' entries when this made the stage complete (or found it complete: a
    #: redelivery), else None: the other image's job will decide.
    entries: dict[str, str] | None
    #: False when the transaction's images are gone: it ended, or Redis lost its data (a
    #: restart), and with the images whatever the other image had joined.
    images_present: bool


class BlobStore:
    """The worker's one Redis client (its threads share the pool): two round trips per job,
    one to start it (`begin_job`) and one to join its result with the other image's."""

    def __init__(self, url: str) -> None:
        self.redis: redis.Redis = redis.Redis.from_url(url, **client_options(asynchronous=False))

    def begin_job(self, transaction_id: str, stage: str, side: str, ttl: int) -> JobStart:
        """Count this delivery of the job (crashes included: a killed worker never says so),
        fetch its image and any result an earlier delivery already joined, in one round trip."""
        key = join_key(transaction_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, _attempts_field(stage, side), 1)
            pipe.hget(key, f"{stage}:{side}")
            pipe.expire(key, ttl)
            pipe.get(image_key(transaction_id, side))
            count, joined, _, data = pipe.execute()
        assert data is None or isinstance(data, bytes)
        return JobStart(int(count), data, joined.decode() if joined is not None else None)

    def join(self, transaction_id: str, stage: str, side: str, entry: str, ttl: int) -> Joined:
        """Add this image's result to its stage. Atomic (MULTI), so of two images finishing
        at once exactly one sees the other's entry on its first delivery."""
        key = join_key(transaction_id)
        fields = [f"{stage}:{s}" for s in IMAGE_SIDES]
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, f"{stage}:{side}", entry)
            pipe.expire(key, ttl)
            pipe.hmget(key, fields)
            pipe.exists(*(image_key(transaction_id, s) for s in IMAGE_SIDES))
            _, _, values, present = pipe.execute()
        images_present = int(present) == len(IMAGE_SIDES)
        if any(v is None for v in values):
            return Joined(None, images_present)
        return Joined({s: v.decode() for s, v in zip(IMAGE_SIDES, values, strict=True)},
                      images_present)  # fmt: skip

    def reset_attempts(self, transaction_id: str, stage: str, side: str) -> None:
        self.redis.hdel(join_key(transaction_id), _attempts_field(stage, side))

    def delete_images(self, transaction_id: str) -> None:
        self.redis.delete(*_transaction_keys(transaction_id))

    def retain_images(self, transaction_id: str, seconds: int) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(join_key(transaction_id))
            for side in IMAGE_SIDES:
                pipe.expire(image_key(transaction_id, side), seconds)
            pipe.execute()

    def announce_done(self, transaction_id: str) -> None:
        self.redis.publish(done_channel(transaction_id), b"1")

    def close(self) -> None:
        self.redis.close()
