"""Contract for every accountant in the registry ("pld", "rdp"), plus cross-checks between them.

Checks monotonicity, the degenerate cases, the analytic Gaussian mechanism (Balle & Wang 2018)
for one full-batch step, RDP ≥ PLD on a grid, and agreement with dp_accounting driven in a
different way (PLD objects built directly at a finer grid; RDP composed one event at a time).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import optimize, stats

from ondevice.accounting import (
    Accountant,
    PldAccountant,
    RdpAccountant,
    StepEvent,
    make_accountant,
)

DELTA = 1e-5
NAMES = ["pld", "rdp"]


def analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Exact ε of the Gaussian mechanism (sensitivity 1, std σ) at δ, by inverting Balle & Wang's δ(ε)."""

    def delta_of(eps: float) -> float:
        return float(
            stats.norm.cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * stats.norm.cdf(-0.5 / sigma - eps * sigma)
        )

    return float(optimize.brentq(lambda e: delta_of(e) - delta, 0.0, 500.0, xtol=1e-12))


def _mixed_steps() -> list[StepEvent]:
    """20 single steps of two kinds, interleaved at random (the accountant must group them itself)."""
    steps = [StepEvent(0.05, 1.2)] * 12 + [StepEvent(0.1, 1.6)] * 8
    random.Random(0).shuffle(steps)
    return steps


def _independent_pld(steps: Sequence[StepEvent], delta: float) -> float:
    """PLD objects built directly (no DpEvent, no PLDAccountant) at interval 2e-4, composed per kind."""
    total = None
    for (q, sigma), group in itertools.groupby(sorted((s.sampling_rate, s.noise_multiplier) for s in steps)):
        pld = privacy_loss_distribution.from_gaussian_mechanism(
            sigma, sampling_prob=q, value_discretization_interval=2e-4
        ).self_compose(len(list(group)))
        total = pld if total is None else total.compose(pld)
    assert total is not None
    return float(total.get_epsilon_for_delta(delta))


def _independent_rdp(steps: Sequence[StepEvent], delta: float) -> float:
    """RDP curves added step by step by hand (composition by definition), then dp_accounting's conversion."""
    orders = rdp_privacy_accountant.DEFAULT_RDP_ORDERS
    curves: dict[tuple[float, float], np.ndarray] = {}
    total = np.zeros(len(orders))  # [orders]
    for s in steps:
        key = (s.sampling_rate, s.noise_multiplier)
        if key not in curves:
            single = rdp_privacy_accountant.RdpAccountant(orders)
            single.compose(dp_accounting.PoissonSampledDpEvent(key[0], dp_accounting.GaussianDpEvent(key[1])))
            curves[key] = np.asarray(single.rdp)
        for _ in range(s.count):
            total = total + curves[key]
    eps, _ = rdp_privacy_accountant.compute_epsilon(orders, total, delta)
    return float(eps)


INDEPENDENT: dict[str, Callable[[Sequence[StepEvent], float], float]] = {
    "pld": _independent_pld,
    "rdp": _independent_rdp,
}


@pytest.fixture(params=NAMES)
def accountant(request: pytest.FixtureRequest) -> Accountant:
    return make_accountant(request.param)


class TestAccountantContract:
    def test_registry_name(self, accountant: Accountant) -> None:
        assert accountant.name in NAMES
        assert type(make_accountant(accountant.name)) is type(accountant)

    def test_epsilon_decreases_with_noise(self, accountant: Accountant) -> None:
        eps = [accountant.epsilon([StepEvent(0.02, s, 100)], DELTA) for s in (0.8, 1.0, 1.5, 2.0, 4.0)]
        assert all(a > b for a, b in itertools.pairwise(eps)), eps

    def test_epsilon_increases_with_steps(self, accountant: Accountant) -> None:
        eps = [accountant.epsilon([StepEvent(0.02, 1.0, t)], DELTA) for t in (1, 10, 100, 1000)]
        assert all(a < b for a, b in itertools.pairwise(eps)), eps

    def test_epsilon_increases_with_sampling_rate(self, accountant: Accountant) -> None:
        eps = [accountant.epsilon([StepEvent(q, 1.0, 20)], DELTA) for q in (0.005, 0.01, 0.05, 0.2, 1.0)]
        assert all(a < b for a, b in itertools.pairwise(eps)), eps

    def test_epsilon_decreases_with_delta(self, accountant: Accountant) -> None:
        steps = [StepEvent(0.02, 1.0, 100)]
        assert accountant.epsilon(steps, 1e-7) > accountant.epsilon(steps, 1e-5) > accountant.epsilon(steps, 1e-3)

    def test_zero_noise_is_infinite(self, accountant: Accountant) -> None:
        assert accountant.epsilon([StepEvent(0.01, 0.0)], DELTA) == math.inf
        assert accountant.epsilon([StepEvent(0.01, 1.0, 100), StepEvent(0.5, 0.0)], DELTA) == math.inf

    def test_no_steps_is_zero(self, accountant: Accountant) -> None:
        assert accountant.epsilon([], DELTA) == 0.0

    def test_one_full_batch_step_is_at_least_the_analytic_gaussian(self, accountant: Accountant) -> None:
        for sigma in (0.8, 1.0, 2.0, 5.0):
            exact = analytic_gaussian_epsilon(sigma, DELTA)
            assert accountant.epsilon([StepEvent(1.0, sigma)], DELTA) >= exact * (1 - 1e-6)

    def test_grouping_and_order_do_not_matter(self, accountant: Accountant) -> None:
        steps = _mixed_steps()
        grouped = [StepEvent(0.1, 1.6, 8), StepEvent(0.05, 1.2, 12)]
        assert accountant.epsilon(steps, DELTA) == accountant.epsilon(grouped, DELTA)
        assert accountant.epsilon(steps[::-1], DELTA) == accountant.epsilon(steps, DELTA)

    def test_matches_an_independent_dp_accounting_computation(self, accountant: Accountant) -> None:
        steps = _mixed_steps()
        ours = accountant.epsilon(steps, DELTA)
        independent = INDEPENDENT[accountant.name](steps, DELTA)
        assert ours == pytest.approx(independent, rel=0.01)
        assert 0.5 < ours < 10  # a regime where the comparison means something

    def test_bad_delta_is_refused(self, accountant: Accountant) -> None:
        for delta in (0.0, 1.0, -1e-5, math.nan, True):
            with pytest.raises(ValueError, match="delta"):
                accountant.epsilon([StepEvent(0.1, 1.0)], delta)

    def test_inputs_name_the_settings(self, accountant: Accountant) -> None:
        inputs = accountant.inputs([StepEvent(0.02, 1.0, 10)], DELTA)
        assert inputs
        assert ("value_discretization_interval" in inputs) or ("orders" in inputs)


