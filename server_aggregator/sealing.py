"""Device secrets at rest: sealed under a server key kept outside the database.

A stored secret is ``version ‖ salt ‖ (secret ⊕ pad) ‖ tag`` where ``pad`` and ``tag`` are
HMAC-SHA256 outputs keyed by the server key over the salt and the device id. Reading the
database alone (a copied ``state.db``, a backup) reveals no secret; a blob moved to another
device id, or opened with another key, fails its tag. The key itself lives in a 0600 file next
to the database (or ``PRIVTUNE_DEVICE_KEY``); ``key_check`` lets start-up refuse a wrong key
with a clear message instead of failing every device's signature.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_ENV = "PRIVTUNE_DEVICE_KEY"
KEY_BYTES = 32
SALT_BYTES = 16
TAG_BYTES = 16
SEAL_VERSION = b"\x01"
_PAD_LABEL = b"privtune/device-secret/pad/v1"
_TAG_LABEL = b"privtune/device-secret/tag/v1"
_CHECK_LABEL = b"privtune/device-key/check/v1"


class SealError(ValueError):
    """A sealed secret that does not open under this key (damaged, moved, or another key)."""


def _prf(key: bytes, label: bytes, *parts: bytes) -> bytes:
    mac = hmac.new(key, label, hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(4, "big"))
        mac.update(part)
    return mac.digest()


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"the device key must be {KEY_BYTES} bytes, found {type(key).__name__} of length {len(key)}")


def seal(key: bytes, device_id: str, secret: bytes) -> bytes:
    """The stored form of ``secret`` (32 bytes) for ``device_id``."""
    _check_key(key)
    if len(secret) != 32:
        raise ValueError(f"a device secret is 32 bytes, found {len(secret)}")
    salt = secrets.token_bytes(SALT_BYTES)
    ident = device_id.encode()
    pad = _prf(key, _PAD_LABEL, salt, ident)
    body = bytes(a ^ b for a, b in zip(secret, pad, strict=True))
    tag = _prf(key, _TAG_LABEL, salt, ident, body)[:TAG_BYTES]
    return SEAL_VERSION + salt + body + tag


def is_sealed(blob: bytes) -> bool:
    return len(blob) == 1 + SALT_BYTES + 32 + TAG_BYTES and blob[:1] == SEAL_VERSION


def unseal(key: bytes, device_id: str, blob: bytes) -> bytes:
    """The secret sealed in ``blob``; ``SealError`` if it is not a blob sealed by ``key`` for ``device_id``."""
    _check_key(key)
    if not is_sealed(blob):
        raise SealError(f"device {device_id!r}: the stored secret is not sealed (length {len(blob)})")
    salt, body, tag = blob[1 : 1 + SALT_BYTES], blob[1 + SALT_BYTES : -TAG_BYTES], blob[-TAG_BYTES:]
    ident = device_id.encode()
    if not hmac.compare_digest(tag, _prf(key, _TAG_LABEL, salt, ident, body)[:TAG_BYTES]):
        raise SealError(f"device {device_id!r}: the stored secret does not open under this device key")
    pad = _prf(key, _PAD_LABEL, salt, ident)
    return bytes(a ^ b for a, b in zip(body, pad, strict=True))


def key_check(key: bytes) -> str:
    """A public fingerprint of the key (stored in the database to detect a wrong key at start-up)."""
    _check_key(key)
    return _prf(key, _CHECK_LABEL).hex()


def load_or_create_key(path: Path) -> tuple[bytes, bool]:
    """The key in ``PRIVTUNE_DEVICE_KEY`` (hex), else in ``path`` (created 0600 if absent); (key, created)."""
    env = os.environ.get(KEY_ENV)
    if env:
        try:
            key = bytes.fromhex(env.strip())
        except ValueError:
            raise ValueError(f"{KEY_ENV} must be {KEY_BYTES} bytes as hex") from None
        _check_key(key)
        return key, False
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise ValueError(f"{path}: the device key file is readable by others; run `chmod 600 {path}`")
        try:
            key = bytes.fromhex(path.read_text().strip())
        except ValueError:
            raise ValueError(f"{path}: not a hex key; restore it from your backup") from None
        _check_key(key)
        return key, False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    return key, True
