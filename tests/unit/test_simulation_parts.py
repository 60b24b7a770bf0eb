"""The simulator's pure parts: population table, Poisson cohorts (χ²), chunking, federated planning."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from scipy import stats

from server_aggregator.simulation.clients import token_chunks
from server_aggregator.simulation.plan import federated_plan, federated_plan_row, format_plan
from server_aggregator.simulation.population import PopulationConfig, build_population
from server_aggregator.simulation.run import poisson_cohort


def _labels(n: int, positive: float = 0.3, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < positive).astype(np.int64)


def test_users_are_disjoint_when_the_pool_is_large_enough() -> None:
    labels = _labels(2_000)
    population = build_population(labels, PopulationConfig(num_users=200, texts_per_user=4, seed=1))
    assert population.num_users == 200
    assert all(population.user(u).shape == (4,) for u in range(200))
    assert np.unique(population.members).shape[0] == 800  # no text held twice
    assert population.reuse == pytest.approx(0.4)


def test_a_small_pool_is_reused_evenly_and_the_report_says_so() -> None:
    labels = _labels(300)
    population = build_population(labels, PopulationConfig(num_users=500, texts_per_user=3, seed=2))
    counts = np.bincount(population.members, minlength=300)
    assert population.reuse == pytest.approx(5.0)
    assert counts.max() <= 8  # cycling through shuffled per-label lists: near-even reuse
    assert population.to_dict()["max_users_per_text"] == int(counts.max())


def test_label_skew_follows_alpha() -> None:
    labels = _labels(20_000, positive=0.5)

    def mixed_users(alpha: float) -> float:
        population = build_population(labels, PopulationConfig(num_users=2_000, texts_per_user=6, label_alpha=alpha))
        own = labels[population.members].reshape(2_000, 6)
        return float(np.mean((own.min(axis=1) == 0) & (own.max(axis=1) == 1)))

    assert mixed_users(0.05) < 0.2 < 0.8 < mixed_users(100.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_users", 0), ("texts_per_user", 0), ("label_alpha", 0.0), ("seed", -1), ("num_users", True)],
)
def test_population_config_names_the_bad_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        PopulationConfig(**{field: value})  # type: ignore[arg-type]


def test_cohort_sizes_follow_the_binomial_law() -> None:
    """χ² goodness of fit of 4,000 cohort sizes against Bin(N, q): Poisson sampling, not fixed-size."""
    n, q, draws = 400, 0.05, 4_000
    rng = np.random.default_rng(3)
    sizes = np.array([poisson_cohort(n, q, rng).shape[0] for _ in range(draws)])
    low, high = int(stats.binom.ppf(0.01, n, q)), int(stats.binom.ppf(0.99, n, q))
    edges = [low, *range(low + 1, high + 1), high + 1]
    observed = [np.sum(sizes < low)] + [np.sum(sizes == k) for k in range(low, high + 1)] + [np.sum(sizes > high)]
    probs = [stats.binom.cdf(low - 1, n, q)] + [stats.binom.pmf(k, n, q) for k in range(low, high + 1)]
    probs.append(1 - sum(probs))
    expected = np.array(probs) * draws
    assert len(edges) > 5 and expected.min() >= 5
    _, p_value = stats.chisquare(observed, expected)
    assert p_value > 1e-4, f"cohort sizes do not look Bin({n}, {q}): p = {p_value:.2g}"
    # and a fixed-size cohort would be caught by the same test
    fixed = np.full(draws, int(n * q))
    observed_fixed = [np.sum(fixed < low)] + [np.sum(fixed == k) for k in range(low, high + 1)] + [np.sum(fixed > high)]
    assert stats.chisquare(observed_fixed, expected)[1] < 1e-10


def test_cohorts_are_distinct_ascending_users() -> None:
    cohort = poisson_cohort(1_000, 0.3, np.random.default_rng(0))
    assert np.all(np.diff(cohort) > 0) and cohort.min() >= 0 and cohort.max() < 1_000


def test_token_chunks_bound_rows_and_tokens() -> None:
    lengths = sorted(np.random.default_rng(0).integers(3, 128, size=700).tolist())
    chunks = token_chunks(lengths, max_rows=128, max_tokens=4096)
    assert [i for c in chunks for i in c] == list(range(700))
    for chunk in chunks:
        rows = len(chunk)
        assert rows <= 128
        assert rows == 1 or rows * lengths[chunk[-1]] <= 4096


def _direct_epsilon(q: float, z: float, rounds: int, delta: float) -> float:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds
    )
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    return float(accountant.compose(event).get_epsilon(delta))


def test_the_plan_calibrates_z_tightly_against_dp_accounting() -> None:
    row = federated_plan_row(10_000, 500, 30, 4.0, 1e-6, 0.5, 74_498)
    assert row.sampling_rate == pytest.approx(0.05)
    assert _direct_epsilon(0.05, row.noise_multiplier, 30, 1e-6) <= 4.0 * 1.005
    assert _direct_epsilon(0.05, row.noise_multiplier * 0.97, 30, 1e-6) > 4.0
    assert row.noise_std_on_mean == pytest.approx(row.noise_multiplier * 0.5 / 500)
    assert row.noise_norm_on_mean == pytest.approx(row.noise_std_on_mean * 74_498**0.5)


def test_a_bigger_cohort_needs_more_noise_but_less_noise_on_the_mean() -> None:
    rows = federated_plan(100_000, (100, 1_000, 10_000), (30,), 2.0, 1e-6, 1.0, 10_000)
    zs = [r.noise_multiplier for r in rows]
    stds = [r.noise_std_on_mean for r in rows]
    assert zs == sorted(zs) and stds == sorted(stds, reverse=True)
    assert "cohort" in format_plan(rows, 100_000, 2.0, 1e-6, 1.0)


def test_a_cohort_larger_than_the_population_is_refused() -> None:
    with pytest.raises(ValueError, match="expected cohort"):
        federated_plan_row(100, 200, 10, 1.0, 1e-6, 1.0, 10)
