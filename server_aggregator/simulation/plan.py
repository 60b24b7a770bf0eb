"""Planning mode: for a population and an ε target, the z, q, rounds and expected cohort the accountant allows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from server_aggregator.synthetic.dp_sgd import PrivacyPlanError, calibrate_noise_multiplier


@dataclass(frozen=True)
class FederatedPlanRow:
    """One candidate: expected cohort K = q·N, rounds T, the calibrated z and the noise on the mean."""

    expected_cohort: float
    sampling_rate: float
    rounds: int
    noise_multiplier: float
    noise_std_on_mean: float  # z·S/(q·N) per coordinate
    noise_norm_on_mean: float  # z·S/(q·N)·√P: expected norm of the noise on the mean update

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def federated_plan_row(
    population: int,
    expected_cohort: float,
    rounds: int,
    epsilon: float,
    delta: float,
    clip_norm: float,
    num_params: int,
) -> FederatedPlanRow:
    """z for (q = K/N, T rounds) at (ε, δ) with PLD (``calibrate_noise_multiplier``, the synth planner's)."""
    if not 0 < expected_cohort <= population:
        raise ValueError(f"expected cohort must be in (0, {population}], found {expected_cohort!r}")
    q = expected_cohort / population
    z = calibrate_noise_multiplier(epsilon, delta, q, rounds)
    std = z * clip_norm / expected_cohort
    return FederatedPlanRow(expected_cohort, q, rounds, z, std, std * num_params**0.5)


def federated_plan(
    population: int,
    cohorts: Sequence[float],
    rounds: Sequence[int],
    epsilon: float,
    delta: float,
    clip_norm: float,
    num_params: int,
) -> list[FederatedPlanRow]:
    """Every (cohort, rounds) pair that fits the population, calibrated; PrivacyPlanError if none does."""
    rows = []
    for cohort in cohorts:
        if cohort > population:
            continue
        for count in rounds:
            rows.append(federated_plan_row(population, cohort, count, epsilon, delta, clip_norm, num_params))
    if not rows:
        raise PrivacyPlanError(f"no candidate cohort fits a population of {population}")
    return rows


def format_plan(
    rows: Sequence[FederatedPlanRow], population: int, epsilon: float, delta: float, clip_norm: float
) -> str:
    lines = [
        f"population N={population}, target epsilon={epsilon:g} at delta={delta:g} (user-level, PLD), "
        f"clip S={clip_norm:g}",
        f"{'cohort q*N':>10} {'q':>8} {'rounds':>6} {'z':>7} {'noise std/mean':>14} {'noise norm/mean':>15}",
    ]
    for r in rows:
        lines.append(
            f"{r.expected_cohort:>10g} {r.sampling_rate:>8.4f} {r.rounds:>6d} {r.noise_multiplier:>7.3f} "
            f"{r.noise_std_on_mean:>14.3g} {r.noise_norm_on_mean:>15.3g}"
        )
    lines.append("noise norm/mean = z*S/(q*N)*sqrt(P): compare it with S, the largest a mean update can be.")
    return "\n".join(lines)
