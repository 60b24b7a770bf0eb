"""The device's durable outbox and its upload client: one update delivered exactly once per round.

Exactly-once rests on three pieces: the ``Outbox`` keeps the encoded update on disk until a
receipt for exactly those bytes is stored beside it; every retry sends the same bytes with the
same ``Idempotency-Key`` (their sha256), so the aggregator answers a repeat with the receipt it
already issued; and a round that holds a receipt is never sent again.

Endpoint contract (the aggregator of issue 5 implements it): ``POST {base_url}/v1/rounds/{round_id}/updates``
with ``Content-Type: application/octet-stream``, the ``ondevice.auth`` headers, ``X-Privtune-Update-Mac``
and ``Idempotency-Key``. 200/201 → ``UpdateReceipt`` JSON; 408, 429 and 5xx → retried with
exponential backoff and full jitter (``Retry-After`` in seconds honoured, capped); other 4xx →
``ErrorBody`` JSON, not retried.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ondevice.auth import signed_headers, validate_device_id
from ondevice.durable import atomic_write_bytes
from ondevice.protocol import ErrorBody, ProtocolError, UpdateReceipt, canonical_json, sha256_hex, update_mac

logger = logging.getLogger(__name__)

UPDATE_MAC_HEADER = "X-Privtune-Update-Mac"
IDEMPOTENCY_HEADER = "Idempotency-Key"
CONTENT_TYPE = "application/octet-stream"
MAX_RESPONSE_BYTES = 64 * 1024
"""Responses are small JSON documents; anything longer is refused unread."""
SNIPPET_CHARS = 200

_RETRYABLE_STATUS = frozenset({408, 429})
_RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)
_BODY_RE = re.compile(r"^round-(0|[1-9][0-9]*)\.update$")
_DELAY_SECONDS_RE = re.compile(r"^\s*([0-9]{1,9})\s*$")


class UploadError(Exception):
    """An upload failed; ``status`` is the HTTP status when a response arrived."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message if status is None else f"HTTP {status}: {message}")
        self.status = status


class UploadRejected(UploadError):
    """The aggregator refused the update (4xx with a reason code); retrying the same bytes won't help."""

    def __init__(self, error: ErrorBody, status: int) -> None:
        super().__init__(f"update rejected ({error.reason.value}): {error.message}", status)
        self.error = error


class UploadUnavailable(UploadError):
    """The aggregator could not be reached or kept failing; the update stays pending."""


class OutboxConflict(UploadError):
    """Different bytes for a round that already has an update (a device makes one per round)."""


def _check_round(round_id: int) -> None:
    if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 0:
        raise ValueError(f"round_id must be an int >= 0, found {round_id!r}")


