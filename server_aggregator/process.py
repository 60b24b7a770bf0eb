"""Run the aggregator (or any HTTP service) as a child process: start it, wait until it answers, stop it.

Shared by ``privtune demo``, the crash tests and the benchmarks, so each starts ``privtune serve``
the same way: output to a log file, readiness = ``GET url + ready_path`` answering 200, a start
that fails raises with the end of the log.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.is_file() else "(no log)"


def stop_process(process: subprocess.Popen[bytes], *, kill: bool = False, grace_s: float = 30) -> None:
    """SIGTERM (a clean shutdown) or SIGKILL (a crash), then reap; SIGKILL after ``grace_s`` if needed."""
    if process.poll() is None:
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def spawn_until_ready(
    args: Sequence[str],
    *,
    log: Path,
    url: str,
    ready_path: str = "/v1/health",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 120,
) -> subprocess.Popen[bytes]:
    """Start ``args`` (stdout and stderr appended to ``log``); return once ``url + ready_path`` answers 200.

    Raises ``RuntimeError`` with the end of the log if the process exits or does not answer in time
    (the process is then killed)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        process = subprocess.Popen(
            list(args), stdout=sink, stderr=subprocess.STDOUT, env=None if env is None else dict(env), cwd=cwd
        )
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(args[:4])} exited with code {process.returncode}; its log ends:\n"
                               f"{_log_tail(log)}")  # fmt: skip
        try:
            if httpx.get(url + ready_path, timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_process(process, kill=True)
            raise RuntimeError(f"no answer from {url}{ready_path} within {timeout_s:g} s; log {log} ends:\n"
                               f"{_log_tail(log)}")  # fmt: skip
        time.sleep(0.1)
