"""The short-lived image store (Redis with a TTL) and the 'transaction finished' signal.

Images travel between stages as Redis keys, never inside messages and never into MongoDB.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from shared.analysis import IMAGE_SIDES


def image_key(transaction_id: str, side: str) -> str:
    return f"faceval:img:{transaction_id}:{side}"


def done_channel(transaction_id: str) -> str:
    return f"faceval:done:{transaction_id}"


class AsyncBlobStore:
    """Used by the gateway and by finalisation code running on an event loop."""

    def __init__(self, url: str) -> None:
        self.redis: aioredis.Redis = aioredis.Redis.from_url(url)

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
        self.redis: redis.Redis = redis.Redis.from_url(url)

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
