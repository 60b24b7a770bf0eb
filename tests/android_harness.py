"""Shared by the Android tests (``tests/e2e/test_android_core.py``, ``tests/e2e/test_android_apk.py``):
subprocess helpers and the toolchain fixture (JDK, Maven, the Debian Maven plugins and the Android
build tools from ``scripts/android_toolchain.sh``, installed if missing)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLCHAIN = REPO_ROOT / "scripts" / "android_toolchain.sh"
APT_UNREACHABLE = 3  # scripts/android_toolchain.sh's exit status when apt cannot be reached


def run(
    args: list[str], *, cwd: Path = REPO_ROOT, timeout: float = 600, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"


def toolchain_fixture(skip_reason: str) -> Any:
    """A module-scoped ``toolchain`` fixture: runs ``scripts/android_toolchain.sh``; if apt is unreachable
    and the toolchain is missing, skips with ``skip_reason`` (and the script's output); fails otherwise.

    Use as ``toolchain = toolchain_fixture("... NOT tested")`` in the test module."""

    @pytest.fixture(scope="module")
    def toolchain() -> None:
        proc = run(["bash", str(TOOLCHAIN)], timeout=1200)
        if proc.returncode == APT_UNREACHABLE:
            pytest.skip(f"{skip_reason}:\n{proc.stdout}{proc.stderr}")
        assert proc.returncode == 0, f"scripts/android_toolchain.sh failed: {explain(proc)}"

    return toolchain
