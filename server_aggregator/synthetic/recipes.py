"""The private classifier recipes built on frozen embeddings, and the model card they share.

- ``probe``: DP label counts → balanced class weights, then the DP linear probe (``probe.py``) on
  frozen MiniLM embeddings of the real seed set. Two releases, composed.
- ``warm_start``: the classifier trained on DP synthetic text (its LoRA encoder and head), then the
  DP probe of its head on the real seed set through that encoder. Three releases (generator, label
  counts, probe), composed to the target ε by calibrating the last one (``releases.calibrate_last``).
- ``synthetic_relabelled``: the DP synthetic texts, each labelled by a DP probe of the real seed set
  (frozen MiniLM), then a classifier trained on them only. The same three releases, composed to ε.

Every card lists each release that produced the model and their composition (PLD, RDP cross-check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ondevice.accounting import StepEvent
from ondevice.randomness import RandomSource
from server_aggregator.synthetic.config import ProbeRecipe
from server_aggregator.synthetic.probe import (
    ProbeResult,
    ProbeTraining,
    balanced_class_weights,
    noisy_label_counts,
    train_dp_probe,
)
from server_aggregator.synthetic.releases import Release, calibrate_last, ledger_dict

CARD_FORMAT = "privtune-synthetic-classifier-card"
CARD_VERSION = 2


def label_count_release(recipe: ProbeRecipe, num_examples: int) -> Release:
    """The Gaussian mechanism on the label histogram: one un-sampled Gaussian step (q = 1, σ = std / 1)."""
    return Release(
        name="label-counts",
        description="label histogram of the seed set + N(0, std²) per label (L2 sensitivity 1): class weights",
        steps=(StepEvent(1.0, recipe.count_noise_std, 1),),
        clip_norm=1.0,
        expected_batch_size=num_examples,
    )


@dataclass(frozen=True)
class ProbeRelease:
    result: ProbeResult
    releases: tuple[Release, ...]
    class_weights: list[float] | None
    noise_multiplier: float


def train_probe_release(
    x: np.ndarray,
    y: np.ndarray,
    num_labels: int,
    recipe: ProbeRecipe,
    *,
    prior: Sequence[Release],
    total_epsilon: float,
    delta: float,
    init: tuple[np.ndarray, np.ndarray],
    random_source: RandomSource,
    on_step: Callable[[int, float, int], None] | None = None,
) -> ProbeRelease:
    """Label counts (if balanced) and the probe, σ calibrated so ``prior`` + these compose to ``total_epsilon``."""
    n = len(y)
    releases = list(prior)
    weights: np.ndarray | None = None
    if recipe.balanced:
        releases.append(label_count_release(recipe, n))
        weights = balanced_class_weights(noisy_label_counts(y, num_labels, recipe.count_noise_std, random_source))
    plan = calibrate_last(
        releases,
        total_epsilon=total_epsilon,
        delta=delta,
        num_examples=n,
        expected_batch_size=recipe.expected_batch_size,
        steps=recipe.steps,
        clip_norm=recipe.clip_norm,
    )
    settings = ProbeTraining(learning_rate=recipe.learning_rate)
    result = train_dp_probe(x, y, plan, settings, random_source, init=init, class_weights=weights, on_step=on_step)
    description = "DP-SGD of the classifier head (softmax regression) on frozen encoder embeddings" + (
        ", class-weighted" if weights is not None else ""
    )
    releases.append(Release.from_plan("probe", description, plan))
    return ProbeRelease(
        result,
        tuple(releases),
        None if weights is None else [float(w) for w in weights],
        plan.noise_multiplier,
    )


def build_card(
    *,
    model: str,
    description: str,
    releases: Sequence[Release],
    delta: float,
    target_epsilon: float,
    noise_source: str,
    data: dict[str, Any],
    metrics: dict[str, Any],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The model card: what the model is, every DP release behind it and their composed ε, data, metrics."""
    ledger = ledger_dict(releases, delta)
    eps = ledger["composed_epsilon"]
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "model": model,
        "description": description,
        "privacy": {
            "guarantee": "example-level (ε, δ)-DP of the central seed set: every release below composed; "
            "sampling text from a DP generator and training on it are post-processing",
            "neighbouring_relation": "add/remove one example",
            "epsilon": eps["pld"],
            "epsilon_rdp": eps["rdp"],
            "target_epsilon": target_epsilon,
            "delta": delta,
            "accountant": "PLD (dp_accounting, adaptive grid), RDP cross-check",
            "noise_source": noise_source,
            "ledger": ledger,
            "not_covered": "the test-split metrics below and the baselines in evaluation.json are evaluations "
            "and separately trained models; a sweep's other ε values are separate releases on the same seed set "
            "(see evaluation.json: run_ledger for what the whole run spent)",
        },
        "data": data,
        "settings": settings,
        "metrics": metrics,
    }
