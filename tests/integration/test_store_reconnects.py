"""Redis restarts under the clients: the first command afterwards succeeds, sync and async
(health-checked connections, retried on a fresh connection with backoff)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.blobstore import AsyncBlobStore, BlobStore, JobStart, image_key
from tools.stack import free_port, wait_for_port

pytestmark = pytest.mark.integration


class PrivateRedis:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        program = shutil.which("redis-server")
        assert program is not None
        self.proc = subprocess.Popen(
            [program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert wait_for_port("127.0.0.1", self.port, 20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not found: apt-get install -y redis-server")
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


def test_the_first_commands_after_a_redis_restart_succeed(private_redis: PrivateRedis) -> None:
    sync = BlobStore(private_redis.url)
    assert sync.begin_job("t", "face_detector", "near", ttl=60) == JobStart(1, None, None)

    async def scenario() -> None:
        blobs = AsyncBlobStore(private_redis.url)
        try:
            await blobs.put_images("t", {"near": b"n", "far": b"f"}, ttl=60)
            private_redis.kill()
            private_redis.start()  # empty: nothing was saved
            # Pooled connections from before the restart are dead; none of these may fail.
            await blobs.put_images("t", {"near": b"n", "far": b"f"}, ttl=60)
            await blobs.delete_images("t")
            await blobs.announce_done("t")
            assert not await blobs.images_present("t")
        finally:
            await blobs.close()

    asyncio.run(scenario())
    # The first command after the restart succeeds, on an empty server (nothing was saved).
    assert sync.begin_job("t", "face_detector", "near", ttl=60) == JobStart(1, None, None)
    assert sync.join("t", "face_detector", "near", "{}", ttl=60).entries is None
    assert image_key("t", "near") == "faceval:img:t:near"
