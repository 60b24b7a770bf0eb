"""Crash-safe folder replacement shared by export, publish and synth."""

from __future__ import annotations

from pathlib import Path

import pytest

from ondevice.durable import new_staging_dir, replace_dir


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_replace_dir_installs_a_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    staging = new_staging_dir(target)
    (staging / "a.txt").write_text("new")
    replace_dir(staging, target)
    assert (target / "a.txt").read_text() == "new"
    assert _hidden(tmp_path) == []


def test_replace_dir_swaps_out_the_old_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old-only.txt").write_text("old")
    staging = new_staging_dir(target)
    (staging / "a.txt").write_text("new")
    replace_dir(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # nothing of the old folder survives
    assert _hidden(tmp_path) == []  # the retired folder is removed


def test_staging_dirs_are_unique_and_hidden(tmp_path: Path) -> None:
    target = tmp_path / "out"
    first, second = new_staging_dir(target), new_staging_dir(target)
    assert first != second
    assert first.name.startswith(".out.partial-") and second.name.startswith(".out.partial-")
    assert first.is_dir() and not any(first.iterdir())


def test_replace_dir_with_missing_staging_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(FileNotFoundError):
        replace_dir(tmp_path / ".out.partial-gone", target)
    assert (target / "keep.txt").read_text() == "old"
