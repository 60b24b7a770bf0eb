"""Request authentication shared by the device (signs) and the aggregator (verifies).

Every device request carries four headers: ``X-Privtune-Device`` (the device id, which selects
the secret on the server), ``X-Privtune-Timestamp`` (integer Unix seconds), ``X-Privtune-Nonce``
(lowercase hex, 32-128 characters, from ``secrets``) and ``X-Privtune-Signature``: the
HMAC-SHA256 (lowercase hex) under the device's secret of the canonical string::

    PRIVTUNE-HMAC-SHA256\\n{METHOD}\\n{path}\\n{sha256_hex(body)}\\n{timestamp}\\n{nonce}

The device id itself is not in the string: it only picks the secret, and a changed id picks a
different secret, so the signature no longer verifies.

Path policy: the path is signed exactly as it appears on the request line (percent-encoding
kept, no dot-segment or slash normalisation, no prefix stripping), and it must not carry a query
string or a fragment: ``sign_request`` raises ``ValueError`` and ``verify_request`` rejects with
``malformed``. The upload API has no query parameters, so refusing them removes every ambiguity
about how a query would be ordered or encoded. A server must pass the raw request path (for
ASGI, ``scope["raw_path"]``), not a decoded one; a proxy that rewrites paths breaks signatures.

Replay: a valid request is accepted only within ``max_skew_s`` of the server clock, and, when a
``NonceCache`` is given, only once per (device, nonce). A nonce is recorded only after the
signature verified, so unauthenticated traffic cannot fill the cache, and it can be forgotten
once its timestamp is stale (``InMemoryNonceCache`` purges by that rule). All secret-dependent
comparisons use ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ondevice.protocol import RejectionReason, sha256_hex

SCHEME = "PRIVTUNE-HMAC-SHA256"
HEADER_DEVICE = "X-Privtune-Device"
HEADER_TIMESTAMP = "X-Privtune-Timestamp"
HEADER_NONCE = "X-Privtune-Nonce"
HEADER_SIGNATURE = "X-Privtune-Signature"
AUTH_HEADERS = (HEADER_DEVICE, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

MIN_SECRET_BYTES = 16
NONCE_BYTES = 16
"""``secrets.token_hex(16)``: 128 random bits, 32 hex characters."""
DEFAULT_MAX_SKEW_S = 300

_METHOD_RE = re.compile(r"^[A-Z]{1,16}$")
# RFC 3986 path characters (pchar and "/"); "?", "#", spaces and control characters are excluded.
_PATH_RE = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$")
_NONCE_RE = re.compile(r"^[0-9a-f]{32,128}$")
_TIMESTAMP_RE = re.compile(r"^(0|[1-9][0-9]{0,11})$")  # canonical decimal, no sign, no leading zeros
_SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_PATH_CHARS = 2048
MAX_TIMESTAMP = 10**12 - 1  # what _TIMESTAMP_RE admits: 12 digits
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")  # same rule as protocol device ids


def _shown(value: object) -> str:
    """``repr`` of a request value for an error message, cut to 80 characters (values can be long)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


class AuthError(Exception):
    """A request failed authentication; ``reason`` is the code the server returns."""

    def __init__(self, reason: RejectionReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class HeaderItems(Protocol):
    """Anything with ``items()`` yielding header (name, value) pairs: a dict, ``httpx.Headers``,
    Starlette's ``Headers`` or ``http.server``'s message (duplicates are seen and refused)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True)
class AuthHeaders:
    """The parsed, well-formed authentication headers of one request."""

    device_id: str
    timestamp: int
    nonce: str
    signature: str


class NonceCache(Protocol):
    """Server-side replay store; the aggregator may back it with its database."""

    def remember(self, device_id: str, nonce: str, expires_at: float, *, now: float) -> bool:
        """Record (device_id, nonce) until ``expires_at``; False if it is already recorded."""
        ...


class InMemoryNonceCache:
    """Thread-safe in-process ``NonceCache``; entries expire once their timestamp is stale.

    Memory is bounded by the authenticated request rate times the accepted time window.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[tuple[str, str], float] = {}
        self._next_purge = float("-inf")

    def remember(self, device_id: str, nonce: str, expires_at: float, *, now: float) -> bool:
        with self._lock:
            if now >= self._next_purge:
                self._expiry = {key: exp for key, exp in self._expiry.items() if exp >= now}
                self._next_purge = now + 1.0
            key = (device_id, nonce)
            known = self._expiry.get(key)
            if known is not None and known >= now:
                return False
            self._expiry[key] = expires_at
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes | bytearray):
        raise TypeError(f"secret must be bytes, found {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes, found {len(secret)}")


def _signing_problem(method: str, path: str, timestamp: object, nonce: str) -> str | None:
    """Why these request fields cannot be signed or verified, or None when they are well-formed."""
    if not isinstance(method, str) or not _METHOD_RE.fullmatch(method):
        return f"method must be an upper-case HTTP token, found {_shown(method)}"
    if not isinstance(path, str) or len(path) > MAX_PATH_CHARS or not _PATH_RE.fullmatch(path):
        return (
            f"path must be an absolute path of at most {MAX_PATH_CHARS} characters without query string "
            f"or fragment, found {_shown(path)}"
        )
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= MAX_TIMESTAMP:
        return f"timestamp must be an int of Unix seconds in 0..{MAX_TIMESTAMP}, found {_shown(timestamp)}"
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        return f"nonce must be 32-128 lowercase hex characters, found {_shown(nonce)}"
    return None


