"""Crash-safe file writes shared by the outbox, the ledger and the checkpoints."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves either the old file or the complete new one:
    unique temp file → fsync → rename over → fsync of the directory (makes the rename durable)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def new_staging_dir(target: Path) -> Path:
    """A fresh, empty hidden folder beside ``target`` to build it in (see :func:`replace_dir`).

    Unique per call, so concurrent builders never share one; the caller removes it on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()
    return staging


def replace_dir(staging: Path, target: Path) -> None:
    """Move the finished folder ``staging`` to ``target``, replacing any old one, durably.

    A reader sees the old folder or the new one: the old one is renamed aside first and
    removed only after the new one is in place."""
    fsync_dir(staging)
    retired: Path | None = None
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.replace(target, retired)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
