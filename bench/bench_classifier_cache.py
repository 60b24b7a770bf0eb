"""Classifier DP step: LoRA + head through the full MiniLM (today's path) vs the top k layers on cached states.

One DP-SGD step as ``train_dp_sgd`` runs it (Opacus hooks: forward, backward, per-sample clip,
noise, AdamW) on the same fixed batch of the first ``BATCH`` TweetEval-offensive train tweets,
2 threads. Cases:

- ``full_model_lora_all`` (baseline): LoRA r8 on query/value of all 6 layers + head;
- ``cached_top{k}``: LoRA of the top k layers + head, on ``LowerCache`` states (lower layers run once).

Timed round robin (one step of each case per round) so load changes hit every case alike; the
one-off caching cost per example is recorded too. Writes ``bench/results/classifier_cache-2t.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from bench.harness import Timing, build_result, write_result
from export.classifier import Classifier, ClassifierSpec, build_classifier
from ondevice.data import LabelledTexts, load_labelled, tweeteval_task_dir
from ondevice.protocol import LoraSpec
from ondevice.randomness import SeededRandomSource
from server_aggregator.synthetic.classifier_cache import (
    LowerCache,
    TopClassifier,
    cached_per_example_loss,
    freeze_lower_lora,
)
from server_aggregator.synthetic.classifier_training import per_example_classifier_loss
from server_aggregator.synthetic.dp_sgd import DpSgdPlan, PerExampleLoss, _quiet_hooks, make_private

THREADS = 2
BATCH = 256
TOPS = (1, 2)
REPEATS = 3
WARMUP = 1
BASELINE = "full_model_lora_all"


def _data() -> LabelledTexts:
    train = load_labelled(tweeteval_task_dir("offensive"), "train")
    return LabelledTexts(train.texts[:BATCH], train.labels[:BATCH], train.label_names, source="tweeteval/offensive")


def _classifier(labels: Sequence[str]) -> Classifier:
    return build_classifier(None, ClassifierSpec(labels=tuple(labels), lora=LoraSpec(rank=8, alpha=16.0)), seed=0)


def _step_fn(model: torch.nn.Module, params: list[torch.nn.Parameter], loss: PerExampleLoss) -> Callable[[], None]:
    """One DP step on the fixed batch, the body of ``train_dp_sgd``'s loop (no Poisson draw)."""
    plan = DpSgdPlan(BATCH, BATCH, 1, 1.0, 1.0, 1e-5, 8.0)
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    wrapped, dp_optimizer = make_private(model, optimizer, plan, SeededRandomSource(0))
    indices = list(range(BATCH))

    def step() -> None:
        with _quiet_hooks():
            dp_optimizer.zero_grad(set_to_none=True)
            loss(wrapped, indices).mean().backward()  # type: ignore[no-untyped-call]
            dp_optimizer.step()

    step.close = wrapped._close  # type: ignore[attr-defined]
    return step


def _round_robin(cases: dict[str, Callable[[], None]]) -> list[Timing]:
    samples: dict[str, list[float]] = {case: [] for case in cases}
    for round_index in range(WARMUP + REPEATS):
        for case, step in cases.items():
            start = time.perf_counter()
            step()
            if round_index >= WARMUP:
                samples[case].append(time.perf_counter() - start)
        print(
            f"round {round_index + 1}/{WARMUP + REPEATS}: "
            + ", ".join(f"{case} {times[-1]:.2f} s" for case, times in samples.items() if times),
            flush=True,
        )
    return [Timing(case, tuple(times)) for case, times in samples.items()]


def main() -> None:
    torch.set_num_threads(THREADS)
    data = _data()
    steps: dict[str, Callable[[], None]] = {}
    closers: list[Callable[[], None]] = []
    caching: dict[str, float] = {}

    def add(case: str, model: torch.nn.Module, params: list[torch.nn.Parameter], loss: PerExampleLoss) -> None:
        step = _step_fn(model, params, loss)
        steps[case] = step
        closers.append(step.close)  # type: ignore[attr-defined]

    full = _classifier(data.label_names)  # one classifier per case: Opacus hooks must not share modules
    add(BASELINE, full.model, list(full.trainable_parameters().values()), per_example_classifier_loss(full, data))
    for k in TOPS:
        clf = _classifier(data.label_names)
        freeze_lower_lora(clf, k)
        top = TopClassifier(clf, k)
        start = time.perf_counter()
        cache = LowerCache(clf, data.texts, top.lower_layers)
        caching[f"cache_seconds_per_example_top{k}"] = (time.perf_counter() - start) / BATCH
        add(f"cached_top{k}", top, list(clf.trainable_parameters().values()), cached_per_example_loss(cache, data))
    try:
        timings = _round_robin(steps)
    finally:
        for close in closers:
            close()
    result = build_result(
        "classifier_cache",
        timings,
        baseline=BASELINE,
        threads=THREADS,
        params={
            "batch": BATCH,
            "data": f"tweeteval/offensive train[:{BATCH}]",
            "lora": {"rank": 8, "alpha": 16.0, "targets": ["query", "value"]},
            "dp": "Opacus hooks, clip 1.0, sigma 1.0, AdamW; fixed batch (no Poisson draw)",
            "timing": f"round robin over the cases, {WARMUP} warm-up + {REPEATS} timed rounds",
            **caching,
        },
    )
    print(write_result(result))


if __name__ == "__main__":
    main()