def canonical_request(
    method: str, path: str, body: bytes, timestamp: int, nonce: str, *, body_sha256: str | None = None
) -> str:
    """The string that is signed; ``ValueError`` on a field that has no canonical form.

    ``body_sha256`` is the body's digest when the caller already computed it (the server's hot path)."""
    problem = _signing_problem(method, path, timestamp, nonce)
    if problem is not None:
        raise ValueError(problem)
    digest = sha256_hex(bytes(body)) if body_sha256 is None else body_sha256
    return f"{SCHEME}\n{method}\n{path}\n{digest}\n{timestamp}\n{nonce}"


def sign_request(
    secret: bytes, method: str, path: str, body: bytes, timestamp: int, nonce: str, *, body_sha256: str | None = None
) -> str:
    """HMAC-SHA256 (lowercase hex) of ``canonical_request(...)`` under ``secret``."""
    _check_secret(secret)
    message = canonical_request(method, path, body, timestamp, nonce, body_sha256=body_sha256).encode("ascii")
    return hmac.new(bytes(secret), message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """A fresh request nonce from the OS CSPRNG (``secrets``)."""
    return secrets.token_hex(NONCE_BYTES)


def validate_device_id(device_id: str) -> str:
    """``device_id`` if it is a valid device id (same rule as ``ondevice.protocol``), else ``ValueError``."""
    if not isinstance(device_id, str) or not _DEVICE_RE.fullmatch(device_id):
        raise ValueError(f"device_id must match {_DEVICE_RE.pattern}, found {device_id!r}")
    return device_id


def signed_headers(
    device_id: str,
    secret: bytes,
    method: str,
    path: str,
    body: bytes,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four authentication headers for one request (fresh nonce and timestamp by default)."""
    validate_device_id(device_id)
    timestamp = int(time.time() if now is None else now)
    nonce = new_nonce() if nonce is None else nonce
    return {
        HEADER_DEVICE: device_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign_request(secret, method, path, body, timestamp, nonce),
    }


def parse_auth_headers(headers: HeaderItems) -> AuthHeaders:
    """Read the four headers (case-insensitive); ``AuthError(malformed)`` if one is missing,
    repeated or not in its canonical form (each is ASCII with a fixed pattern and length, so a
    non-ASCII or over-long value is refused here, before any comparison). The server calls this
    first to learn the device id."""
    wanted = {name.lower(): name for name in AUTH_HEADERS}
    found: dict[str, str] = {}
    for raw_name, value in headers.items():
        name = raw_name.lower() if isinstance(raw_name, str) else ""
        if name in wanted:
            if name in found:
                raise AuthError(RejectionReason.MALFORMED, f"header {wanted[name]} appears more than once")
            if not isinstance(value, str):
                raise AuthError(RejectionReason.MALFORMED, f"header {wanted[name]} must be text")
            found[name] = value
    missing = [wanted[name] for name in wanted if name not in found]
    if missing:
        raise AuthError(RejectionReason.MALFORMED, f"missing header(s) {missing}")
    device_id = found[HEADER_DEVICE.lower()]
    timestamp = found[HEADER_TIMESTAMP.lower()]
    nonce = found[HEADER_NONCE.lower()]
    signature = found[HEADER_SIGNATURE.lower()]
    if not _DEVICE_RE.fullmatch(device_id):
        raise AuthError(
            RejectionReason.MALFORMED, f"{HEADER_DEVICE} is not a valid device id, found {_shown(device_id)}"
        )
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise AuthError(
            RejectionReason.MALFORMED, f"{HEADER_TIMESTAMP} must be integer Unix seconds, found {_shown(timestamp)}"
        )
    if not _NONCE_RE.fullmatch(nonce):
        raise AuthError(
            RejectionReason.MALFORMED, f"{HEADER_NONCE} must be 32-128 lowercase hex, found {_shown(nonce)}"
        )
    if not _SIGNATURE_RE.fullmatch(signature):
        raise AuthError(RejectionReason.MALFORMED, f"{HEADER_SIGNATURE} must be 64 lowercase hex characters")
    return AuthHeaders(device_id=device_id, timestamp=int(timestamp), nonce=nonce, signature=signature)


def verify_request(
    secret: bytes,
    method: str,
    path: str,
    body: bytes,
    headers: HeaderItems,
    *,
    now: float,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
    nonces: NonceCache | None = None,
    body_sha256: str | None = None,
) -> AuthHeaders:
    """Check a request's headers against ``secret`` and return them parsed.

    Raises ``AuthError`` with reason ``malformed`` (headers, method or path without canonical
    form), ``stale_timestamp`` (more than ``max_skew_s`` from ``now`` either way),
    ``bad_signature`` or, with a ``nonces`` store, ``replayed_nonce``. A bad ``secret`` on the
    server's side is a configuration bug: ``ValueError``.
    """
    _check_secret(secret)
    if not max_skew_s > 0:
        raise ValueError(f"max_skew_s must be > 0, found {max_skew_s!r}")
    parsed = parse_auth_headers(headers)
    problem = _signing_problem(method, path, parsed.timestamp, parsed.nonce)
    if problem is not None:
        raise AuthError(RejectionReason.MALFORMED, problem)
    skew = now - parsed.timestamp
    if abs(skew) > max_skew_s:
        raise AuthError(
            RejectionReason.STALE_TIMESTAMP,
            f"timestamp {parsed.timestamp} is {skew:+.0f} s from the server clock (allowed ±{max_skew_s} s)",
        )
    expected = sign_request(secret, method, path, body, parsed.timestamp, parsed.nonce, body_sha256=body_sha256)
    if not hmac.compare_digest(expected, parsed.signature):
        raise AuthError(RejectionReason.BAD_SIGNATURE, "request signature does not verify")
    if nonces is not None and not nonces.remember(
        parsed.device_id, parsed.nonce, parsed.timestamp + max_skew_s, now=now
    ):
        raise AuthError(RejectionReason.REPLAYED_NONCE, f"nonce {parsed.nonce} was already used by this device")
    return parsed
