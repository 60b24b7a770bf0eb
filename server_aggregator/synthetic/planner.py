"""DP-SGD planning by the noise-to-batch ratio: for a compute budget, which batch size, steps and σ.

Under DP-SGD the averaged gradient of a step carries noise of std σ·C/B per coordinate next to a
signal of norm ≤ C, so what decides whether a model learns is σ/B (McKenna et al. 2025; Li et al.
2022): large Poisson batches with σ calibrated for the whole run, not many small noisy steps. A
budget of G example-gradients (the compute we can afford) buys T = G / B steps at batch B; for each
candidate B the planner calibrates σ with PLD so that T Poisson-sampled Gaussian steps at q = B/n
meet (ε, δ), and reports σ/B and epochs. The recommended row is the one with the smallest σ/B
among those that still take at least ``min_steps`` steps (an optimiser needs some steps to move).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from server_aggregator.synthetic.dp_sgd import (
    DpSgdPlan,
    PrivacyPlanError,
    calibrate_noise_multiplier,
)

DEFAULT_BATCH_SIZES: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
DEFAULT_MIN_STEPS = 50


@dataclass(frozen=True)
class PlanRow:
    """One candidate schedule: batch B, steps T = budget // B, calibrated σ, and what follows."""

    expected_batch_size: int
    steps: int
    noise_multiplier: float
    sampling_rate: float
    epochs: float

    @property
    def noise_to_batch(self) -> float:
        """σ/B: the noise std per coordinate of the averaged gradient, in units of the clip norm."""
        return self.noise_multiplier / self.expected_batch_size

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "noise_to_batch": self.noise_to_batch}


@dataclass(frozen=True)
class PlanRequest:
    """What to plan for: data size, privacy target and the compute budget in example-gradients."""

    num_examples: int
    epsilon: float
    delta: float
    budget_example_gradients: int
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    min_steps: int = DEFAULT_MIN_STEPS
    clip_norm: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.num_examples, bool) or not isinstance(self.num_examples, int) or self.num_examples < 1:
            raise ValueError(f"num_examples must be an int >= 1, found {self.num_examples!r}")
        if not isinstance(self.epsilon, int | float) or not math.isfinite(self.epsilon) or self.epsilon <= 0:
            raise ValueError(f"epsilon must be a finite number > 0, found {self.epsilon!r}")
        if not isinstance(self.delta, int | float) or not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), found {self.delta!r}")
        if not isinstance(self.budget_example_gradients, int) or self.budget_example_gradients < 1:
            raise ValueError(
                f"budget_example_gradients must be an int >= 1, found {self.budget_example_gradients!r}"
            )
        if not self.batch_sizes or any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be ints >= 1, found {self.batch_sizes!r}")
        if not isinstance(self.min_steps, int) or self.min_steps < 1:
            raise ValueError(f"min_steps must be an int >= 1, found {self.min_steps!r}")
        if not math.isfinite(self.clip_norm) or self.clip_norm <= 0:
            raise ValueError(f"clip_norm must be a finite number > 0, found {self.clip_norm!r}")


@dataclass(frozen=True)
class PlanTable:
    request: PlanRequest
    rows: tuple[PlanRow, ...]
    recommended: int
    """Index into ``rows`` of the recommended schedule."""

    def recommended_plan(self) -> DpSgdPlan:
        row = self.rows[self.recommended]
        r = self.request
        return DpSgdPlan(
            r.num_examples, row.expected_batch_size, row.steps, row.noise_multiplier, r.clip_norm, r.delta, r.epsilon
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": asdict(self.request),
            "rows": [row.to_dict() for row in self.rows],
            "recommended": self.recommended,
        }


def plan_row(request: PlanRequest, batch: int) -> PlanRow | None:
    """The calibrated schedule at expected batch ``batch`` (None when the budget buys no step)."""
    batch = min(batch, request.num_examples)
    steps = request.budget_example_gradients // batch
    if steps < 1:
        return None
    q = batch / request.num_examples
    sigma = calibrate_noise_multiplier(request.epsilon, request.delta, q, steps)
    return PlanRow(batch, steps, sigma, q, steps * batch / request.num_examples)


def plan_table(request: PlanRequest) -> PlanTable:
    """Every candidate batch size's schedule and the recommended one (smallest σ/B with T ≥ min_steps)."""
    rows: list[PlanRow] = []
    for batch in sorted(set(request.batch_sizes)):
        row = plan_row(request, batch)
        if row is not None and all(r.expected_batch_size != row.expected_batch_size for r in rows):
            rows.append(row)
    if not rows:
        raise PrivacyPlanError(
            f"a budget of {request.budget_example_gradients} example-gradients buys no step at any batch size "
            f"in {request.batch_sizes}; raise --budget-example-gradients"
        )
    eligible = [i for i, r in enumerate(rows) if r.steps >= request.min_steps]
    pool = eligible or [max(range(len(rows)), key=lambda i: rows[i].steps)]
    best = min(pool, key=lambda i: rows[i].noise_to_batch)
    return PlanTable(request, tuple(rows), best)


def format_table(table: PlanTable, marks: Sequence[str] = ("*", " ")) -> str:
    """A fixed-width text table of the candidates, the recommended one marked."""
    r = table.request
    lines = [
        f"n={r.num_examples}  epsilon={r.epsilon:g}  delta={r.delta:g}  budget={r.budget_example_gradients} "
        f"example-gradients  clip={r.clip_norm:g}  (PLD, Poisson sampling, add/remove-one)",
        f"  {'batch':>6} {'steps':>7} {'q':>9} {'sigma':>9} {'sigma/B':>10} {'epochs':>7}",
    ]
    for i, row in enumerate(table.rows):
        mark = marks[0] if i == table.recommended else marks[1]
        lines.append(
            f"{mark} {row.expected_batch_size:>6} {row.steps:>7} {row.sampling_rate:>9.4g} "
            f"{row.noise_multiplier:>9.4g} {row.noise_to_batch:>10.3e} {row.epochs:>7.2f}"
        )
    lines.append(f"* recommended: smallest sigma/B with at least {r.min_steps} steps")
    return "\n".join(lines)
