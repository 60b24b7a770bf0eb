"""Reproducible DP-SGD LoRA recipe runs on real data (the measurements behind the README's table).

One run: LoRA in the top k encoder layers (the layers below cached, ``classifier_cache``), trained
with DP-SGD on a labelled train split, optionally after a **DP linear probe** of the head (LP-FT:
the probe's label counts + steps spend ``probe_epsilon``, the LoRA stage is calibrated so that all
releases compose to ``epsilon``; ``train_head=False`` keeps the probe's head fixed so the clip
budget goes to LoRA alone). Validation and test macro-F1 are reported beside the majority floor.

    python -m server_aggregator.synthetic.lora_experiment --data DIR --epsilon 4 --probe-epsilon 2 \\
        --optimizer sgd --learning-rate 0.5 --clip-norm 1 --batch 512 --steps 70 --out results.jsonl

An exploration tool: choices it helps make are made on the validation split, never on test.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.classifier import Classifier, ClassifierSpec, build_classifier
from ondevice.data import LabelledTexts, load_tweeteval
from ondevice.protocol import LoraSpec
from ondevice.randomness import make_random_source
from server_aggregator.synthetic.classifier_cache import (
    LowerCache,
    TopClassifier,
    cached_per_example_loss,
    freeze_lower_lora,
)
from server_aggregator.synthetic.classifier_training import evaluate_classifier, majority_floor
from server_aggregator.synthetic.config import ProbeRecipe
from server_aggregator.synthetic.dp_sgd import check_optimizer_choice, train_dp_sgd
from server_aggregator.synthetic.probe import head_state, install_head
from server_aggregator.synthetic.recipes import train_probe_release
from server_aggregator.synthetic.releases import Release, calibrate_last, ledger_dict


@dataclass(frozen=True)
class LoraExperiment:
    """One DP-SGD LoRA run's settings (validated on construction)."""

    epsilon: float = 4.0
    delta: float = 1e-6
    probe_epsilon: float = 0.0
    """> 0: LP-FT, the head starts from a DP probe that spends this share (composed into ``epsilon``)."""
    train_head: bool = True
    top_layers: int = 2
    optimizer: str = "adamw"
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    clip_norm: float = 1.0
    expected_batch_size: int = 512
    steps: int = 70
    micro_batch_size: int = 256
    lora_rank: int = 8
    lora_alpha: float = 16.0
    seed: int = 0
    noise_seed: int = 7

    def __post_init__(self) -> None:
        check_optimizer_choice(self.optimizer, self.lr_schedule)
        for name in ("epsilon", "learning_rate", "clip_norm", "lora_alpha"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, found {value!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), found {self.delta!r}")
        if not 0 <= self.probe_epsilon < self.epsilon:
            raise ValueError(f"probe_epsilon must be in [0, epsilon={self.epsilon}), found {self.probe_epsilon!r}")
        if not self.train_head and self.probe_epsilon == 0:
            raise ValueError(
                "train_head=False needs a probe head (probe_epsilon > 0): a fixed random head learns nothing"
            )
        for name in ("top_layers", "expected_batch_size", "steps", "micro_batch_size", "lora_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, found {value!r}")


def _features(model: TopClassifier, cache: LowerCache, count: int) -> np.ndarray:
    """The head's inputs (mean-pooled top-layer states) of every cached example → [N, H] float64."""
    captured: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(lambda module, args, out: captured.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            for start in range(0, count, 256):
                model(*cache.batch(list(range(start, min(start + 256, count)))))
    finally:
        hook.remove()
    return torch.cat(captured).numpy().astype(np.float64)  # [N, H]


def _freeze_for_run(clf: Classifier, config: LoraExperiment) -> None:
    """A fresh classifier trains LoRA + head; keep the head fixed if asked, and the lower layers' LoRA always."""
    if not config.train_head:
        for param in clf.model.head.parameters():
            param.requires_grad_(False)
    freeze_lower_lora(clf, config.top_layers)


def run_lora_experiment(
    config: LoraExperiment,
    train: LabelledTexts,
    evaluations: dict[str, LabelledTexts],
    *,
    encoder: str | None = None,
) -> dict[str, Any]:
    """Train as ``config`` says on ``train`` and evaluate on each of ``evaluations`` (name → split)."""
    labels = tuple(train.label_names)
    spec = ClassifierSpec(labels=labels, lora=LoraSpec(rank=config.lora_rank, alpha=config.lora_alpha), max_seq_len=128)
    clf = build_classifier(encoder, spec, seed=config.seed)
    clf.model.eval()
    started = time.monotonic()
    model = TopClassifier(clf, config.top_layers)
    model.eval()
    cache = LowerCache(clf, train.texts, model.lower_layers)
    out: dict[str, Any] = {
        "config": asdict(config),
        "train_examples": len(train),
        "cache_s": time.monotonic() - started,
    }
    prior: tuple[Release, ...] = ()
    if config.probe_epsilon > 0:
        x = _features(model, cache, len(train))  # [N, H]
        probe = train_probe_release(
            x,
            np.asarray(train.labels),
            len(labels),
            ProbeRecipe(),
            prior=(),
            total_epsilon=config.probe_epsilon,
            delta=config.delta,
            init=head_state(clf),
            random_source=make_random_source("seeded", config.noise_seed + 1),
        )
        install_head(clf, probe.result.weight, probe.result.bias)
        prior = probe.releases
        out["probe"] = {name: _summary(evaluate_classifier(clf, split)) for name, split in evaluations.items()}
    _freeze_for_run(clf, config)
    plan = calibrate_last(
        prior,
        total_epsilon=config.epsilon,
        delta=config.delta,
        num_examples=len(train),
        expected_batch_size=config.expected_batch_size,
        steps=config.steps,
        clip_norm=config.clip_norm,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    started = time.monotonic()
    result = train_dp_sgd(
        model,
        params,
        cached_per_example_loss(cache, train),
        plan,
        learning_rate=config.learning_rate,
        random_source=make_random_source("seeded", config.noise_seed),
        micro_batch_size=config.micro_batch_size,
        optimizer=config.optimizer,
        lr_schedule=config.lr_schedule,
    )
    model.eval()
    clf.model.eval()
    releases = [*prior, Release.from_plan("dp-sgd-lora", "DP-SGD of LoRA (+ head) on the train split", plan)]
    losses = np.asarray(result.losses, dtype=np.float64)
    out.update(
        train_s=time.monotonic() - started,
        trained_parameters=sum(p.numel() for p in params),
        noise_multiplier=plan.noise_multiplier,
        ledger=ledger_dict(releases, config.delta),
        loss_per_10_steps=[float(np.nanmean(losses[i : i + 10])) for i in range(0, len(losses), 10)],
        metrics={name: _summary(evaluate_classifier(clf, split)) for name, split in evaluations.items()},
        floor={
            name: _summary(majority_floor(np.asarray(split.labels), len(labels))) for name, split in evaluations.items()
        },
    )
    return out


def _summary(found: dict[str, Any]) -> dict[str, float]:
    return {"accuracy": float(found["accuracy"]), "macro_f1": float(found["macro_f1"])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="a TweetEval task folder (train, val, test)")
    parser.add_argument("--out", type=Path, help="append the result as one JSON line here")
    parser.add_argument("--encoder", help="encoder folder or hub id (default: the packaged MiniLM)")
    parser.add_argument("--threads", type=int, default=2)
    defaults = LoraExperiment()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        config = LoraExperiment(**{name: getattr(args, name) for name in asdict(defaults)})
    except ValueError as error:
        parser.error(str(error))
    splits = {split: load_tweeteval(args.data, split, empty="skip") for split in ("train", "val", "test")}
    result = run_lora_experiment(
        config, splits["train"], {"val": splits["val"], "test": splits["test"]}, encoder=args.encoder
    )
    line = json.dumps(result)
    print(line)
    if args.out is not None:
        with args.out.open("a") as handle:
            handle.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
