"""White-box one-run privacy audit of a clip-sum-noise step (Steinke, Nasr & Jagielski 2023).

m Dirac canaries (canary i is a gradient of size ``canary_scale·C`` on coordinate i only) are
each included in one step by an independent fair coin. The mechanism under audit returns its
noised sum; the auditor scores canary i by coordinate i of the output, guesses "included" for
the ``guesses/2`` highest scores and "excluded" for the lowest, and counts correct guesses W.
If the step were ε-DP, W could exceed Binomial(r, e^ε / (1 + e^ε)) only with small
probability; the largest ε rejected at the given confidence is the audit's lower bound
ε_lower. A claimed ε below ε_lower is a bug (clipping removed, noise too small...).

This is the pure-ε form of the bound (δ's small additive term is ignored, as in the paper's
experiments), so compare ε_lower with the claimed ε at a small δ. One run with a few thousand
canaries gives a loose but useful bound: it catches gross errors (noise 4× too small, no
clipping), not subtle ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ondevice.randomness import RandomSource

StepMechanism = Callable[[np.ndarray, float, float], np.ndarray]
"""(per-example gradients [B, P], clip norm C, noise std σ·C) → the step's noised sum [P]."""


@dataclass(frozen=True)
class AuditResult:
    """Outcome of one audit run."""

    num_canaries: int
    guesses: int
    correct: int
    epsilon_lower: float
    confidence: float


def _binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P[Binomial(n, p) ≥ k], summed in log space (exact enough for n up to ~10⁵)."""
    if k <= 0:
        return 1.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def epsilon_lower_bound(correct: int, guesses: int, confidence: float = 0.95) -> float:
    """Largest ε for which ``correct`` of ``guesses`` right answers has probability ≤ 1 − confidence
    under Binomial(guesses, e^ε/(1+e^ε)); 0 when even ε = 0 is not rejected."""
    if not 0 <= correct <= guesses or guesses < 1:
        raise ValueError(f"need 0 <= correct <= guesses and guesses >= 1, found {correct} of {guesses}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), found {confidence!r}")
    alpha = 1 - confidence

    def tail(eps: float) -> float:  # P[Bin(r, p_ε) ≥ correct]
        return _binomial_upper_tail(correct, guesses, 1 / (1 + math.exp(-eps)))

    if tail(0.0) > alpha:
        return 0.0
    low, high = 0.0, 1.0
    while tail(high) <= alpha and high < 100:
        low, high = high, high * 2
    for _ in range(60):  # tail(ε) increases with ε; find where it crosses α
        mid = (low + high) / 2
        if tail(mid) <= alpha:
            low = mid
        else:
            high = mid
    return low


def run_canary_audit(
    mechanism: StepMechanism,
    *,
    num_canaries: int,
    guesses: int,
    clip_norm: float,
    noise_multiplier: float,
    source: RandomSource,
    canary_scale: float = 10.0,
    confidence: float = 0.95,
) -> AuditResult:
    """Audit one step of ``mechanism`` with Dirac canaries; see the module docstring."""
    if guesses < 2 or guesses > num_canaries or guesses % 2:
        raise ValueError(f"guesses must be an even number in 2..num_canaries, found {guesses}")
    included = source.uniform(num_canaries) < 0.5  # [m] fair coins
    rows = np.flatnonzero(included)
    per_example = np.zeros((rows.size, num_canaries), dtype=np.float32)  # [B, P], P = m coordinates
    per_example[np.arange(rows.size), rows] = canary_scale * clip_norm
    output = np.asarray(mechanism(per_example, clip_norm, noise_multiplier * clip_norm), dtype=np.float64)  # [P]
    order = np.argsort(output, kind="stable")
    half = guesses // 2
    correct = int(included[order[-half:]].sum()) + int((~included[order[:half]]).sum())
    return AuditResult(
        num_canaries=num_canaries,
        guesses=guesses,
        correct=correct,
        epsilon_lower=epsilon_lower_bound(correct, guesses, confidence),
        confidence=confidence,
    )
