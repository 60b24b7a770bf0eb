"""Random sources: noise statistics at 10⁶ coordinates (DESIGN.md thresholds), uniforms, registry.

The secure source cannot be seeded, so its statistical checks use thresholds at α = 1e-6 each
(a false alarm is ~1 in 10⁵ runs); the seeded source runs the same checks with a fixed seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ondevice.randomness import (
    RandomSource,
    SecureRandomSource,
    SeededRandomSource,
    box_muller,
    gaussian_noise,
    make_random_source,
    uniforms_from_bytes,
)
from tests.noise_stats import ks_distance, noise_failures

N = 1_000_000
SIGMA, CLIP = 1.1, 0.7


def _source(name: str) -> RandomSource:
    return make_random_source(name, seed=20240607 if name == "seeded" else None)


@pytest.mark.parametrize("name", ["secure", "seeded"])
def test_noise_matches_sigma_times_c_over_a_million_coordinates(name: str) -> None:
    noise = gaussian_noise(_source(name), N, SIGMA * CLIP)
    assert noise.dtype == np.float32
    assert noise_failures(noise, SIGMA * CLIP) == []


def test_noise_checks_have_power() -> None:
    """The same checks reject noise 2 % too large, a shifted mean, and non-Gaussian noise of the right std."""
    z = SeededRandomSource(5).standard_normal(N)
    std = SIGMA * CLIP
    assert noise_failures(z * std, std) == []
    assert ks_distance(z[:20_000] * std, std) == pytest.approx(stats.kstest(z[:20_000], "norm").statistic, rel=1e-9)
    assert any("variance" in f for f in noise_failures(z * std * 1.02, std))
    assert any("mean" in f for f in noise_failures(z * std + 0.01 * std, std))
    laplace = np.random.default_rng(6).laplace(scale=std / math.sqrt(2), size=N)  # same variance
    assert any("KS" in f or "4σ" in f for f in noise_failures(laplace, std))


@pytest.mark.parametrize(("sigma", "clip"), [(0.5, 1.0), (1.3, 0.1), (4.0, 2.5)])
@pytest.mark.parametrize("name", ["secure", "seeded"])
def test_gaussian_noise_std_is_sigma_times_clip(name: str, sigma: float, clip: float) -> None:
    n = 200_000
    noise = gaussian_noise(_source(name), n, sigma * clip)
    assert noise.shape == (n,) and noise.dtype == np.float32
    ratio = float(np.std(noise, dtype=np.float64)) / (sigma * clip)
    assert abs(ratio - 1) < 5 * math.sqrt(1 / (2 * n))  # ~0.8 %


def test_gaussian_noise_zero_std_and_bad_arguments() -> None:
    src = SeededRandomSource(0)
    out = gaussian_noise(src, 7, 0.0)
    assert out.dtype == np.float32 and out.shape == (7,) and not out.any()
    assert gaussian_noise(src, 0, 1.0).shape == (0,)
    for std in (-1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="std"):
            gaussian_noise(src, 3, std)
    with pytest.raises(ValueError, match="size"):
        gaussian_noise(src, -1, 1.0)


@pytest.mark.parametrize("name", ["secure", "seeded"])
def test_uniforms_lie_in_unit_interval_with_right_moments(name: str) -> None:
    u = _source(name).uniform(N)
    assert u.dtype == np.float64 and u.shape == (N,)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / N)
    assert abs(u.var() - 1 / 12) < 5 * math.sqrt(1 / 180 / N)  # Var of (U - 1/2)² is 1/180
    assert stats.kstest(u, "uniform").pvalue > 1e-6


def test_secure_uniforms_are_on_the_53_bit_grid() -> None:
    u = SecureRandomSource().uniform(10_000)
    scaled = u * 2.0**53
    assert np.array_equal(scaled, np.floor(scaled))
    edges = uniforms_from_bytes(b"\x00" * 8 + b"\xff" * 8)
    assert edges[0] == 0.0 and edges[1] == 1.0 - 2.0**-53


def test_box_muller_never_takes_log_of_zero() -> None:
    u = np.array([0.0, 1.0 - 2.0**-53, 0.25, 0.0])  # u1 = (0, 1 - 2⁻⁵³), u2 = (0.25, 0)
    z = box_muller(u)
    assert np.all(np.isfinite(z))
    assert z[0] == pytest.approx(0.0, abs=1e-15)  # u1 = 0 → radius 0
    assert z[3] == 0.0  # sin(0)
    assert z[1] == pytest.approx(math.sqrt(2 * 53 * math.log(2)))  # largest radius, cos(0)


@pytest.mark.parametrize("name", ["secure", "seeded"])
def test_normal_pairs_are_uncorrelated(name: str) -> None:
    z = _source(name).standard_normal(N)
    half = N // 2
    bound = 5 / math.sqrt(half)
    for a, b in [(z[:half], z[half:]), (z[:-1], z[1:]), (z[:half] ** 2, z[half:] ** 2)]:
        assert abs(np.corrcoef(a, b)[0, 1]) < bound


def test_odd_and_zero_sizes() -> None:
    for src in (SecureRandomSource(), SeededRandomSource(1)):
        assert src.standard_normal(3).shape == (3,)
        assert src.standard_normal(0).shape == (0,)
        assert src.uniform(0).dtype == np.float64
        with pytest.raises(ValueError, match="size"):
            src.uniform(-2)
        with pytest.raises(ValueError, match="size"):
            src.standard_normal(2.0)  # type: ignore[arg-type]


def test_two_secure_draws_differ() -> None:
    src = SecureRandomSource()
    assert not np.array_equal(src.uniform(1000), src.uniform(1000))
    assert not np.array_equal(src.standard_normal(1000), src.standard_normal(1000))
    assert not np.array_equal(SecureRandomSource().standard_normal(1000), SecureRandomSource().standard_normal(1000))


def test_seeded_source_is_reproducible() -> None:
    a, b, c = SeededRandomSource(42), SeededRandomSource(42), SeededRandomSource(43)
    assert np.array_equal(a.standard_normal(100), b.standard_normal(100))
    assert np.array_equal(a.uniform(100), b.uniform(100))
    assert not np.array_equal(SeededRandomSource(42).uniform(100), c.uniform(100))
    first, second = gaussian_noise(SeededRandomSource(7), 50, 2.0), gaussian_noise(SeededRandomSource(7), 50, 2.0)
    assert np.array_equal(first, second)


def test_secure_flags_and_names() -> None:
    secure, seeded = make_random_source("secure"), make_random_source("seeded", seed=3)
    assert isinstance(secure, SecureRandomSource) and secure.secure is True and secure.name == "secure"
    assert isinstance(seeded, SeededRandomSource) and seeded.secure is False and seeded.name == "seeded"
    assert isinstance(secure, RandomSource) and isinstance(seeded, RandomSource)


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match=r"known: \['secure', 'seeded'\]"):
        make_random_source("numpy")
    with pytest.raises(ValueError, match="cannot be seeded"):
        make_random_source("secure", seed=1)
    with pytest.raises(ValueError, match="needs a seed"):
        make_random_source("seeded")
    with pytest.raises(ValueError, match="seed"):
        SeededRandomSource(-1)