@pytest.mark.parametrize("sigma", [0.8, 1.0, 2.0, 5.0])
def test_pld_inverts_the_analytic_gaussian_within_one_percent(sigma: float) -> None:
    exact = analytic_gaussian_epsilon(sigma, DELTA)
    assert make_accountant("pld").epsilon([StepEvent(1.0, sigma)], DELTA) == pytest.approx(exact, rel=0.01)
    assert make_accountant("rdp").epsilon([StepEvent(1.0, sigma)], DELTA) >= exact


def test_analytic_gaussian_helper_is_right() -> None:
    """Guard the oracle itself: σ = 1, δ = 1e-5 → ε ≈ 4.3772 (dp_accounting's closed form agrees)."""
    assert analytic_gaussian_epsilon(1.0, 1e-5) == pytest.approx(4.3772, abs=1e-4)
    assert analytic_gaussian_epsilon(2.0, 1e-5) == pytest.approx(
        dp_accounting.get_epsilon_gaussian(2.0, 1e-5), rel=1e-3
    )


GRID = [
    *itertools.product((0.001, 0.02, 0.2, 1.0), (0.8, 3.0), (1, 100)),
    (0.001, 3.0, 10_000),  # tiny ε: a fixed 1e-3 PLD grid would overshoot RDP here
    (0.0005, 10.0, 10_000),
]


@pytest.mark.parametrize(("q", "sigma", "steps"), GRID)
def test_rdp_is_never_below_pld(q: float, sigma: float, steps: int) -> None:
    events = [StepEvent(q, sigma, steps)]
    pld, rdp = make_accountant("pld").epsilon(events, DELTA), make_accountant("rdp").epsilon(events, DELTA)
    assert 0 < pld <= rdp


def test_adaptive_pld_grid_refines_tiny_epsilon() -> None:
    events = [StepEvent(0.001, 3.0, 100)]
    coarse = PldAccountant(1e-3).evaluate(events, DELTA)
    adaptive = PldAccountant().evaluate(events, DELTA)
    assert coarse.value_discretization_interval == 1e-3
    assert adaptive.value_discretization_interval is not None and adaptive.value_discretization_interval < 1e-3
    fine = privacy_loss_distribution.from_gaussian_mechanism(
        3.0, sampling_prob=0.001, value_discretization_interval=1e-6
    ).self_compose(100)
    assert adaptive.epsilon == pytest.approx(fine.get_epsilon_for_delta(DELTA), rel=0.02)
    assert coarse.epsilon > 1.3 * adaptive.epsilon  # why the refinement exists


def test_unknown_accountant_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown accountant 'moments'; known: \['pld', 'rdp'\]"):
        make_accountant("moments")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sampling_rate": 0.0, "noise_multiplier": 1.0}, "sampling_rate"),
        ({"sampling_rate": 1.5, "noise_multiplier": 1.0}, "sampling_rate"),
        ({"sampling_rate": math.nan, "noise_multiplier": 1.0}, "sampling_rate"),
        ({"sampling_rate": 0.1, "noise_multiplier": -1.0}, "noise_multiplier"),
        ({"sampling_rate": 0.1, "noise_multiplier": math.inf}, "noise_multiplier"),
        ({"sampling_rate": 0.1, "noise_multiplier": 1.0, "count": 0}, "count"),
        ({"sampling_rate": 0.1, "noise_multiplier": 1.0, "count": True}, "count"),
    ],
)
def test_step_event_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"StepEvent.{field}"):
        StepEvent(**kwargs)  # type: ignore[arg-type]


def test_accountant_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="value_discretization_interval"):
        PldAccountant(0.0)
    with pytest.raises(ValueError, match="orders"):
        RdpAccountant([0.5, 2.0])
