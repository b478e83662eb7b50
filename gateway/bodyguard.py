"""Bounded request bodies: at most `max_bytes`, read within `timeout` seconds, whatever the
framing (Content-Length or chunked) and however slowly the client sends.

An ASGI middleware around `receive`: it counts bytes as they arrive, so a body over the
limit is refused with 413 before the multipart parser has spooled more than the limit, and
a client that stops sending (or announced a Content-Length larger than what it sends) is
answered 408 when the time is up instead of holding the request forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics
from shared.codes import UPLOAD_ERROR_BY_CODE
from shared.schema import ErrorBody

log = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BodyGuard:
    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        guard = _Guarded(self, receive, send)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if guard.refused is None:
                raise
        if guard.refused is not None and not guard.started:
            await guard.refuse()


class _Guarded:
    def __init__(self, owner: BodyGuard, receive: Receive, send: Send) -> None:
        self._owner = owner
        self._receive = receive
        self._send = send
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + owner.timeout
        self._received = 0
        self._complete = False
        self.refused: BodyRefused | None = None
        self.started = False

    async def receive(self) -> Message:
        if self._complete:
            # Later calls only wait for a disconnect (streaming responses): not bounded here.
            return await self._receive()
        if self.refused is not None:
            raise self.refused
        remaining = self._deadline - self._loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(self._receive(), remaining)
        except TimeoutError:
            raise self._refuse(
                "request_timeout",
                f"The request body was not received within {self._owner.timeout:g} s.",
            ) from None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._owner.max_bytes:
                raise self._refuse(
                    "file_too_large",
                    f"The request body is larger than {self._owner.max_bytes} bytes.",
                )
            self._complete = not message.get("more_body", False)
        return message

    def _refuse(self, code: str, message: str) -> BodyRefused:
        self.refused = BodyRefused(code, message)
        metrics.UPLOADS_REJECTED_TOTAL.labels(code=code).inc()
        log.info("request body refused: %s", code)
        return self.refused

    async def send(self, message: Message) -> None:
        if self.refused is not None:
            # Whatever the application made of the aborted body (often a 400 from the
            # multipart parser), the client gets the reason it was cut off.
            if not self.started:
                await self.refuse()
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def refuse(self) -> None:
        assert self.refused is not None
        self.started = True
        status = UPLOAD_ERROR_BY_CODE[self.refused.code].http_status
        body = ErrorBody(code=self.refused.code, message=self.refused.message)
        payload = body.model_dump_json(exclude_none=True).encode()
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            # The rest of the body is never read: the connection cannot be reused.
            (b"connection", b"close"),
        ]
        start: dict[str, Any] = {"type": "http.response.start", "status": status,
                                 "headers": headers}  # fmt: skip
        await self._send(start)
        await self._send({"type": "http.response.body", "body": payload})
