"""A real loopback HTTP endpoint for the update-upload contract, with a programmable fault plan.

FAULT INJECTOR: this serves the upload endpoint of the aggregator (``server_aggregator``) with a
programmable fault plan — dropped connections after storing, captive-portal pages, stalls past
the client's timeout, forged receipts — which a real server cannot be told to produce. Where both
answer, it answers like the real aggregator: ``tests/contract/test_upload_contract.py`` runs one
contract class against both. The real service's own end-to-end and kill -9 tests are in
``tests/e2e/test_server_*.py``.

Contract served (``POST /v1/rounds/{round_id}/updates``, body = ``encode_update`` bytes):

1. ``Content-Length`` required, ≤ ``max_body_bytes`` — else 411 ``malformed`` / 413 ``too_large``;
   ``Content-Type: application/octet-stream`` — else 415 ``malformed``.
2. ``ondevice.auth.verify_request`` with the device's secret over the raw request path (a query
   string is refused), the declared body hash (``Idempotency-Key``) and a shared
   ``InMemoryNonceCache`` — else 400 ``malformed`` or 401 ``stale_timestamp`` /
   ``bad_signature`` / ``replayed_nonce``. An unknown ``X-Privtune-Device`` is answered exactly
   like a bad signature (401 ``bad_signature``), so enrolled ids cannot be enumerated.
3. The body must hash to the (signed) ``Idempotency-Key`` — else 401 ``bad_signature``.
4. ``X-Privtune-Update-Mac`` must verify (``verify_update_mac``) — else 401 ``bad_signature``.
5. ``decode_update`` must succeed — else 400 ``malformed``; the update's round and device must be
   the path's round and the header's device — else 400 ``wrong_round`` / ``malformed``.
6. Round closed (``close_round``) → 409 ``round_not_open``.
7. One update per (device, round): first store → 201 + ``UpdateReceipt``; the same bytes again →
   200 + the SAME receipt; different bytes → 409 ``duplicate_conflict``.
Any other path or method → 404 / 405 ``malformed``. Every 4xx body is ``ErrorBody`` JSON.

Fault plan (``fail_next``): each queued fault is consumed by the next POST, in order.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ondevice.auth import HEADER_DEVICE, HEADER_NONCE, AuthError, InMemoryNonceCache, verify_request
from ondevice.protocol import (
    MAX_UPDATE_BYTES,
    ErrorBody,
    ProtocolError,
    RejectionReason,
    UpdateReceipt,
    decode_update,
    sha256_hex,
    verify_update_mac,
)
from ondevice.upload import CONTENT_TYPE, IDEMPOTENCY_HEADER, UPDATE_MAC_HEADER


class Fault(StrEnum):
    """What the endpoint does to the next request instead of (or around) serving it."""

    HTTP_500 = "http_500"  # 500 with a plain-text body, nothing processed
    HTTP_503 = "http_503"  # 503 (+ Retry-After if given), nothing processed
    DROP_BEFORE_RESPONSE = "drop_before_response"  # read the request, close the socket, nothing processed
    SLEEP_PAST_TIMEOUT = "sleep_past_timeout"  # stall (until stop() or sleep_s), then process and answer late
    DROP_AFTER_PROCESSING = "drop_after_processing"  # process + store, then close without answering (lost ack)
    TAMPER_BODY = "tamper_body"  # flip one byte of the received body (in-transit corruption), then process
    NOT_JSON_200 = "not_json_200"  # 200 with an HTML page (captive portal), nothing processed
    WRONG_RECEIPT = "wrong_receipt"  # 200 with a receipt for other bytes (or ``receipt_fields``), nothing processed
    HTML_404 = "html_404"  # 404 with an HTML page (misrouted proxy), nothing processed


@dataclass(frozen=True)
class FaultSpec:
    kind: Fault
    retry_after: str | None = None
    sleep_s: float = 30.0
    receipt_fields: Mapping[str, object] | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One request as the endpoint saw it (``status`` None when no response was written)."""

    method: str
    path: str
    device_id: str | None
    idempotency_key: str | None
    nonce: str | None
    body_sha256: str | None
    status: int | None
    outcome: str


@dataclass
class StoredUpdate:
    body: bytes
    receipt: UpdateReceipt


