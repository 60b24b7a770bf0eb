"""A flaky phone network for the emulated fleet: an httpx transport that fails chosen attempts.

``reset``: the connection drops before the request leaves the phone (the server sees nothing).
``timeout``: the request reaches the server and is processed, but the answer never arrives (a
lost acknowledgement): the device must retry and still be counted once, which is what the
upload protocol's idempotency key and the server's same-bytes-same-receipt rule guarantee.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import httpx

from privtune.fleet.conditions import NETWORK_FAULTS


class FlakyTransport(httpx.BaseTransport):
    """Forwards to a real transport; the i-th request meets ``faults[i]`` (then all go through)."""

    def __init__(self, faults: Sequence[str], inner: httpx.BaseTransport | None = None) -> None:
        unknown = [f for f in faults if f not in NETWORK_FAULTS]
        if unknown:
            raise ValueError(f"unknown network fault(s) {unknown}; known: {NETWORK_FAULTS}")
        self._faults = list(faults)
        self._inner = inner or httpx.HTTPTransport()
        self._lock = threading.Lock()
        self.injected: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
            if fault is not None:
                self.injected.append(fault)
        if fault == "reset":
            raise httpx.ConnectError("connection reset (injected by the fleet)", request=request)
        response = self._inner.handle_request(request)
        if fault == "timeout":
            response.read()  # the server has answered; the phone never hears it
            response.close()
            raise httpx.ReadTimeout(
                "read timed out (injected by the fleet, after the server answered)", request=request
            )
        return response

    def close(self) -> None:
        self._inner.close()
