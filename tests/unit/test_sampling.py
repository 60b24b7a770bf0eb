"""Poisson sampling is what the accountant assumes: batch sizes ~ Bin(n, q), inclusion counts ~ Bin(T, q).

χ² goodness of fit with fixed seeds (p > 1e-6 to pass); a shuffled fixed-size sampler, which
an accountant assuming Poisson would overstate privacy for, must fail the same tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ondevice.randomness import SecureRandomSource, SeededRandomSource, make_random_source
from ondevice.sampling import poisson_sample

ALPHA = 1e-6


def _binomial_chi2_pvalue(samples: np.ndarray, n: int, q: float) -> float:
    """χ² goodness-of-fit p-value of integer ``samples`` against Bin(n, q); bins pooled to expected ≥ 5."""
    total = samples.shape[0]
    observed = np.bincount(samples, minlength=n + 1)[: n + 1].astype(np.float64)  # [n+1]
    expected = total * stats.binom.pmf(np.arange(n + 1), n, q)  # [n+1]
    obs_bins: list[float] = []
    exp_bins: list[float] = []
    acc_o = acc_e = 0.0
    for o, e in zip(observed, expected, strict=True):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 5:
            obs_bins.append(acc_o)
            exp_bins.append(acc_e)
            acc_o = acc_e = 0.0
    obs_bins[-1] += acc_o  # leftover upper tail joins the last bin
    exp_bins[-1] += acc_e
    assert len(obs_bins) >= 3
    exp = np.asarray(exp_bins)
    exp *= total / exp.sum()  # pmf sums to 1 up to rounding
    return float(stats.chisquare(np.asarray(obs_bins), exp).pvalue)


def _shuffled_fixed_size_batches(num_examples: int, rate: float, steps: int, seed: int) -> list[np.ndarray]:
    """The wrong sampler: shuffle, then cut fixed batches of q·n (epoch after epoch)."""
    rng = np.random.default_rng(seed)
    size = round(rate * num_examples)
    batches: list[np.ndarray] = []
    while len(batches) < steps:
        perm = rng.permutation(num_examples)
        batches += [np.sort(perm[i : i + size]) for i in range(0, num_examples - size + 1, size)]
    return batches[:steps]


@pytest.mark.parametrize("name", ["seeded", "secure"])
def test_batch_sizes_follow_binomial(name: str) -> None:
    """Fixed seed for the seeded source; the unseedable secure source passes with probability 1 − 1e-6."""
    n, q, draws = 200, 0.05, 20_000
    source = make_random_source(name, seed=11 if name == "seeded" else None)
    sizes = np.array([poisson_sample(n, q, source).shape[0] for _ in range(draws)])
    assert _binomial_chi2_pvalue(sizes, n, q) > ALPHA
    assert abs(sizes.mean() - n * q) < 5 * math.sqrt(n * q * (1 - q) / draws)


def test_inclusion_counts_follow_binomial() -> None:
    n, q, steps = 2_000, 0.05, 300
    source = SeededRandomSource(12)
    counts = np.zeros(n, dtype=np.int64)
    for _ in range(steps):
        counts[poisson_sample(n, q, source)] += 1
    assert _binomial_chi2_pvalue(counts, steps, q) > ALPHA


def test_shuffled_fixed_size_batches_fail_both_tests() -> None:
    n, q, steps = 200, 0.05, 20_000
    batches = _shuffled_fixed_size_batches(n, q, steps, seed=13)
    sizes = np.array([b.shape[0] for b in batches])
    assert _binomial_chi2_pvalue(sizes, n, q) < ALPHA
    counts = np.zeros(n, dtype=np.int64)
    for b in batches[:300]:
        counts[b] += 1
    assert _binomial_chi2_pvalue(counts, 300, q) < ALPHA


def test_chi2_helper_accepts_true_binomial_draws() -> None:
    samples = np.random.default_rng(14).binomial(200, 0.05, size=20_000)
    assert _binomial_chi2_pvalue(samples, 200, 0.05) > ALPHA
    assert _binomial_chi2_pvalue(samples, 200, 0.055) < ALPHA  # and has power against a 10 % rate error


def test_indices_are_sorted_unique_int64_and_in_range() -> None:
    idx = poisson_sample(1_000, 0.3, SeededRandomSource(15))
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)
    assert idx.min() >= 0 and idx.max() < 1_000


def test_rate_one_takes_everything_and_empty_population_takes_nothing() -> None:
    assert np.array_equal(poisson_sample(50, 1.0, SecureRandomSource()), np.arange(50))
    empty = poisson_sample(0, 0.5, SecureRandomSource())
    assert empty.shape == (0,) and empty.dtype == np.int64


def test_same_seed_same_batches() -> None:
    a, b = SeededRandomSource(16), SeededRandomSource(16)
    for _ in range(5):
        assert np.array_equal(poisson_sample(300, 0.1, a), poisson_sample(300, 0.1, b))


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, math.nan, math.inf, True, "0.1"])
def test_bad_rate_is_refused(rate: object) -> None:
    with pytest.raises(ValueError, match=r"rate must be a number in \(0, 1\]"):
        poisson_sample(10, rate, SeededRandomSource(0))  # type: ignore[arg-type]


@pytest.mark.parametrize("num_examples", [-1, 2.0, True, None])
def test_bad_num_examples_is_refused(num_examples: object) -> None:
    with pytest.raises(ValueError, match="num_examples must be an int >= 0"):
        poisson_sample(num_examples, 0.1, SeededRandomSource(0))  # type: ignore[arg-type]
