"""The one-run canary audit passes the device's real clip-sum-noise arithmetic and catches broken ones."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest

from ondevice.audit import epsilon_lower_bound, run_canary_audit
from ondevice.dp_math import clip_and_sum
from ondevice.protocol import TensorSpec
from ondevice.randomness import RandomSource, SecureRandomSource, SeededRandomSource, gaussian_noise
from ondevice.train_backends import noised_gradient

CANARIES, GUESSES, CLIP, SIGMA, DELTA = 4000, 600, 1.0, 1.0, 1e-5


def claimed_epsilon(sigma: float) -> float:
    """ε of one unsampled Gaussian step (sensitivity C, noise σC) — what the device would claim."""
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    return float(accountant.compose(dp_accounting.GaussianDpEvent(sigma)).get_epsilon(DELTA))


def device_mechanism(source: RandomSource, noise_factor: float = 1.0, clip: bool = True):  # type: ignore[no-untyped-def]
    """The ExecuTorch host path: clip_and_sum → noised_gradient with gaussian_noise (optionally broken)."""

    def step(per_example: np.ndarray, clip_norm: float, std: float) -> np.ndarray:
        spec = (TensorSpec("w", (per_example.shape[1],)),)
        summed = clip_and_sum({"w": per_example}, clip_norm if clip else 1e30)
        noise = gaussian_noise(source, per_example.shape[1], std * noise_factor)
        return noised_gradient(summed, noise, spec, 1.0)["w"]

    return step


def audit(mechanism, seed: int) -> float:  # type: ignore[no-untyped-def]
    return run_canary_audit(
        mechanism,
        num_canaries=CANARIES,
        guesses=GUESSES,
        clip_norm=CLIP,
        noise_multiplier=SIGMA,
        source=SeededRandomSource(seed),
    ).epsilon_lower


def test_the_real_mechanism_stays_below_its_claimed_epsilon() -> None:
    claimed = claimed_epsilon(SIGMA)
    for seed in range(3):
        assert audit(device_mechanism(SecureRandomSource()), seed) <= claimed
        assert audit(device_mechanism(SeededRandomSource(100 + seed)), seed) <= claimed


@pytest.mark.parametrize(("noise_factor", "clip"), [(0.25, True), (1.0, False)], ids=["noise-4x-too-small", "no-clip"])
def test_broken_mechanisms_are_caught(noise_factor: float, clip: bool) -> None:
    claimed = claimed_epsilon(SIGMA)
    found = audit(device_mechanism(SeededRandomSource(7), noise_factor, clip), seed=1)
    assert found > claimed, f"audit ε_lower {found:.2f} did not beat the claimed {claimed:.2f}"


def test_binomial_tail_matches_scipy() -> None:
    from scipy import stats

    from ondevice.audit import _binomial_upper_tail

    for k, n, p in ((0, 10, 0.3), (5, 10, 0.5), (590, 600, 0.97), (400, 600, 0.5), (600, 600, 0.99)):
        assert _binomial_upper_tail(k, n, p) == pytest.approx(float(stats.binom.sf(k - 1, n, p)), rel=1e-9, abs=1e-300)


def test_epsilon_lower_bound_edges() -> None:
    assert epsilon_lower_bound(300, 600) == 0.0  # chance level proves nothing
    all_right = epsilon_lower_bound(600, 600, 0.95)
    p = 1 / (1 + np.exp(-all_right))
    assert p**600 == pytest.approx(0.05, rel=1e-6)  # P[all correct] = α at the bound
    with pytest.raises(ValueError, match="correct"):
        epsilon_lower_bound(7, 5)
