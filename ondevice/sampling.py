"""Poisson sampling of a device's examples: the scheme the local accountant assumes.

Each example joins a step's batch independently with probability q, so the batch size is
Bin(n, q) and varies from step to step (possibly 0). Shuffled fixed-size batches must not be
substituted: accounted as Poisson they overstate privacy (Chua et al. 2024; Annamalai et al. 2024).
"""

from __future__ import annotations

import math

import numpy as np

from ondevice.randomness import RandomSource


def poisson_sample(num_examples: int, rate: float, source: RandomSource) -> np.ndarray:
    """Indices of the included examples, int64 ascending [k]; each included with probability ``rate``.

    One uniform u_i per example, included iff u_i < rate (exact for 53-bit uniforms up to 2⁻⁵³).
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer) or num_examples < 0:
        raise ValueError(f"num_examples must be an int >= 0, found {num_examples!r}")
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int | float | np.floating)
        or not math.isfinite(rate)
        or not 0 < rate <= 1
    ):
        raise ValueError(f"rate must be a number in (0, 1], found {rate!r}")
    u = source.uniform(int(num_examples))  # [n]
    return np.flatnonzero(u < rate).astype(np.int64)  # [k], ascending