class Outbox:
    """Encoded updates waiting for (or holding) their receipt, one file per round in ``directory``.

    Layout: ``round-{id}.update`` (the exact bytes to send), ``round-{id}.receipt.json`` once
    delivered, ``round-{id}.rejected.json`` (the ``ErrorBody``) after a 4xx. Every file is
    written atomically, so a device killed at any moment never leaves a torn update. One process
    owns a directory: leftover temp files of a killed writer are removed on construction.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".round-*.tmp"):
            leftover.unlink(missing_ok=True)

    def _path(self, round_id: int, suffix: str) -> Path:
        _check_round(round_id)
        return self.directory / f"round-{round_id}.{suffix}"

    def put(self, round_id: int, body: bytes) -> Path:
        """Store ``body`` for ``round_id``; the same bytes again is a no-op, different bytes → ``OutboxConflict``."""
        if not isinstance(body, bytes | bytearray) or not body:
            raise ValueError(f"body must be non-empty bytes, found {body!r:.60}")
        path = self._path(round_id, "update")
        existing = self.get(round_id)
        if existing is not None:
            if existing == body:
                return path
            raise OutboxConflict(
                f"round {round_id} already holds an update (sha256 {sha256_hex(existing)}); "
                f"refusing different bytes (sha256 {sha256_hex(bytes(body))})"
            )
        atomic_write_bytes(path, bytes(body))
        return path

    def get(self, round_id: int) -> bytes | None:
        """The stored bytes for ``round_id``, or None."""
        try:
            return self._path(round_id, "update").read_bytes()
        except FileNotFoundError:
            return None

    def mark_delivered(self, round_id: int, receipt: UpdateReceipt) -> None:
        """Store the receipt for ``round_id`` (it must name this round and the stored bytes' sha256)."""
        body = self.get(round_id)
        if body is None:
            raise ValueError(f"round {round_id} has no update in the outbox {self.directory}")
        if receipt.round_id != round_id or receipt.update_sha256 != sha256_hex(body):
            raise ValueError(
                f"receipt for round {receipt.round_id} sha256 {receipt.update_sha256} does not match "
                f"round {round_id} sha256 {sha256_hex(body)}"
            )
        existing = self.receipt(round_id)
        if existing is not None:
            if existing == receipt:
                return
            raise OutboxConflict(f"round {round_id} already holds a different receipt: {existing}")
        atomic_write_bytes(self._path(round_id, "receipt.json"), canonical_json(receipt.to_dict()).encode("utf-8"))
        self._path(round_id, "rejected.json").unlink(missing_ok=True)

    def receipt(self, round_id: int) -> UpdateReceipt | None:
        """The stored receipt for ``round_id``, or None while undelivered."""
        try:
            text = self._path(round_id, "receipt.json").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return UpdateReceipt.from_dict(json.loads(text))

    def mark_rejected(self, round_id: int, error: ErrorBody) -> None:
        """Record the aggregator's refusal; the bytes stay, the round leaves ``pending()``."""
        if self.get(round_id) is None:
            raise ValueError(f"round {round_id} has no update in the outbox {self.directory}")
        atomic_write_bytes(self._path(round_id, "rejected.json"), canonical_json(error.to_dict()).encode("utf-8"))

    def rejection(self, round_id: int) -> ErrorBody | None:
        """The stored refusal for ``round_id``, or None."""
        try:
            text = self._path(round_id, "rejected.json").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return ErrorBody.from_dict(json.loads(text))

    def pending(self) -> list[int]:
        """Rounds with an update that is neither delivered nor rejected, ascending."""
        rounds = []
        for path in self.directory.iterdir():
            match = _BODY_RE.match(path.name)
            if match is None:
                continue
            round_id = int(match.group(1))
            if self.receipt(round_id) is None and self.rejection(round_id) is None:
                rounds.append(round_id)
        return sorted(rounds)


# --------------------------------------------------------------------------- client


def _snippet(content: bytes) -> str:
    text = content[: SNIPPET_CHARS * 4].decode("utf-8", errors="replace")
    return text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "")