@dataclass
class _State:
    devices: dict[str, bytes]
    clock: Callable[[], float]
    max_skew_s: float
    max_body_bytes: int
    route: re.Pattern[str]
    nonces: InMemoryNonceCache = field(default_factory=InMemoryNonceCache)
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: deque[FaultSpec] = field(default_factory=deque)
    closed_rounds: set[int] = field(default_factory=set)
    stored: dict[tuple[str, int], StoredUpdate] = field(default_factory=dict)
    store_count: int = 0
    requests: list[RequestRecord] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Rejection(Exception):
    def __init__(self, status: int, reason: RejectionReason, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = ErrorBody(reason, message)


_UNKNOWN_SECRET = secrets.token_bytes(32)  # an unknown id is verified against this: it fails like a bad signature
_AUTH_STATUS = {RejectionReason.MALFORMED: 400}  # every other auth failure is 401


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so no idle keep-alive handler outlives stop().

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        return

    def do_GET(self) -> None:
        self._reply_error(_Rejection(405, RejectionReason.MALFORMED, "only POST is served"), outcome="method")

    def do_POST(self) -> None:
        state = self.server.state
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._reply_error(_Rejection(411, RejectionReason.MALFORMED, "Content-Length required"), "no length")
            return
        if int(length) > state.max_body_bytes:
            self.close_connection = True
            self._reply_error(_Rejection(413, RejectionReason.TOO_LARGE, f"body over {state.max_body_bytes}"), "big")
            return
        body = self.rfile.read(int(length))
        self._body_sha256 = sha256_hex(body)
        if self.headers.get("Content-Type") != CONTENT_TYPE:
            rejection = _Rejection(415, RejectionReason.MALFORMED, f"Content-Type must be {CONTENT_TYPE}")
            self._reply_error(rejection, "wrong content type")
            return
        with state.lock:
            fault = state.faults.popleft() if state.faults else None
        if fault is not None and self._apply_fault(fault, body):
            return
        if fault is not None and fault.kind is Fault.TAMPER_BODY:
            body = bytes([body[0] ^ 0x01]) + body[1:]
        try:
            receipt, created = self._process(body)
        except _Rejection as rejection:
            self._reply_error(rejection, outcome=f"rejected {rejection.error.reason.value}")
            return
        if fault is not None and fault.kind is Fault.DROP_AFTER_PROCESSING:
            self._drop("stored, connection dropped before the response")
            return
        status = 201 if created else 200
        outcome = "stored" if created else "duplicate, same receipt"
        if fault is not None and fault.kind is Fault.SLEEP_PAST_TIMEOUT:
            outcome = f"late ({outcome})"
        self._reply(status, json.dumps(receipt.to_dict()).encode(), "application/json", outcome)

    # ----------------------------------------------------------------------- faults

    def _apply_fault(self, fault: FaultSpec, body: bytes) -> bool:
        """Act out ``fault``; True when the request is finished (nothing processed)."""
        state = self.server.state
        if fault.kind is Fault.HTTP_500:
            self._reply(500, b"internal server error", "text/plain", "fault 500")
        elif fault.kind is Fault.HTTP_503:
            extra = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
            self._reply(503, b"busy", "text/plain", "fault 503", extra)
        elif fault.kind is Fault.DROP_BEFORE_RESPONSE:
            self._drop("fault: dropped before processing")
        elif fault.kind is Fault.NOT_JSON_200:
            self._reply(200, b"<html><body>Sign in to the Wi-Fi</body></html>", "text/html", "fault 200 html")
        elif fault.kind is Fault.HTML_404:
            self._reply(404, b"<html><body>404 Not Found</body></html>", "text/html", "fault 404 html")
        elif fault.kind is Fault.WRONG_RECEIPT:
            match = state.route.match(self.path)
            receipt = UpdateReceipt(
                round_id=int(match.group(1)) if match else 0,
                device_id=self.headers.get(HEADER_DEVICE, "unknown"),
                update_sha256=sha256_hex(body),
                accepted_at_unix=state.clock(),
            ).to_dict()
            receipt |= fault.receipt_fields or {"update_sha256": sha256_hex(body + b"other")}
            self._reply(200, json.dumps(receipt).encode(), "application/json", "fault wrong receipt")
        elif fault.kind is Fault.SLEEP_PAST_TIMEOUT:
            state.release.wait(fault.sleep_s)
            return False
        else:
            return False
        return True

    def _drop(self, outcome: str) -> None:
        self._record(None, outcome)
        self.close_connection = True  # the server closes the socket without writing a byte

    # ----------------------------------------------------------------------- the contract

    def _process(self, body: bytes) -> tuple[UpdateReceipt, bool]:
        state = self.server.state
        match = state.route.match(self.path.partition("?")[0])  # a query reaches verify_request: malformed
        if match is None:
            raise _Rejection(404, RejectionReason.MALFORMED, f"no such endpoint {self.path!r}")
        round_id = int(match.group(1))
        device_id = self.headers.get(HEADER_DEVICE)
        secret = state.devices.get(device_id or "", _UNKNOWN_SECRET)
        declared = self.headers.get(IDEMPOTENCY_HEADER) or ""
        if not re.fullmatch(r"[0-9a-f]{64}", declared):
            raise _Rejection(400, RejectionReason.MALFORMED, "Idempotency-Key must be the sha256 of the body (64 hex)")
        try:
            verify_request(
                secret,
                self.command,
                self.path,
                b"",
                self.headers,
                now=state.clock(),
                max_skew_s=state.max_skew_s,
                nonces=state.nonces,
                body_sha256=declared,
            )
        except AuthError as exc:
            raise _Rejection(_AUTH_STATUS.get(exc.reason, 401), exc.reason, exc.message) from exc
        digest = sha256_hex(body)
        if declared != digest:
            raise _Rejection(
                401, RejectionReason.BAD_SIGNATURE, "the body does not match its signed sha256 (Idempotency-Key)"
            )
        if not verify_update_mac(body, secret, self.headers.get(UPDATE_MAC_HEADER, "")):
            raise _Rejection(401, RejectionReason.BAD_SIGNATURE, "update MAC does not verify")
        try:
            update = decode_update(body)
        except ProtocolError as exc:
            raise _Rejection(400, RejectionReason.MALFORMED, str(exc)) from exc
        if update.round_id != round_id:
            raise _Rejection(400, RejectionReason.WRONG_ROUND, f"update is for round {update.round_id}")
        if update.device_id != device_id:
            raise _Rejection(400, RejectionReason.MALFORMED, f"update names device {update.device_id!r}")
        with state.lock:
            if round_id in state.closed_rounds:
                raise _Rejection(409, RejectionReason.ROUND_NOT_OPEN, f"round {round_id} is closed")
            existing = state.stored.get((device_id, round_id))
            if existing is not None:
                if existing.receipt.update_sha256 == digest:
                    return existing.receipt, False
                raise _Rejection(
                    409, RejectionReason.DUPLICATE_CONFLICT, f"round {round_id} already holds another update"
                )
            receipt = UpdateReceipt(round_id, device_id, digest, state.clock())
            state.stored[(device_id, round_id)] = StoredUpdate(body, receipt)
            state.store_count += 1
            return receipt, True

    # ----------------------------------------------------------------------- replies

    def _record(self, status: int | None, outcome: str) -> None:
        record = RequestRecord(
            method=self.command,
            path=self.path,
            device_id=self.headers.get(HEADER_DEVICE),
            idempotency_key=self.headers.get(IDEMPOTENCY_HEADER),
            nonce=self.headers.get(HEADER_NONCE),
            body_sha256=getattr(self, "_body_sha256", None),
            status=status,
            outcome=outcome,
        )
        with self.server.state.lock:
            self.server.state.requests.append(record)

    def _reply_error(self, rejection: _Rejection, outcome: str) -> None:
        body = json.dumps(rejection.error.to_dict()).encode()
        self._reply(rejection.status, body, "application/json", outcome)

    def _reply(
        self, status: int, body: bytes, content_type: str, outcome: str, extra: Mapping[str, str] | None = None
    ) -> None:
        self._record(status, outcome)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout) and closed its end
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins handler threads, so late handlers finish before asserts
    block_on_close = True

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        super().__init__(address, _Handler)
        self.state = state


