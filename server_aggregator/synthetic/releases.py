"""The synth run's privacy ledger: every DP release that touched the seed set, composed by the accountant.

A model trained in two private stages (e.g. a DP generator whose synthetic text warm-starts the
classifier, then DP-SGD of the classifier on the real seed set) is one mechanism on one data set:
its ε is the composition of both stages' events, not either alone, and not their sum (PLD
composes tighter). Each stage is a ``Release`` holding its Poisson-sampled Gaussian steps; the
ledger composes them with the same PLD / RDP accountants the phones use. ``calibrate_last``
fits the noise of a final stage so that the composed ε meets a total target.

Baselines and the ε values of a sweep trained on the same seed set are separate releases too:
``run_epsilon`` of a ledger of everything a run trained tells what the whole run spent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant

from ondevice.accounting import PldAccountant, RdpAccountant, StepEvent
from server_aggregator.synthetic.dp_sgd import DpSgdPlan, PrivacyPlanError

_SEARCH_INTERVAL = 1e-3  # PLD grid while searching σ (pessimistic); the result is re-checked adaptively


@dataclass(frozen=True)
class Release:
    """One DP stage on the seed set: a name, what it trained, and its Poisson-Gaussian steps."""

    name: str
    description: str
    steps: tuple[StepEvent, ...]
    clip_norm: float
    expected_batch_size: int

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a release needs a non-empty name, found {self.name!r}")
        if not self.steps:
            raise ValueError(f"release {self.name!r} has no steps")

    @classmethod
    def from_plan(cls, name: str, description: str, plan: DpSgdPlan) -> Release:
        return cls(name, description, tuple(plan.step_events()), plan.clip_norm, plan.expected_batch_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "mechanism": "Poisson-sampled Gaussian (DP-SGD), add/remove-one example",
            "clip_norm": self.clip_norm,
            "expected_batch_size": self.expected_batch_size,
            "steps": [
                {"sampling_rate": s.sampling_rate, "noise_multiplier": s.noise_multiplier, "count": s.count}
                for s in self.steps
            ],
        }


def composed_epsilon(releases: Sequence[Release], delta: float) -> dict[str, float]:
    """ε of all ``releases`` composed, at ``delta``: PLD (primary) and RDP (cross-check, ≥ PLD)."""
    steps = [s for r in releases for s in r.steps]
    return {"pld": PldAccountant().epsilon(steps, delta), "rdp": RdpAccountant().epsilon(steps, delta)}


def ledger_dict(releases: Sequence[Release], delta: float) -> dict[str, Any]:
    """What a card records: every release, and their composition (the model's ε)."""
    return {
        "delta": delta,
        "releases": [r.to_dict() for r in releases],
        "composed_epsilon": composed_epsilon(releases, delta),
        "composition": "all releases compose (PLD over the union of their steps; RDP cross-check)",
    }


def _search_epsilon(prior: Sequence[StepEvent], q: float, sigma: float, steps: int, delta: float) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=_SEARCH_INTERVAL)
    events: list[dp_accounting.DpEvent] = [
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(s.sampling_rate, dp_accounting.GaussianDpEvent(s.noise_multiplier)),
            s.count,
        )
        for s in prior
    ]
    events.append(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
        )
    )
    accountant.compose(dp_accounting.ComposedDpEvent(events))
    return float(accountant.get_epsilon(delta))


def calibrate_last(
    prior: Sequence[Release],
    *,
    total_epsilon: float,
    delta: float,
    num_examples: int,
    expected_batch_size: int,
    steps: int,
    clip_norm: float,
    tolerance: float = 1e-3,
) -> DpSgdPlan:
    """The plan of a final stage whose σ makes ``prior`` + this stage compose to ≤ ``total_epsilon``."""
    if not math.isfinite(total_epsilon) or total_epsilon <= 0:
        raise ValueError(f"total_epsilon must be a finite number > 0, found {total_epsilon!r}")
    prior_steps = [s for r in prior for s in r.steps]
    batch = min(expected_batch_size, num_examples)
    q = batch / num_examples
    spent = PldAccountant().epsilon(prior_steps, delta) if prior_steps else 0.0
    if spent >= total_epsilon:
        raise PrivacyPlanError(
            f"the earlier releases already spend epsilon={spent:.4g} of the total {total_epsilon:g}; "
            "give the earlier stages a smaller share"
        )
    low, high = 0.05, 1.0
    while _search_epsilon(prior_steps, q, high, steps, delta) > total_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise PrivacyPlanError(f"no noise multiplier up to 1e4 fits the total epsilon={total_epsilon:g}")
    while high - low > tolerance:
        mid = 0.5 * (low + high)
        if _search_epsilon(prior_steps, q, mid, steps, delta) > total_epsilon:
            low = mid
        else:
            high = mid
    plan = DpSgdPlan(num_examples, batch, steps, high, clip_norm, delta, total_epsilon)
    for _ in range(50):
        if PldAccountant().epsilon([*prior_steps, *plan.step_events()], delta) <= total_epsilon:
            return plan
        plan = DpSgdPlan(num_examples, batch, steps, plan.noise_multiplier * 1.002, clip_norm, delta, total_epsilon)
    raise PrivacyPlanError(f"could not fit total epsilon={total_epsilon}")  # pragma: no cover
