"""Crash-safe per-round checkpoints of a device's local training.

A checkpoint is a directory (``<round dir>/ckpt``) holding ``progress.json`` plus the files
the training backend writes. It is replaced atomically: the new one is written to
``ckpt.tmp`` and fsynced, the old one renamed to ``ckpt.old``, the new one renamed into place,
the old one removed. A device killed at any instant finds either ``ckpt`` or (between the two
renames) ``ckpt.old``, never a torn mix.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ondevice.durable import fsync_dir

CURRENT = "ckpt"
PREVIOUS = "ckpt.old"
STAGING = "ckpt.tmp"
PROGRESS = "progress.json"


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read; the message names the file."""


def write_checkpoint(round_dir: Path, progress: dict[str, Any], write_files: Callable[[Path], None]) -> None:
    """Write ``progress`` and the backend's files (``write_files(staging_dir)``), then swap atomically."""
    round_dir.mkdir(parents=True, exist_ok=True)
    staging = round_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    write_files(staging)
    (staging / PROGRESS).write_text(json.dumps(progress, sort_keys=True, allow_nan=False))
    for child in staging.iterdir():
        with child.open("rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(staging)
    current, previous = round_dir / CURRENT, round_dir / PREVIOUS
    shutil.rmtree(previous, ignore_errors=True)
    if current.exists():
        current.rename(previous)
    staging.rename(current)
    fsync_dir(round_dir)
    shutil.rmtree(previous, ignore_errors=True)


def latest_checkpoint(round_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """(checkpoint dir, progress) of the newest complete checkpoint, or None if there is none."""
    for name in (CURRENT, PREVIOUS):
        folder = round_dir / name
        progress_file = folder / PROGRESS
        if progress_file.is_file():
            try:
                return folder, json.loads(progress_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{progress_file}: unreadable ({exc}); delete {round_dir} to restart") from exc
    return None
