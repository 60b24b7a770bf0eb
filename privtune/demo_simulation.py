"""The demo's second section: the same v0 under a simulated population (``privtune simulate``).

The real-HTTP fleet stays the systems test (crashes, adversaries, exactly-once) at 50 phones; this
section answers the deployment question the fleet cannot: with 10,000 users, Poisson cohorts of
~500 and user-level ε ≤ 4, what does DP-FedAvg do to v0? Clients are the phone's local DP-SGD,
vectorized; aggregation and accounting are the server's code, in-process (no HTTP).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dp_accounting

from ondevice.protocol import DpConfig
from privtune.class_weights import parse_class_weights
from server_aggregator.simulation.run import DEFAULT_LOCAL_DP
from server_aggregator.synthetic.pipeline import Stages


@dataclass(frozen=True)
class DemoSimulation:
    """Settings of the demo's simulated population (defaults: the tuned setting in the README)."""

    users: int = 10_000
    expected_cohort: float = 500.0
    rounds: int = 30
    epsilon: float = 4.0
    delta: float = 1e-6
    update_clip_norm: float = 0.05
    server_learning_rate: float = 1.0
    texts_per_user: int = 4
    local: DpConfig = field(default_factory=lambda: DEFAULT_LOCAL_DP)
    class_weights: str = "card"
    """``privtune simulate --class-weights``: ``card`` (default) puts v0's own DP class weights on the
    devices' clipped gradients, so the rounds keep v0's class balance instead of drifting to the prior."""
    eval_every: int = 10
    seed: int = 0


def _folder_key(folder: Path) -> list[tuple[str, str]]:
    return sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in folder.iterdir() if p.is_file())


def _direct_epsilon(q: float, z: float, rounds: int, delta: float) -> float:
    """dp_accounting directly (not the server's accountant): PLD of T Poisson-subsampled Gaussian rounds."""
    if rounds == 0:
        return 0.0
    gaussian = dp_accounting.GaussianDpEvent(z)
    event = dp_accounting.SelfComposedDpEvent(
        gaussian if q >= 1 else dp_accounting.PoissonSampledDpEvent(q, gaussian), rounds
    )
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    return float(accountant.compose(event).get_epsilon(delta))


def run_simulation_stage(
    settings: DemoSimulation,
    classifier: Path,
    data: str,
    out_dir: Path,
    stages: Stages,
    *,
    seed_fraction: float,
    test_examples: int | None,
) -> dict[str, Any]:
    """Run (or reuse) the simulated population from ``classifier``; returns the report's section."""
    key = json.dumps([_folder_key(classifier), data, repr(settings), seed_fraction, test_examples], default=str)

    def body() -> dict[str, Any]:
        from server_aggregator.simulation.backends import InProcessBackend
        from server_aggregator.simulation.population import PopulationConfig
        from server_aggregator.simulation.run import SimulationConfig, prepare, simulate, write_report

        local = replace(settings.local, class_weights=parse_class_weights(settings.class_weights, classifier))
        inputs = prepare(
            classifier, Path(data),
            PopulationConfig(num_users=settings.users, texts_per_user=settings.texts_per_user, seed=settings.seed),
            seed_fraction=seed_fraction, held_out_splits=("test",), held_out_limit=test_examples,
        )  # fmt: skip
        config = SimulationConfig(
            num_users=settings.users, expected_cohort=settings.expected_cohort, rounds=settings.rounds,
            epsilon=settings.epsilon, delta=settings.delta, update_clip_norm=settings.update_clip_norm,
            server_learning_rate=settings.server_learning_rate, local=local,
            eval_every=settings.eval_every, seed=settings.seed,
        )  # fmt: skip
        report = simulate(
            config, InProcessBackend(inputs.spec, 128, inputs.model), inputs.model, inputs.global_params,
            inputs.held_out, lora_rank=inputs.lora_rank, pad_id=inputs.pad_id, num_labels=inputs.num_labels,
        )  # fmt: skip
        report["population"] = inputs.population
        path = write_report(report, out_dir)
        privacy = report["privacy"] or {}
        rounds_run = len(report["rounds"])
        first, last = report["evaluations"][0]["test"], report["evaluations"][-1]["test"]
        keep = ("accuracy", "macro_f1", "loss")
        return {
            "users": settings.users,
            "expected_cohort": settings.expected_cohort,
            "rounds": rounds_run,
            "noise_multiplier": report["noise_multiplier"],
            "sampling_rate": report["sampling_rate"],
            "delta": settings.delta,
            "epsilon_pld": privacy.get("epsilon_amplified_pld", 0.0),
            "epsilon_rdp": privacy.get("epsilon_amplified_rdp", 0.0),
            "epsilon_recomputed_dp_accounting": _direct_epsilon(
                report["sampling_rate"], report["noise_multiplier"], rounds_run, settings.delta
            ),
            "v0": {k: first[k] for k in keep},
            "final": {k: last[k] for k in keep},
            "floor": {k: report["floors"]["test"][k] for k in ("accuracy", "macro_f1")},
            "by_round": [{"round": e["round"], **{k: e["test"][k] for k in keep}} for e in report["evaluations"]],
            "sent_params_per_update": report["sent_params_per_update"],
            "sent_bytes_per_update": report["sent_bytes_per_update"],
            "client_updates": report["client_updates"],
            "client_updates_per_second": report["client_updates_per_second"],
            "simulation_seconds": report["wall_seconds"],
            "peak_rss_mib": report["peak_rss_mib"],
            "population": inputs.population,
            "local_dp": local.to_dict(),
            "update_clip_norm": settings.update_clip_norm,
            "stopped": report["stopped"],
            "report": str(path),
            "note": "simulated users (the phone's local DP-SGD, vectorized; the server's DpFixedClipping and "
            "accountant in-process, no HTTP); evaluated in PyTorch on the real test split",
        }

    return stages.run("simulate", key, body)
