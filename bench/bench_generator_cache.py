"""Generator DP step: the full model (today's path) vs the cached top stack, same batch, same plan.

One DP-SGD step as ``train_dp_sgd`` runs it (Opacus hooks: forward, backward, per-sample clip,
noise, AdamW), on the same fixed batch of the first ``BATCH`` TweetEval-offensive train tweets
(prompt + text ≤ ``MAX_SEQ_LEN`` tokens), 2 threads. Cases:

- ``full_model_lora_all`` (baseline): LoRA r8 on q_proj/v_proj of all 30 layers, ``per_example_lm_loss``;
- ``full_model_lora_top{k}``: LoRA on the top k layers only, still the full model every step
  (isolates what moving the LoRA saves from what the cache saves);
- ``cached_top{k}``: ``prepare_cached_training`` (lower layers cached once), Opacus on the top stack.

The cases are timed round robin (one step of each per round): the machine is shared with other
work, and interleaving keeps the ratios fair when the load changes. Also recorded: the one-off
caching cost (seconds per example, ``prepare_cached_training`` over the batch), cache bytes per
example, and the bf16-vs-fp32 cache loss difference.
Writes ``bench/results/generator_cache-2t.json``.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence

import torch

from bench.harness import Timing, build_result, write_result
from ondevice.data import LabelledTexts, load_labelled, tweeteval_task_dir
from ondevice.randomness import SeededRandomSource
from server_aggregator.synthetic.dp_sgd import DpSgdPlan, PerExampleLoss, _quiet_hooks, make_private
from server_aggregator.synthetic.generator import collate, load_generator, per_example_lm_loss, tokenize_examples
from server_aggregator.synthetic.generator_cache import (
    cached_per_example_loss,
    compute_hidden_cache,
    prepare_cached_training,
)

THREADS = 2
BATCH = 64
MAX_SEQ_LEN = 48
TOPS = (2, 4)
REPEATS = 3
WARMUP = 1
BASELINE = "full_model_lora_all"


def _data() -> LabelledTexts:
    train = load_labelled(tweeteval_task_dir("offensive"), "train")
    return LabelledTexts(train.texts[:BATCH], train.labels[:BATCH], train.label_names, source="tweeteval/offensive")


def _step_fn(model: torch.nn.Module, params: list[torch.nn.Parameter], loss: PerExampleLoss) -> Callable[[], None]:
    """One DP step on the fixed batch, exactly the body of ``train_dp_sgd``'s loop (no Poisson draw)."""
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
    """Time the cases interleaved (one step of each per round, ``WARMUP`` untimed rounds first): the
    machine is shared, so each round sees the cases under about the same load."""
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
    caching: dict[str, dict[str, float]] = {}

    # One generator per case: two Opacus wrappers must not hook the same LoRA modules at once.
    gen = load_generator(None, seed=0)
    examples = tokenize_examples(gen.tokenizer, data, MAX_SEQ_LEN)

    def full_loss(model: torch.nn.Module, indices: Sequence[int]) -> torch.Tensor:
        return per_example_lm_loss(model, collate(examples, indices))

    def add(case: str, model: torch.nn.Module, params: list[torch.nn.Parameter], loss: PerExampleLoss) -> None:
        step = _step_fn(model, params, loss)
        steps[case] = step
        closers.append(step.close)  # type: ignore[attr-defined]

    add(BASELINE, gen.model, gen.trainable_parameters(), full_loss)
    for k in TOPS:
        full = load_generator(None, seed=0, top_layers=k)
        add(f"full_model_lora_top{k}", full.model, full.trainable_parameters(), full_loss)
        gen = load_generator(None, seed=0, top_layers=k)
        start = time.perf_counter()
        prepared = prepare_cached_training(gen, examples, k)
        cache_s = time.perf_counter() - start
        add(f"cached_top{k}", prepared.model, prepared.parameters, prepared.per_example_loss)
        bf16 = compute_hidden_cache(
            gen.model.get_base_model(), examples, prepared.cache.lower_layers, dtype=torch.bfloat16
        )
        with torch.no_grad():
            exact = prepared.per_example_loss(prepared.model, list(range(BATCH)))  # [B]
            approx = cached_per_example_loss(bf16, examples)(prepared.model, list(range(BATCH)))  # [B]
        caching[f"top{k}"] = {
            "lower_layers": prepared.cache.lower_layers,
            "cache_seconds_per_example": cache_s / BATCH,
            "cache_bytes_per_example_fp32": prepared.cache.nbytes / BATCH,
            "bf16_loss_max_abs_diff": float((approx - exact).abs().max()),
            "bf16_loss_max_rel_diff": float(((approx - exact).abs() / exact.abs()).max()),
            "mean_loss": float(exact.mean()),
        }
    try:
        timings = _round_robin(steps)
    finally:
        for close in closers:
            close()

    lengths = [len(ids) for ids in examples.ids]
    result = build_result(
        "generator_cache",
        timings,
        baseline=BASELINE,
        threads=THREADS,
        params={
            "batch": BATCH,
            "max_seq_len": MAX_SEQ_LEN,
            "mean_tokens": sum(lengths) / len(lengths),
            "text_tokens": sum(len(ids) - p for ids, p in zip(examples.ids, examples.prompt_lengths, strict=True)),
            "data": "tweeteval/offensive train[:64]",
            "lora": {"rank": 8, "alpha": 16.0, "targets": ["q_proj", "v_proj"]},
            "dp": "Opacus hooks, clip 1.0, sigma 1.0, AdamW; fixed batch (no Poisson draw)",
            "timing": f"round robin over the cases, {WARMUP} warm-up + {REPEATS} timed rounds",
            "load_average_at_end": list(os.getloadavg()),
        },
    )
    result["caching"] = caching
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(write_result(result))


if __name__ == "__main__":
    main()