class UploadEndpoint:
    """The stand-in upload endpoint on loopback; use as a context manager (``with UploadEndpoint(...) as ep``)."""

    def __init__(
        self,
        devices: Mapping[str, bytes],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        max_skew_s: float = 300,
        max_body_bytes: int = MAX_UPDATE_BYTES,
        prefix: str = "",
    ) -> None:
        """``prefix`` (e.g. ``/api``) is served before ``/v1/...``, as behind a path-routing proxy."""
        route = re.compile(rf"^{re.escape(prefix)}/v1/rounds/(0|[1-9][0-9]*)/updates$")
        self.state = _State(dict(devices), clock, max_skew_s, max_body_bytes, route)
        self.prefix = prefix
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> UploadEndpoint:
        self.state.release.clear()
        self._server = _Server(self._address, self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01})
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release stalled handlers and join every handler thread."""
        if self._server is None or self._thread is None:
            return
        self.state.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None

    def __enter__(self) -> UploadEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("endpoint is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def fail_next(
        self,
        kind: Fault,
        count: int = 1,
        *,
        retry_after: str | None = None,
        sleep_s: float = 30.0,
        receipt_fields: Mapping[str, object] | None = None,
    ) -> None:
        """Queue ``count`` faults of ``kind`` for the next POSTs (``retry_after`` for 503, ``sleep_s``
        for the stall, ``receipt_fields`` overriding the forged receipt's fields)."""
        with self.state.lock:
            self.state.faults.extend(FaultSpec(kind, retry_after, sleep_s, receipt_fields) for _ in range(count))

    def close_round(self, round_id: int) -> None:
        with self.state.lock:
            self.state.closed_rounds.add(round_id)

    @property
    def requests(self) -> list[RequestRecord]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def store_count(self) -> int:
        """How many times an update was written to the store (exactly-once means 1 per round)."""
        with self.state.lock:
            return self.state.store_count

    def stored(self, device_id: str, round_id: int) -> StoredUpdate | None:
        with self.state.lock:
            return self.state.stored.get((device_id, round_id))
