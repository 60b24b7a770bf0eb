"""Training and evaluating the safety classifier (LoRA + head) on labelled text.

Three uses in the synthetic-data stage: on the synthetic texts (non-private: the texts already
carry the generator's guarantee), on the real train split (the non-private reference), and with
DP-SGD directly on the real train split at the same ε (the baseline the DP-synthetic-data work
compares against). Metrics are computed on the real test split only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from export.classifier import Classifier
from ondevice.data import LabelledTexts
from ondevice.randomness import RandomSource
from server_aggregator.synthetic.classifier_cache import (
    LowerCache,
    TopClassifier,
    cached_per_example_loss,
    freeze_lower_lora,
)
from server_aggregator.synthetic.dp_sgd import Checkpointing, DpSgdPlan, DpTrainingResult, train_dp_sgd


@dataclass(frozen=True)
class ClassifierTraining:
    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    max_steps: int | None = None
    """Stop after this many steps even if ``epochs`` are not done (None: no cap)."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.epochs) or self.epochs <= 0:
            raise ValueError(f"epochs must be a finite number > 0, found {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, found {self.batch_size!r}")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be a finite number > 0, found {self.learning_rate!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"max_steps must be None or an int >= 1, found {self.max_steps!r}")

    def steps_for(self, num_examples: int) -> int:
        """Mini-batch steps for ``epochs`` over ``num_examples``, capped at ``max_steps``."""
        steps = max(1, math.ceil(self.epochs * num_examples / self.batch_size))
        return steps if self.max_steps is None else min(steps, self.max_steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_example_classifier_loss(
    clf: Classifier, data: LabelledTexts
) -> Callable[[nn.Module, Sequence[int]], torch.Tensor]:
    """(model, indices) → cross-entropy of each indexed example [b]."""

    def loss(model: nn.Module, indices: Sequence[int]) -> torch.Tensor:
        batch = clf.encode([data.texts[i] for i in indices])
        logits = model(batch["input_ids"], batch["attention_mask"])  # [b, L]
        targets = torch.tensor([data.labels[i] for i in indices], dtype=torch.long)  # [b]
        return nn.functional.cross_entropy(logits, targets, reduction="none")  # [b]

    return loss


def train_classifier(
    clf: Classifier,
    data: LabelledTexts,
    settings: ClassifierTraining,
    *,
    on_step: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Plain (non-private) AdamW on LoRA + head over shuffled mini-batches; returns per-step losses."""
    _check_labels(clf, data)
    params = list(clf.trainable_parameters().values())
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    loss_fn = per_example_classifier_loss(clf, data)
    rng = np.random.default_rng(settings.seed)
    steps = settings.steps_for(len(data))
    order: list[int] = []
    losses: list[float] = []
    clf.model.train()
    for step in range(steps):
        if len(order) < settings.batch_size:
            order.extend(int(i) for i in rng.permutation(len(data)))
        indices, order = order[: settings.batch_size], order[settings.batch_size :]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(clf.model, indices).mean()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, steps, losses[-1])
    clf.model.eval()
    return losses


def train_classifier_dp(
    clf: Classifier,
    data: LabelledTexts,
    plan: DpSgdPlan,
    *,
    learning_rate: float,
    random_source: RandomSource,
    on_step: Callable[[int, float, int], None] | None = None,
    micro_batch_size: int | None = None,
    checkpointing: Checkpointing | None = None,
    top_layers: int | None = None,
    optimizer: str = "adamw",
    lr_schedule: str = "constant",
    train_head: bool = True,
) -> DpTrainingResult:
    """DP-SGD (Poisson sampling, per-example clipping, secure noise) on the classifier's LoRA + head.

    Large Poisson batches run in length-sorted micro-batches of ≤ ``micro_batch_size`` (less padding).
    ``top_layers`` = k: LoRA is trained in the top k encoder layers only (the rest stays as it is),
    and the layers below run once per example (``classifier_cache``): the same mechanism, cheaper steps.
    ``train_head=False`` keeps the head as it is (e.g. a DP probe's) and trains LoRA alone."""
    _check_labels(clf, data)
    if plan.num_examples != len(data):
        raise ValueError(f"the plan is for {plan.num_examples} examples but the data has {len(data)}")
    model: nn.Module = clf.model
    loss_fn = per_example_classifier_loss(clf, data)
    frozen: list[nn.Parameter] = []
    if not train_head:
        frozen = [p for p in clf.model.head.parameters() if p.requires_grad]
        for param in frozen:
            param.requires_grad_(False)
    if top_layers is not None:
        frozen += freeze_lower_lora(clf, top_layers)
        top = TopClassifier(clf, top_layers)
        model = top
        loss_fn = cached_per_example_loss(LowerCache(clf, data.texts, top.lower_layers), data)
    params = list(clf.trainable_parameters().values())
    try:
        result = train_dp_sgd(
            model,
            params,
            loss_fn,
            plan,
            learning_rate=learning_rate,
            random_source=random_source,
            on_step=on_step,
            micro_batch_size=micro_batch_size,
            sort_key=lambda i: len(data.texts[i]),
            checkpointing=checkpointing,
            optimizer=optimizer,
            lr_schedule=lr_schedule,
        )
    finally:
        for param in frozen:
            param.requires_grad_(True)
    clf.model.eval()
    return result


def _check_labels(clf: Classifier, data: LabelledTexts) -> None:
    if tuple(clf.spec.labels) != tuple(data.label_names):
        raise ValueError(f"classifier labels {clf.spec.labels} differ from the data's {data.label_names}")


def macro_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 (a class never predicted nor present scores 0)."""
    scores = []
    for c in range(num_classes):
        tp = int(np.sum((predicted == c) & (labels == c)))
        fp = int(np.sum((predicted == c) & (labels != c)))
        fn = int(np.sum((predicted != c) & (labels == c)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def evaluate_classifier(clf: Classifier, test: LabelledTexts) -> dict[str, Any]:
    """Accuracy and macro-F1 of ``clf`` on ``test`` (plus the confusion matrix, rows = truth)."""
    _check_labels(clf, test)
    probs = clf.classify(list(test.texts))  # [N, L]
    return metrics_from_predictions(np.asarray(test.labels), probs.argmax(axis=1), len(test.label_names))


def metrics_from_predictions(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Accuracy, macro-F1, count and confusion matrix (rows = truth) of predicted labels."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "macro_f1": macro_f1(truth, predicted, num_classes),
        "examples": len(truth),
        "confusion": confusion.tolist(),
    }


def majority_floor(truth: np.ndarray, num_classes: int) -> dict[str, Any]:
    """The constant classifier that always answers the evaluation split's most frequent label."""
    truth = np.asarray(truth)
    majority = int(np.bincount(truth, minlength=num_classes).argmax())
    return {**metrics_from_predictions(truth, np.full_like(truth, majority), num_classes), "label": majority}
