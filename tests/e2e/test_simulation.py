"""``simulate`` end to end at small size: the real server aggregation and accountant over vectorized clients.

The base model is the session bundle's classifier (random head, perturbed LoRA), so a few rounds of
user-level DP-FedAvg must lower the held-out loss. ε is recomputed with dp_accounting directly,
every upload is checked against the clip bound, and the aggregate must not depend on how the
cohort is split into groups or which backend ran it (Ray, when installed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest

from ondevice.protocol import DpConfig
from server_aggregator.simulation.backends import InProcessBackend, RayBackend
from server_aggregator.simulation.population import PopulationConfig
from server_aggregator.simulation.run import (
    SimulationConfig,
    SimulationInputs,
    prepare,
    resolve_noise_multiplier,
    simulate,
)

pytestmark = pytest.mark.slow

USERS, COHORT, ROUNDS, CLIP, Z = 300, 40.0, 6, 0.03, 0.5


@pytest.fixture(scope="module")
def inputs(classifier_dir: Path, offensive_dir: Path) -> SimulationInputs:
    return prepare(
        classifier_dir,
        offensive_dir,
        PopulationConfig(num_users=USERS, texts_per_user=3, seed=4),
        held_out_splits=("val",),
        held_out_limit=400,
    )


def _config(**overrides: Any) -> SimulationConfig:
    settings: dict[str, Any] = {
        "num_users": USERS,
        "expected_cohort": COHORT,
        "rounds": ROUNDS,
        "epsilon": None,
        "noise_multiplier": Z,
        "delta": 1e-5,
        "update_clip_norm": CLIP,
        "local": DpConfig(clip_norm=1.0, noise_multiplier=0.0, sampling_rate=1.0, local_steps=1, learning_rate=0.05),
        "eval_every": ROUNDS,
        "seed": 5,
    }
    settings.update(overrides)
    return SimulationConfig(**settings)


def _run(inputs: SimulationInputs, config: SimulationConfig, backend: Any, held_out: bool = True) -> dict[str, Any]:
    return simulate(
        config,
        backend,
        inputs.model,
        inputs.global_params,
        inputs.held_out if held_out else (),
        lora_rank=inputs.lora_rank,
        pad_id=inputs.pad_id,
        num_labels=inputs.num_labels,
    )


@pytest.fixture(scope="module")
def report(inputs: SimulationInputs) -> dict[str, Any]:
    return _run(inputs, _config(), InProcessBackend(inputs.spec, 32, inputs.model))


def test_a_seeded_small_simulation_lowers_the_held_out_loss(report: dict[str, Any]) -> None:
    first, last = report["evaluations"][0]["val"], report["evaluations"][-1]["val"]
    assert len(report["rounds"]) == ROUNDS and report["stopped"] is None
    assert last["loss"] < first["loss"] - 0.02, (first["loss"], last["loss"])


def test_epsilon_equals_a_direct_dp_accounting_computation(report: dict[str, Any]) -> None:
    q, z = report["sampling_rate"], report["noise_multiplier"]
    assert q == pytest.approx(COHORT / USERS) and z == Z
    privacy = report["privacy"]
    assert privacy["rounds"] == ROUNDS
    assert privacy["epsilon_amplified_pld"] == pytest.approx(_direct_pld(q, z, ROUNDS, 1e-5), rel=5e-3)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), ROUNDS
    )
    integer_orders = [float(a) for a in (*range(2, 64), 128, 256, 512, 1024)]  # the server's documented orders
    rdp = dp_accounting.rdp.RdpAccountant(integer_orders).compose(event).get_epsilon(1e-5)
    assert privacy["epsilon_amplified_rdp"] == pytest.approx(rdp, rel=1e-6)
    assert dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(1e-5) <= rdp * (
        1 + 1e-9
    )  # more orders: tighter


def _direct_pld(q: float, z: float, rounds: int, delta: float) -> float:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds
    )
    return float(dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4).compose(event).get_epsilon(delta))


def test_a_calibrated_noise_multiplier_spends_the_target_epsilon() -> None:
    config = SimulationConfig(num_users=10_000, expected_cohort=500.0, rounds=30, epsilon=4.0, delta=1e-6)
    z = resolve_noise_multiplier(config, 74_498)
    assert 3.9 <= _direct_pld(0.05, z, 30, 1e-6) <= 4.0 * 1.003


def test_every_upload_is_within_the_clip_bound_and_the_bound_was_active(report: dict[str, Any]) -> None:
    assert all(r["max_sent_norm"] <= CLIP * (1 + 1e-9) for r in report["rounds"])
    assert sum(r["clipped_by_devices"] for r in report["rounds"]) > 0  # else the check above is vacuous


def test_the_report_states_what_each_update_sends(report: dict[str, Any]) -> None:
    assert report["sent_params_per_update"] == 74_498
    assert report["sent_bytes_per_update"] == 4 * 74_498
    assert report["floors"]["val"]["accuracy"] > 0.5


def test_a_server_fixed_rank_sends_fewer_parameters(inputs: SimulationInputs) -> None:
    local = DpConfig(
        clip_norm=1.0, noise_multiplier=0.0, sampling_rate=1.0, local_steps=1, learning_rate=1.0, train_rank=1
    )
    small = _run(
        inputs, _config(rounds=1, local=local), InProcessBackend(inputs.spec, 64, inputs.model), held_out=False
    )
    assert small["sent_params_per_update"] == 12 * 384 * 2 + 2 * 384 + 2 <= 15_000


def test_the_budget_stops_rounds_it_cannot_afford(inputs: SimulationInputs) -> None:
    config = _config(rounds=50, noise_multiplier=1.0, epsilon=3.0)
    stopped = _run(inputs, config, InProcessBackend(inputs.spec, 64, inputs.model), held_out=False)
    assert stopped["stopped"] is not None and "budget" in stopped["stopped"]
    assert 0 < len(stopped["rounds"]) < 50
    privacy = stopped["privacy"]
    assert privacy["epsilon_amplified_pld"] <= 3.0 < _direct_pld(COHORT / USERS, 1.0, len(stopped["rounds"]) + 1, 1e-5)


def _two_rounds(inputs: SimulationInputs, backend: Any) -> np.ndarray:
    return np.asarray(_run(inputs, _config(rounds=2), backend, held_out=False)["final_parameters"])


def test_the_aggregate_does_not_depend_on_how_the_cohort_is_grouped(inputs: SimulationInputs) -> None:
    a = _two_rounds(inputs, InProcessBackend(inputs.spec, 7, inputs.model))
    b = _two_rounds(inputs, InProcessBackend(inputs.spec, 1_000, inputs.model))
    assert float(np.max(np.abs(a - inputs_flat(inputs)))) > 1e-4
    assert float(np.max(np.abs(a - b))) <= 1e-6


def inputs_flat(inputs: SimulationInputs) -> np.ndarray:
    from ondevice.dp_math import tensors_to_flat

    return tensors_to_flat(inputs.global_params, inputs.model.specs)


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'privtune[ray]')"
)
def test_the_ray_backend_on_a_local_two_worker_cluster_gives_the_same_aggregate(inputs: SimulationInputs) -> None:
    reference = _two_rounds(inputs, InProcessBackend(inputs.spec, 16, inputs.model))
    backend = RayBackend(inputs.spec, num_workers=2, group_size=16)
    try:
        spread = _two_rounds(inputs, backend)
    finally:
        backend.close()
    assert float(np.max(np.abs(spread - reference))) <= 1e-6
