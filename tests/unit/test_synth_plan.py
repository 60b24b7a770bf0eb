"""The synthetic-data stage's DP-SGD plan, seed-set split, metrics and settings (no models)."""

from __future__ import annotations

import math
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from ondevice.partition import central_seed_indices, device_indices
from server_aggregator.synthetic.classifier_training import ClassifierTraining, macro_f1
from server_aggregator.synthetic.config import PRESETS, DpTraining, SynthConfig, default_delta, preset
from server_aggregator.synthetic.dp_sgd import (
    DpSgdPlan,
    PrivacyPlanError,
    calibrate_noise_multiplier,
    plan_dp_sgd,
    plan_epsilons,
)
from server_aggregator.synthetic.sampling import SamplingSettings, clean_generated


def independent_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    """dp_accounting PLD on a fine grid, built here from the plan's numbers (not through privtune)."""
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(
    ("epsilon", "n", "batch", "steps"),
    [(4.0, 11_916, 16, 40), (1.0, 11_916, 64, 300), (8.0, 2_000, 64, 60), (0.5, 500, 32, 10)],
)
def test_plan_meets_the_target_and_matches_an_independent_accountant(
    epsilon: float, n: int, batch: int, steps: int
) -> None:
    delta = default_delta(n)
    plan = plan_dp_sgd(
        epsilon=epsilon, delta=delta, num_examples=n, expected_batch_size=batch, max_steps=steps, clip_norm=1.0
    )
    eps = plan_epsilons(plan)
    oracle = independent_epsilon(plan.sampling_rate, plan.noise_multiplier, plan.steps, delta)
    assert eps["pld"] <= epsilon * (1 + 1e-9)
    assert abs(eps["pld"] - oracle) <= 0.01 * oracle, (eps, oracle)
    assert eps["rdp"] >= eps["pld"] * (1 - 1e-3)  # RDP is the looser bound
    # Calibrated, not merely safe: 1 % less noise would overshoot the target.
    looser = independent_epsilon(plan.sampling_rate, plan.noise_multiplier * 0.99, plan.steps, delta)
    assert looser > epsilon * 0.995


def test_rdp_cross_check_is_an_independent_rdp_computation() -> None:
    plan = DpSgdPlan(10_000, 64, 200, 1.1, 1.0, 1e-5, 8.0)
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dp_accounting.PoissonSampledDpEvent(64 / 10_000, dp_accounting.GaussianDpEvent(1.1)), 200)
    assert plan_epsilons(plan)["rdp"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-3)


def test_noise_grows_with_steps_and_shrinks_with_epsilon() -> None:
    q, delta = 0.01, 1e-5
    assert calibrate_noise_multiplier(4.0, delta, q, 100) < calibrate_noise_multiplier(4.0, delta, q, 1000)
    assert calibrate_noise_multiplier(8.0, delta, q, 100) < calibrate_noise_multiplier(2.0, delta, q, 100)


def test_plan_cuts_steps_rather_than_exceed_the_noise_cap() -> None:
    plan = plan_dp_sgd(
        epsilon=0.3,
        delta=1e-5,
        num_examples=1000,
        expected_batch_size=100,
        max_steps=500,
        clip_norm=1.0,
        max_noise_multiplier=5.0,
    )
    assert plan.steps < 500 and plan.noise_multiplier <= 5.0 * 1.01
    more = independent_epsilon(plan.sampling_rate, 5.0, plan.steps + 1, 1e-5)
    assert more > 0.3  # one more step at the cap would not fit


def test_epsilon_too_small_for_one_step_states_the_smallest_workable_epsilon() -> None:
    with pytest.raises(PrivacyPlanError, match="too small for even one DP-SGD step") as info:
        plan_dp_sgd(
            epsilon=1e-4,
            delta=1e-5,
            num_examples=100,
            expected_batch_size=50,
            max_steps=10,
            clip_norm=1.0,
            max_noise_multiplier=5.0,
        )
    text = str(info.value)
    smallest = float(text.split("Ask for epsilon >= ")[1].split(",")[0])
    assert smallest == pytest.approx(independent_epsilon(0.5, 5.0, 1, 1e-5), rel=0.02)
    plan = plan_dp_sgd(
        epsilon=smallest * 1.05,
        delta=1e-5,
        num_examples=100,
        expected_batch_size=50,
        max_steps=10,
        clip_norm=1.0,
        max_noise_multiplier=5.0,
    )
    assert plan.steps >= 1


def test_plan_batch_is_capped_at_the_data_size() -> None:
    plan = plan_dp_sgd(epsilon=4, delta=1e-3, num_examples=10, expected_batch_size=64, max_steps=3, clip_norm=1.0)
    assert plan.expected_batch_size == 10 and plan.sampling_rate == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be an int >= 1, found 0"),
        ({"noise_multiplier": -1.0}, "noise_multiplier must be a finite number > 0, found -1.0"),
        ({"expected_batch_size": 20}, "expected_batch_size must be an int in 1..10"),
        ({"delta": 1.5}, "delta must be in"),
    ],
)
def test_plan_validation_names_the_bad_value(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "num_examples": 10,
        "expected_batch_size": 5,
        "steps": 3,
        "noise_multiplier": 1.0,
        "clip_norm": 1.0,
        "delta": 1e-3,
        "target_epsilon": 1.0,
    }
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        DpSgdPlan(**{**base, **kwargs})  # type: ignore[arg-type]


