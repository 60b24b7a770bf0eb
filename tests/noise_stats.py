"""DESIGN.md's statistical checks for Gaussian noise over 10⁶ coordinates (each at α = 1e-6), shared by tests."""

from __future__ import annotations

import math

import numpy as np

N = 1_000_000
_ERF = np.frompyfunc(math.erf, 1, 1)


def normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _ERF(x / math.sqrt(2.0)).astype(np.float64))


def ks_distance(x: np.ndarray, std: float) -> float:
    """sup |F_n − Φ(·/std)|, from the sorted sample (the KS statistic; no p-value needed)."""
    cdf = normal_cdf(np.sort(x) / std)  # [n]
    n = x.shape[0]
    return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


def noise_failures(x: np.ndarray, std: float) -> list[str]:
    """Which checks a sample of N(0, std²) of size 10⁶ fails; [] when all pass."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.shape != (N,):
        return [f"need exactly {N} draws, found {x.shape}"]
    failures = []
    ratio = float(np.var(x)) / std**2
    if not 0.9931 <= ratio <= 1.0069:
        failures.append(f"variance ratio {ratio:.5f} outside [0.9931, 1.0069]")
    mean = float(np.mean(x))
    if abs(mean) >= 4.89 * std / math.sqrt(N):
        failures.append(f"|mean| {abs(mean):.3g} >= 4.89·std/√n")
    ks = ks_distance(x, std)
    if ks >= 2.7e-3:
        failures.append(f"KS distance {ks:.3g} >= 2.7e-3")
    tails = int(np.count_nonzero(np.abs(x) > 4 * std))
    if not 29 <= tails <= 106:
        failures.append(f"{tails} draws beyond 4σ, expected 29..106")
    return failures
