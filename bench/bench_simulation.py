"""Simulated client-updates per second (``privtune simulate``'s vectorized clients) vs the real-HTTP
emulated fleet's device-rounds per second: same machine, same model (the benchmark bundle's
classifier), same per-client local work (``bench_fleet``'s local DP-SGD: 4 steps at q = 0.5 over a
device's examples, noise 1.0, SGD).

Cases (seconds per client update; the baseline is the fleet with 2 worker processes, its best
setting in ``bench_fleet``):

* ``fleet_2_workers``: one round of ``DEVICES`` phones against a fresh ``privtune serve``;
* ``simulated_same_work``: one round of ``SIM_CLIENTS`` simulated clients with the fleet's mean
  shard size and the same local DP config, then the server's DpFixedClipping;
* ``simulated_default_work``: one round of ``privtune simulate``'s default deployment setting
  (10,000 users, cohort 500, 4 texts each, 1 local step at q = 0.5) — lighter per-client work,
  reported for what a population run costs, not as a like-for-like ratio.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_fleet import DEVICES, EXAMPLES_PER_DEVICE, LOCAL_DP, _tiny_data, one_round
from bench.bench_ondevice import bench_bundle
from bench.bench_server import bench_classifier
from bench.harness import Timing, build_result, write_result
from ondevice.protocol import DpConfig
from server_aggregator.simulation.backends import InProcessBackend
from server_aggregator.simulation.population import PopulationConfig
from server_aggregator.simulation.run import SimulationConfig, prepare, simulate

SIM_CLIENTS = int(os.environ.get("PRIVTUNE_BENCH_SIM_CLIENTS", "24"))
FLEET_SEED_FRACTION = 0.1  # bench_fleet's devices share 90 % of the tiny train split


def simulated_round(
    classifier: Path, data: Path, users: int, cohort: float, texts: int, local: DpConfig
) -> dict[str, Any]:
    """One simulated round; wall time covers the cohort's local steps and the server aggregation."""
    inputs = prepare(
        classifier, data, PopulationConfig(num_users=users, texts_per_user=texts, seed=0),
        seed_fraction=FLEET_SEED_FRACTION, held_out_splits=(),
    )  # fmt: skip
    config = SimulationConfig(
        num_users=users, expected_cohort=cohort, rounds=1, epsilon=None, noise_multiplier=1.0, delta=1e-6,
        update_clip_norm=1.0, local=local, eval_every=1,
    )  # fmt: skip
    backend = InProcessBackend(inputs.spec, 64, inputs.model)
    start = time.perf_counter()
    report = simulate(
        config, backend, inputs.model, inputs.global_params, (),
        lora_rank=inputs.lora_rank, pad_id=inputs.pad_id, num_labels=inputs.num_labels,
    )  # fmt: skip
    wall = time.perf_counter() - start
    updates = report["client_updates"]
    return {
        "wall_s": wall,
        "client_updates": updates,
        "client_updates_per_second": updates / wall,
        "example_gradients": report["rounds"][0]["example_gradients"],
        "peak_rss_mib": report["peak_rss_mib"],
        "population": inputs.population,
    }


def main() -> None:
    bundle = bench_bundle()
    with tempfile.TemporaryDirectory(prefix="privtune-bench-sim-") as tmp:
        scratch = Path(tmp)
        classifier = bench_classifier(bundle, scratch)
        data = _tiny_data(scratch / "data", DEVICES * EXAMPLES_PER_DEVICE * 2)
        fleet = one_round(bundle, classifier, data, scratch / "fleet", workers=2)
        print(f"   fleet (2 workers): {fleet}", flush=True)
        shard = round(len((data / "train_labels.txt").read_text().splitlines()) * (1 - FLEET_SEED_FRACTION) / DEVICES)
        same = simulated_round(classifier, data, SIM_CLIENTS, float(SIM_CLIENTS), shard, LOCAL_DP)
        print(f"   simulated, same work: {same}", flush=True)
        from ondevice.data import tweeteval_task_dir

        light = DpConfig(clip_norm=1.0, noise_multiplier=0.0, sampling_rate=0.5, local_steps=1, learning_rate=0.05)
        default = simulated_round(classifier, tweeteval_task_dir("offensive"), 10_000, 500.0, 4, light)
        print(f"   simulated, default work: {default}", flush=True)
    fleet_per_update = fleet["wall_s"] / DEVICES
    timings = [
        Timing("fleet_2_workers", (fleet_per_update,)),
        Timing("simulated_same_work", (same["wall_s"] / same["client_updates"],)),
        Timing("simulated_default_work", (default["wall_s"] / default["client_updates"],)),
    ]
    params = {
        "unit": "seconds per client update (device-round)",
        "fleet": {**fleet, "devices": DEVICES, "device_rounds_per_second": DEVICES / fleet["wall_s"]},
        "simulated_same_work": {**same, "local_dp": LOCAL_DP.to_dict(), "texts_per_client": shard},
        "simulated_default_work": {**default, "local_dp": light.to_dict(), "texts_per_client": 4},
        "speedup_same_work": fleet_per_update / (same["wall_s"] / same["client_updates"]),
        "speedup_default_work": fleet_per_update / (default["wall_s"] / default["client_updates"]),
    }
    path = write_result(
        build_result("simulation_throughput", timings, baseline="fleet_2_workers", threads=2, params=params)
    )
    print(f"   wrote {path}", flush=True)


if __name__ == "__main__":
    main()
