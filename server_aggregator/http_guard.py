"""Connection-level limits for the aggregator's HTTP server (uvicorn's h11 protocol, extended).

uvicorn has no deadline for a request that arrives slowly: a client that sends half a request
line, or a body one byte every few seconds, holds a connection for as long as it likes. This
module (the only one that touches uvicorn's protocol class) adds:

* a **header deadline**: a request's headers must be complete within ``header_timeout_s`` of the
  first byte (or of the connection opening), however slowly they dribble in;
* a **body deadline**: its body must be complete within ``body_timeout_s`` of the headers;
* a **connection cap**: at ``max_connections``, a new connection evicts the one that has waited
  longest for its request headers (idle or slowloris sockets go first; a client that sends its
  request at once is served); if none is waiting, the new connection is closed;
* a **header size cap** (h11's incomplete-event limit, set from ``max_header_bytes``).

Time spent by the application (an aggregation behind an admin call) is not limited here.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 512
    max_header_bytes: int = MAX_HEADER_BYTES
    keep_alive_s: int = 5

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, found {value!r}")
        for name in ("max_connections", "max_header_bytes", "keep_alive_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, found {value!r}")


def guarded_protocol(limits: HttpLimits) -> type[H11Protocol]:
    """An h11 protocol class that enforces ``limits`` (pass it as uvicorn's ``http=``)."""

    class GuardedH11Protocol(H11Protocol):
        _phase: str | None = None
        _timer: asyncio.TimerHandle | None = None
        _phase_since: float = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm("headers", limits.header_timeout_s)
            if len(self.connections) > limits.max_connections:
                self._evict()

        def _evict(self) -> None:
            """Close the connection waiting longest for request headers (this one if none other waits)."""
            waiting = [
                c
                for c in self.connections
                if c is not self and isinstance(c, GuardedH11Protocol) and c._phase == "headers"
            ]
            victim = min(waiting, key=lambda c: c._phase_since) if waiting else self
            self.logger.warning(
                "%d connections open (cap %d): closing one", len(self.connections), limits.max_connections
            )
            victim._cancel()
            victim.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.IDLE:
                self._arm("headers", limits.header_timeout_s)
            elif state is h11.SEND_BODY:
                self._arm("body", limits.body_timeout_s)
            else:
                self._cancel()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def _arm(self, phase: str, seconds: float) -> None:
            """Start the deadline of ``phase`` unless it already runs (dribbling bytes never extend it)."""
            if self._phase == phase and self._timer is not None:
                return
            self._cancel()
            self._phase = phase
            self._phase_since = self.loop.time()
            self._timer = self.loop.call_later(seconds, self._expire, phase)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._phase = None, None

        def _expire(self, phase: str) -> None:
            self._timer, self._phase = None, None
            self.logger.info("closed a connection whose request %s took too long", phase)
            self.transport.close()

    return GuardedH11Protocol


class HeaderCap:
    """ASGI middleware: a request whose header block exceeds ``max_bytes`` gets 431 (h11's own cap only
    applies while a header block is incomplete, so a block that arrives in one read needs this)."""

    def __init__(self, app: Any, max_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > self.max_bytes:
            body = b'{"reason":"too_large","message":"request headers are over the cap"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """The ``uvicorn.Config`` keyword arguments that apply ``limits``."""
    return {
        "http": guarded_protocol(limits),
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "timeout_keep_alive": limits.keep_alive_s,
    }
