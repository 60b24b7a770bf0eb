"""Benchmark convention: every benchmark measures its candidates *and* its baseline in the
same process, then writes one JSON file with machine info, thread count, per-case medians
and each case's ratio to the baseline. Never a timed assert: numbers are for reading.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples (seconds) of one benchmark case."""

    case: str
    samples_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples_s:
            raise ValueError(f"case {self.case!r} has no samples")

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def min_s(self) -> float:
        return min(self.samples_s)


def time_fn(case: str, fn: Callable[[], object], *, repeats: int = 7, warmup: int = 2) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed with ``perf_counter``."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, found {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing(case, tuple(samples))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Facts that make a timing comparable: CPU, core count, Python, BLAS-related env."""
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS") if k in os.environ},
    }


def build_result(
    name: str, timings: Sequence[Timing], *, baseline: str, threads: int, params: dict[str, Any]
) -> dict[str, Any]:
    """The JSON document for one benchmark run; ratios are case median / baseline median."""
    by_case = {t.case: t for t in timings}
    if len(by_case) != len(timings):
        raise ValueError(f"benchmark {name!r} repeats a case name")
    if baseline not in by_case:
        raise ValueError(f"baseline {baseline!r} is not one of the cases {sorted(by_case)}")
    base = by_case[baseline].median_s
    return {
        "benchmark": name,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "threads": threads,
        "params": params,
        "baseline": baseline,
        "cases": {
            t.case: {
                "median_s": t.median_s,
                "min_s": t.min_s,
                "samples_s": list(t.samples_s),
                "ratio_to_baseline": t.median_s / base,
            }
            for t in timings
        },
    }


def write_result(result: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    """Write ``<out_dir>/<benchmark>-<threads>t.json`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result['benchmark']}-{result['threads']}t.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def bench_round_config(manifest_hash: str, dp: Any, *, update_dtype: str = "float32", hours: float = 1.0) -> Any:
    """Round 1 on adapter v0 with S = 1 for benchmark devices (``dp`` is an ``ondevice.protocol.DpConfig``)."""
    from ondevice.protocol import RoundConfig

    return RoundConfig(
        round_id=1,
        manifest_hash=manifest_hash,
        global_adapter_version=0,
        dp=dp,
        update_clip_norm=1.0,
        deadline_unix=time.time() + hours * 3600,
        update_dtype=update_dtype,
    )
