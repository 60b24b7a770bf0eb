"""Emulated-fleet throughput: device-rounds per minute vs worker processes, and the server's CPU
share during a round; plus the demo's wall time per stage when a demo report exists.

Every case runs one round of DEVICES phones (all selected, no faults, local DP-SGD as below)
against its own fresh ``privtune serve`` process (SQLite), so the cases differ only in the
number of worker processes. The baseline is 1 worker. Server CPU is read from
``/proc/<pid>/stat`` (utime + stime) before and after the round.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_ondevice import bench_bundle
from bench.bench_server import bench_classifier
from bench.harness import Timing, build_result, write_result
from ondevice.protocol import DpConfig
from privtune.demo import DemoConfig, start_server, stop_server
from privtune.fleet.conditions import FleetConditions
from privtune.fleet.runner import FleetConfig, run_fleet

DEVICES = int(os.environ.get("PRIVTUNE_BENCH_FLEET_DEVICES", "12"))
WORKERS = (1, 2, 4)
EXAMPLES_PER_DEVICE = 40
LOCAL_DP = DpConfig(
    clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.5, local_steps=4, learning_rate=0.1, local_epsilon_budget=30.0
)
NO_FAULTS = FleetConditions(availability=1.0, dropout=0.0, straggler=0.0, network_fault=0.0)
DEMO_REPORT_ENV = "PRIVTUNE_BENCH_DEMO_REPORT"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _tiny_data(target: Path, examples: int) -> Path:
    from ondevice.data import tweeteval_task_dir

    source = tweeteval_task_dir("offensive")
    target.mkdir(parents=True)
    for split, count in (("train", examples), ("test", 10)):
        for kind in ("text", "labels"):
            lines = (source / f"{split}_{kind}.txt").read_text().splitlines()[:count]
            (target / f"{split}_{kind}.txt").write_text("".join(line + "\n" for line in lines))
    labels = json.loads((bench_bundle() / "manifest.json").read_text())["labels"]
    (target / "mapping.txt").write_text("".join(f"{i}\t{name}\n" for i, name in enumerate(labels)))
    return target


def one_round(bundle: Path, classifier: Path, data: Path, scratch: Path, workers: int) -> dict[str, Any]:
    """One round of DEVICES phones with ``workers`` processes against a fresh server."""
    config = DemoConfig(
        out_dir=scratch, data=str(data), population=DEVICES, clients_per_round=DEVICES, rounds=1,
        noise_multiplier=1.0, user_epsilon_budget=100.0, local_dp=LOCAL_DP, classifier=classifier, bundle=bundle,
    )  # fmt: skip
    server = start_server(config, classifier, bundle)
    try:
        fleet = FleetConfig(
            server_url=server.url, admin_token=server.admin_token, bundle_dir=bundle, data=str(data),
            state_root=scratch / "fleet", devices=DEVICES, rounds=1, workers=workers, conditions=NO_FAULTS,
            seed_fraction=0.1,
        )  # fmt: skip
        cpu_before, start = _cpu_seconds(server.process.pid), time.perf_counter()
        summary = run_fleet(fleet)[0]
        wall = time.perf_counter() - start
        server_cpu = _cpu_seconds(server.process.pid) - cpu_before
    finally:
        stop_server(server.process)
    delivered = summary["outcomes"].get("delivered", 0)
    if delivered != DEVICES:
        raise RuntimeError(f"{workers} worker(s): only {delivered} of {DEVICES} devices delivered: {summary}")
    return {
        "wall_s": wall,
        "device_rounds_per_minute": 60.0 * DEVICES / wall,
        "server_cpu_s": server_cpu,
        "server_cpu_share_of_machine": server_cpu / (wall * (os.cpu_count() or 1)),
        "server_cpu_ms_per_device_round": 1000 * server_cpu / DEVICES,
        "merged_updates": summary["merged_updates"],
    }


def main() -> None:
    bundle = bench_bundle()
    runs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="privtune-bench-fleet-") as tmp:
        scratch = Path(tmp)
        classifier = bench_classifier(bundle, scratch)
        data = _tiny_data(scratch / "data", DEVICES * EXAMPLES_PER_DEVICE * 2)
        for workers in WORKERS:
            work = scratch / f"w{workers}"
            runs[workers] = one_round(bundle, classifier, data, work, workers)
            shutil.rmtree(work, ignore_errors=True)
            print(f"   {workers} worker(s): {runs[workers]}", flush=True)
    demo_report = Path(os.environ.get(DEMO_REPORT_ENV, "build/demo/report.json"))
    demo = json.loads(demo_report.read_text()) if demo_report.is_file() else None
    params = {
        "devices": DEVICES,
        "examples_per_device_approx": EXAMPLES_PER_DEVICE,
        "local_dp": LOCAL_DP.to_dict(),
        "runtime": "ort",
        "cores": os.cpu_count(),
        "runs": {str(w): r for w, r in runs.items()},
        "demo_report": str(demo_report) if demo else f"no report at {demo_report} (run `make demo`)",
        "demo_wall_seconds_per_stage": demo["wall_seconds"] if demo else None,
        "demo_settings": demo["settings"] if demo else None,
    }
    timings = [Timing(f"workers_{w}", (r["wall_s"],)) for w, r in runs.items()]
    path = write_result(build_result("fleet_throughput", timings, baseline="workers_1", threads=1, params=params))
    print(f"   wrote {path}", flush=True)