def _retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` as delay-seconds; None if absent or an HTTP-date (then backoff applies)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    match = _DELAY_SECONDS_RE.match(value)
    return float(match.group(1)) if match else None


class UploadClient:
    """Delivers the outbox's updates to the aggregator with retries, backoff and an idempotency key.

    ``sleep`` and ``rng`` (jitter source, default ``random.SystemRandom()``) are injectable so
    tests neither wait nor depend on chance. Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        base_url: str,
        device_id: str,
        secret: bytes,
        outbox: Outbox,
        *,
        timeout_s: float = 10,
        max_attempts: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL with a host, found {base_url!r}")
        if url.query or url.fragment:
            raise ValueError(f"base_url must not carry a query or fragment, found {base_url!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, found {timeout_s!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, found {max_attempts!r}")
        if not backoff_base_s >= 0:
            raise ValueError(f"backoff_base_s must be >= 0, found {backoff_base_s!r}")
        if not backoff_max_s >= backoff_base_s:
            raise ValueError(f"backoff_max_s must be >= backoff_base_s ({backoff_base_s}), found {backoff_max_s!r}")
        update_mac(b"", secret)  # validates the secret's length now, not at the first upload
        validate_device_id(device_id)
        self.base_url = str(url).rstrip("/")
        self.device_id = device_id
        self._secret = bytes(secret)
        self.outbox = outbox
        self.max_attempts = max_attempts
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self._sleep = sleep
        self._rng = rng if rng is not None else random.SystemRandom()
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s), transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> UploadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backoff_delay(self, attempt: int) -> float:
        """Full-jitter delay after failed attempt ``attempt`` (1-based): U(0, min(max, base·2^(attempt-1)))."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempt - 1, 64))
        return self._rng.uniform(0.0, ceiling)

    def deliver(self, round_id: int) -> UpdateReceipt:
        """Send the outbox's update for ``round_id`` until a receipt for exactly those bytes arrives.

        An already-delivered round returns its stored receipt without any network call. Raises
        ``UploadRejected`` (4xx; recorded in the outbox), ``UploadUnavailable`` (attempts used up;
        still pending, a later call resumes) or ``UploadError`` (a response that breaks the contract;
        still pending). A round recorded as rejected is sent again when ``deliver`` is called for it
        (an explicit retry); ``pending()`` leaves it out so background loops don't.
        """
        stored = self.outbox.receipt(round_id)
        if stored is not None:
            logger.info("round %d already delivered; stored receipt returned", round_id)
            return stored
        body = self.outbox.get(round_id)
        if body is None:
            raise ValueError(f"round {round_id} has no update in the outbox {self.outbox.directory}")
        url = httpx.URL(f"{self.base_url}/v1/rounds/{round_id}/updates")
        path = url.raw_path.decode("ascii")
        fixed_headers = {
            "Content-Type": CONTENT_TYPE,
            UPDATE_MAC_HEADER: update_mac(body, self._secret),
            IDEMPOTENCY_HEADER: sha256_hex(body),
        }
        last_problem = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            headers = {**fixed_headers, **signed_headers(self.device_id, self._secret, "POST", path, body)}
            outcome, retry_after = self._attempt(round_id, body, url, headers, attempt)
            if isinstance(outcome, UpdateReceipt):
                return outcome
            last_problem = outcome
            if attempt == self.max_attempts:
                break
            delay = self.backoff_delay(attempt) if retry_after is None else min(retry_after, self.backoff_max_s)
            logger.info("round %d: retrying in %.3f s", round_id, delay, extra={"round_id": round_id, "delay_s": delay})
            self._sleep(delay)
        raise UploadUnavailable(
            f"round {round_id} not delivered after {self.max_attempts} attempt(s) to {url}; last: {last_problem}"
        )

    def _log(self, round_id: int, attempt: int, outcome: str, level: int = logging.INFO) -> None:
        logger.log(
            level,
            "upload round %d attempt %d/%d: %s",
            round_id,
            attempt,
            self.max_attempts,
            outcome,
            extra={"round_id": round_id, "attempt": attempt, "outcome": outcome},
        )

    def _attempt(
        self, round_id: int, body: bytes, url: httpx.URL, headers: dict[str, str], attempt: int
    ) -> tuple[UpdateReceipt | str, float | None]:
        """One POST: a receipt, or (for a retryable failure) its description and any Retry-After."""
        try:
            with self._http.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                if status in _RETRYABLE_STATUS or 500 <= status <= 599:
                    outcome = f"HTTP {status}"
                    self._log(round_id, attempt, outcome, logging.WARNING)
                    return outcome, _retry_after_s(response)
                content = self._read_capped(response)
            receipt = self._receipt_or_raise(round_id, body, status, content)
        except _RETRYABLE_ERRORS as exc:
            outcome = f"{type(exc).__name__}: {exc}"
            self._log(round_id, attempt, outcome, logging.WARNING)
            return outcome, None
        except UploadError as exc:
            self._log(round_id, attempt, f"failed, not retried: {exc}", logging.ERROR)
            raise
        self.outbox.mark_delivered(round_id, receipt)
        self._log(round_id, attempt, f"HTTP {status} delivered")
        return receipt, None

    def _receipt_or_raise(self, round_id: int, body: bytes, status: int, content: bytes) -> UpdateReceipt:
        """The receipt of a 200/201; a 4xx is recorded in the outbox and raised as ``UploadRejected``."""
        if status in (200, 201):
            return self._parse_receipt(round_id, body, status, content)
        if 400 <= status <= 499:
            error = self._parse_error(status, content)
            self.outbox.mark_rejected(round_id, error)
            raise UploadRejected(error, status)
        raise UploadError(f"unexpected response to the upload of round {round_id}: {_snippet(content)!r}", status)

    @staticmethod
    def _read_capped(response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise UploadError(f"response is over {MAX_RESPONSE_BYTES} bytes", response.status_code)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse_json(status: int, content: bytes, expected: str) -> Any:
        try:
            return json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise UploadError(f"expected {expected} JSON, got: {_snippet(content)!r}", status) from exc

    def _parse_error(self, status: int, content: bytes) -> ErrorBody:
        data = self._parse_json(status, content, "ErrorBody")
        try:
            return ErrorBody.from_dict(data)
        except (ProtocolError, TypeError) as exc:
            raise UploadError(f"not a valid ErrorBody ({exc}): {_snippet(content)!r}", status) from exc

    def _parse_receipt(self, round_id: int, body: bytes, status: int, content: bytes) -> UpdateReceipt:
        data = self._parse_json(status, content, "UpdateReceipt")
        try:
            receipt = UpdateReceipt.from_dict(data)
        except (ProtocolError, TypeError) as exc:
            raise UploadError(f"not a valid UpdateReceipt ({exc}): {_snippet(content)!r}", status) from exc
        expected = (round_id, self.device_id, sha256_hex(body))
        found = (receipt.round_id, receipt.device_id, receipt.update_sha256)
        if found != expected:
            raise UploadError(
                f"receipt names (round, device, sha256) {found}, expected {expected}; not marked delivered", status
            )
        return receipt
