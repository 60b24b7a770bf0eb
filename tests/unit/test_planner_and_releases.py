"""The σ/B planner and the composed ledger of a synth run, against dp_accounting computed directly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant

from ondevice.accounting import StepEvent
from server_aggregator.synthetic.planner import PlanRequest, format_table, plan_table
from server_aggregator.synthetic.releases import Release, calibrate_last, composed_epsilon


def direct_epsilon(events: list[tuple[float, float, int]], delta: float) -> float:
    """dp_accounting PLD on a fine grid over (q, σ, T) triples; q = 1 means an unsampled Gaussian."""
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for q, sigma, steps in events:
        gaussian = dp_accounting.GaussianDpEvent(sigma)
        event = gaussian if q >= 1 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
        accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))


def test_every_row_meets_the_target_and_the_smallest_sigma_over_b_is_recommended() -> None:
    request = PlanRequest(num_examples=11_916, epsilon=4.0, delta=1e-6, budget_example_gradients=36_000)
    table = plan_table(request)
    assert [r.expected_batch_size for r in table.rows] == [64, 128, 256, 512, 1024, 2048, 4096]
    for row in table.rows:
        assert row.steps == 36_000 // row.expected_batch_size
        eps = direct_epsilon([(row.sampling_rate, row.noise_multiplier, row.steps)], 1e-6)
        assert eps <= 4.0 * 1.01, row
        assert direct_epsilon([(row.sampling_rate, row.noise_multiplier * 0.99, row.steps)], 1e-6) > 4.0 * 0.995
    eligible = [r for r in table.rows if r.steps >= request.min_steps]
    best = table.rows[table.recommended]
    assert best.noise_to_batch == min(r.noise_to_batch for r in eligible)
    assert (best.expected_batch_size, best.steps) == (512, 70)  # 3 epochs of B = 512
    sigma_over_b = [r.noise_to_batch for r in table.rows]
    assert sigma_over_b == sorted(sigma_over_b, reverse=True)  # larger batches: less noise per averaged step
    plan = table.recommended_plan()
    assert plan.expected_batch_size == 512 and plan.noise_multiplier == best.noise_multiplier
    assert "* recommended" in format_table(table)


def test_plan_request_names_bad_values() -> None:
    with pytest.raises(ValueError, match="num_examples"):
        PlanRequest(num_examples=0, epsilon=1.0, delta=1e-6, budget_example_gradients=10)
    with pytest.raises(ValueError, match="epsilon"):
        PlanRequest(num_examples=10, epsilon=-1.0, delta=1e-6, budget_example_gradients=10)
    with pytest.raises(ValueError, match="batch_sizes"):
        PlanRequest(num_examples=10, epsilon=1.0, delta=1e-6, budget_example_gradients=10, batch_sizes=(0,))


def test_plan_cli_prints_the_table() -> None:
    privtune = Path(sys.executable).with_name("privtune")
    args = ["plan", "--n", "5000", "--epsilon", "1", "--budget-example-gradients", "20000"]
    result = subprocess.run([str(privtune), *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "sigma/B" in result.stdout and "* recommended" in result.stdout
    bad = subprocess.run(
        [str(privtune), "plan", "--n", "0", "--epsilon", "1"], capture_output=True, text=True, timeout=120, check=False
    )
    assert bad.returncode == 2 and "num_examples must be" in bad.stderr


def test_calibrate_last_composes_to_the_total() -> None:
    n, delta = 6_000, 1e-6
    generator = Release("generator", "g", (StepEvent(256 / n, 1.4, 12),), 1.0, 256)
    counts = Release("label-counts", "c", (StepEvent(1.0, 100.0, 1),), 1.0, n)
    plan = calibrate_last(
        [generator, counts],
        total_epsilon=4.0,
        delta=delta,
        num_examples=n,
        expected_batch_size=1024,
        steps=1000,
        clip_norm=1.0,
    )
    triples = [(256 / n, 1.4, 12), (1.0, 100.0, 1)]
    total = direct_epsilon([*triples, (plan.sampling_rate, plan.noise_multiplier, plan.steps)], delta)
    assert total <= 4.0 * 1.01
    assert direct_epsilon([*triples, (plan.sampling_rate, plan.noise_multiplier * 0.99, plan.steps)], delta) > 3.98
    probe = Release.from_plan("probe", "p", plan)
    eps = composed_epsilon([generator, counts, probe], delta)
    assert eps["pld"] == pytest.approx(total, rel=0.01) and eps["rdp"] >= eps["pld"]
    alone = direct_epsilon([triples[0]], delta)
    assert alone < eps["pld"] < alone + direct_epsilon([(plan.sampling_rate, plan.noise_multiplier, 1000)], delta)


def test_calibrate_last_refuses_when_the_prior_spends_everything() -> None:
    prior = [Release("generator", "g", (StepEvent(0.5, 0.5, 100),), 1.0, 10)]
    with pytest.raises(ValueError, match="already spend"):
        calibrate_last(
            prior, total_epsilon=1.0, delta=1e-6, num_examples=20, expected_batch_size=4, steps=10, clip_norm=1.0
        )