def test_default_delta_is_below_one_over_ten_n() -> None:
    for n in (1, 7, 200, 11_916, 10**6, 10**8):
        delta = default_delta(n)
        assert delta <= 1 / (10 * n) and delta <= 1e-6  # the targets are at δ ≤ 1e-6
        assert delta > min(1 / (100 * n), 1e-7)
    assert default_delta(11_916) == 1e-6 and default_delta(200) == 1e-6 and default_delta(10**6) == 1e-7


def test_seed_set_split_is_seeded_and_its_complement_is_disjoint() -> None:
    a = central_seed_indices(1000, 0.3, seed=5)
    assert len(a) == 300 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, central_seed_indices(1000, 0.3, seed=5))
    assert not np.array_equal(a, central_seed_indices(1000, 0.3, seed=6))
    rest = device_indices(1000, 0.3, seed=5)
    assert len(rest) == 700 and not set(rest.tolist()) & set(a.tolist())
    assert np.array_equal(np.sort(np.concatenate([a, rest])), np.arange(1000))
    assert len(central_seed_indices(10, 1.0, seed=0)) == 10


def test_macro_f1_by_hand() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    # class 0: tp 2 fp 0 fn 1 → 0.8; class 1: tp 1 fp 1 fn 1 → 0.5; class 2: tp 1 fp 1 fn 0 → 2/3
    assert macro_f1(truth, pred, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert macro_f1(np.array([0, 0]), np.array([0, 0]), 2) == pytest.approx(0.5)  # absent class scores 0


def test_clean_generated_cuts_at_the_end_of_turn_and_collapses_space() -> None:
    assert clean_generated("  hello \n world<|im_end|> tail") == "hello world"
    assert clean_generated("   \n ") == ""


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: SamplingSettings(samples_per_label=0), "samples_per_label must be an int >= 1, found 0"),
        (lambda: SamplingSettings(top_p=1.5), r"top_p must be in \(0, 1\], found 1.5"),
        (lambda: SamplingSettings(temperature=0.0), "temperature must be a finite number > 0, found 0.0"),
        (lambda: ClassifierTraining(epochs=-1.0), "epochs must be a finite number > 0, found -1.0"),
        (lambda: DpTraining(expected_batch_size=0, max_steps=1, learning_rate=1e-3), "expected_batch_size"),
        (lambda: DpTraining(16, 10, learning_rate=math.nan), "learning_rate must be a finite number > 0"),
        (lambda: DpTraining(16, 10, learning_rate=0.1, probe_share=1.0), r"probe_share must be in \[0, 1\), found 1.0"),
        (lambda: DpTraining(16, 10, learning_rate=0.1, train_head=False), "train_head=False needs a probe head"),
        (lambda: SynthConfig(Path("x"), "d", epsilons=(0.0,)), "every epsilon must be a finite number > 0"),
        (lambda: SynthConfig(Path("x"), "d", epsilons=(4.0, 4.0)), "epsilons repeat"),
        (lambda: SynthConfig(Path("x"), "d", seed_fraction=0.0), r"seed_fraction must be in \(0, 1\]"),
        (lambda: SynthConfig(Path("x"), "d", random_source="mt"), "random_source must be 'secure' or 'seeded'"),
        (lambda: preset("medium"), "unknown preset 'medium'; known: \\['full', 'quick'\\]"),
    ],
)
def test_settings_validation_names_the_bad_value(factory: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()  # type: ignore[operator]


def test_presets_are_what_the_readme_says() -> None:
    quick, full = PRESETS["quick"], PRESETS["full"]
    assert quick.generator.max_steps <= 60 and quick.sampling.samples_per_label <= 256
    assert full.generator.expected_batch_size > quick.generator.expected_batch_size
    assert quick.ship == "probe" and "DP linear probe" in quick.note and quick.dp_classifier is None
    assert full.dp_classifier is not None and full.dp_classifier.expected_batch_size == 512
    assert full.dp_classifier.steps_for(11_916) == 70  # 3 epochs of B = 512, what `privtune plan` recommends
    # LP-FT with the probe's head fixed: the best DP-SGD LoRA recipe by validation macro-F1 (README)
    assert full.dp_classifier.probe_share == 0.5 and not full.dp_classifier.train_head
    assert full.dp_classifier.top_layers == 2 and full.dp_classifier.optimizer == "sgd"
    assert quick.probe.expected_batch_size >= 1024 and quick.probe.steps >= 1000
    assert full.relabel_synthetic and not quick.relabel_synthetic  # the DP label filter runs in `full` only


def test_classifier_training_steps_are_epochs_capped_at_max_steps() -> None:
    assert ClassifierTraining(epochs=1.0, batch_size=32).steps_for(11_916) == 373
    assert ClassifierTraining(epochs=1.0, batch_size=32, max_steps=100).steps_for(11_916) == 100
    assert ClassifierTraining(epochs=0.01, batch_size=32, max_steps=100).steps_for(10) == 1
    with pytest.raises(ValueError, match="max_steps must be None or an int >= 1, found 0"):
        ClassifierTraining(max_steps=0)
