"""The gateway's guards against clients and failing stores: bodies counted as they stream
(chunked too) and bounded in time, heads bounded in time, and every store failure a JSON
503 with Retry-After instead of a plain-text 500."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, File, UploadFile
from fastapi.testclient import TestClient
from pymongo.errors import ServerSelectionTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.bodyguard import BodyGuard
from gateway.errors import add_error_handlers
from gateway.server import protocol_with_head_timeout
from tools.stack import free_port, wait_for_port

Message = dict[str, Any]


def upload_app(limit: int, timeout: float) -> tuple[FastAPI, list[int]]:
    """An app that parses a multipart upload; records how many bytes it ever saw."""
    app = FastAPI()
    add_error_handlers(app)
    seen: list[int] = []

    @app.post("/upload")
    async def upload(file: UploadFile = File(...)) -> dict[str, int]:  # noqa: B008
        data = await file.read()
        seen.append(len(data))
        return {"bytes": len(data)}

    app.add_middleware(BodyGuard, max_bytes=limit, timeout=timeout)
    return app, seen


def call(app: Any, chunks: list[bytes], *, delay: float = 0.0, stall: bool = False) -> Message:
    """Drive the ASGI app with a chunked body (no Content-Length); the response's start
    and body, and how many chunks the app pulled."""
    boundary = "XyZ"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()  # fmt: skip
    parts = [head, *chunks, f"\r\n--{boundary}--\r\n".encode()]
    scope = {
        "type": "http", "method": "POST", "path": "/upload", "raw_path": b"/upload",
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                    (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent: list[Message] = []
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        if pulled >= len(parts):
            if stall:
                await asyncio.sleep(3600)
            await asyncio.sleep(3600)
        await asyncio.sleep(delay)
        pulled += 1
        more = pulled < len(parts) or stall
        return {"type": "http.request", "body": parts[pulled - 1], "more_body": more}

    async def send(message: Message) -> None:
        sent.append(message)

    async def go() -> None:
        await asyncio.wait_for(app(scope, receive, send), timeout=20)

    asyncio.run(go())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {"status": start["status"], "json": json.loads(body), "pulled": pulled}


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_all_read() -> None:
    app, seen = upload_app(limit=64 * 1024, timeout=30)
    chunks = [b"\xff" * 16 * 1024] * 640  # 10 MB, no Content-Length
    result = call(app, chunks)
    assert result["status"] == 413
    assert result["json"]["code"] == "file_too_large"
    assert result["pulled"] <= 6  # stopped at the limit, not at the end of the body
    assert seen == []


def test_a_body_within_the_limit_is_parsed_as_usual() -> None:
    app, seen = upload_app(limit=64 * 1024, timeout=30)
    result = call(app, [b"a" * 1000, b"b" * 1000])
    assert result["status"] == 200
    assert seen == [2000]


def test_a_client_that_stops_sending_its_body_gets_408_when_the_time_is_up() -> None:
    app, _ = upload_app(limit=64 * 1024, timeout=0.5)
    started = time.monotonic()
    result = call(app, [b"a" * 10], stall=True)
    assert result["status"] == 408
    assert result["json"]["code"] == "request_timeout"
    assert time.monotonic() - started < 5


def test_a_slow_drip_body_is_cut_off_at_the_total_read_timeout() -> None:
    app, _ = upload_app(limit=64 * 1024, timeout=0.6)
    result = call(app, [b"a"] * 100, delay=0.05)
    assert result["status"] == 408


@pytest.mark.parametrize(
    "failure",
    [RedisConnectionError("Connection refused"), ServerSelectionTimeoutError("no servers")],
    ids=["redis", "mongodb"],
)
def test_a_store_failure_in_a_dependency_is_a_json_503_with_retry_after(
    failure: Exception,
) -> None:
    app = FastAPI()
    add_error_handlers(app)

    async def api_key_lookup() -> str:
        raise failure

    @app.get("/v1/things")
    async def things(_: str = Depends(api_key_lookup)) -> dict[str, str]:
        return {}

    response = TestClient(app).get("/v1/things")
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert int(response.headers["retry-after"]) > 0


def test_an_unexpected_error_is_a_json_500_with_a_stable_code() -> None:
    app = FastAPI()
    add_error_handlers(app)

    @app.get("/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("bug")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"


@pytest.fixture
def slow_head_server() -> Iterator[int]:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            http=protocol_with_head_timeout(0.5), timeout_keep_alive=5)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for_port("127.0.0.1", port, 10)
    yield port
    server.should_exit = True
    thread.join(10)


def test_a_slowloris_head_is_cut_off_and_a_prompt_one_is_served(slow_head_server: int) -> None:
    assert httpx.get(f"http://127.0.0.1:{slow_head_server}/ping").json() == {"ok": "yes"}
    with socket.create_connection(("127.0.0.1", slow_head_server)) as sock:
        started = time.monotonic()
        closed_after: float | None = None
        for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - started
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable and sock.recv(1) == b"":
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None, "the server waited for the whole slow head"
        assert closed_after < 3
