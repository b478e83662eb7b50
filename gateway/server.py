"""Serving the gateway with uvicorn, with every wait on a client bounded.

uvicorn bounds idle keep-alive connections (`timeout_keep_alive`) and the size of a request
head (`h11_max_incomplete_event_size`) but not the time a client takes to send its head: a
client sending one header byte at a time (slowloris) held a connection for as long as it
liked. `HeadTimeoutProtocol` closes a connection whose request head has not fully arrived
within `header_timeout` seconds of the connection opening or of the previous response.
Bodies are bounded by `gateway.bodyguard.BodyGuard` (inside the application).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared.settings import Settings

#: The largest request head (request line and headers) accepted, in bytes.
MAX_HEAD_BYTES = 16 * 1024


class HeadTimeoutProtocol(H11Protocol):
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()  # the next request's head must arrive in time too

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_head and not self.transport.is_closing():
            # No response is possible without a complete head: just close, as for an idle
            # keep-alive connection.
            self.transport.close()


def protocol_with_head_timeout(seconds: float) -> type[H11Protocol]:
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"header_timeout": seconds})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "http": protocol_with_head_timeout(settings.header_read_timeout_seconds),
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "log_level": settings.log_level.lower(),
        "access_log": False,
    }


def serve(app: Any, settings: Settings) -> None:
    uvicorn.run(app, **uvicorn_options(settings))
