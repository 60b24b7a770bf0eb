"""DP-SGD of the real generator (SmolLM2-135M + peft LoRA through Opacus), checked against oracles.

Opacus + PEFT ≥ 0.14 can train a LoRA silently wrong (opacus #820); these tests are why the
pinned pair (opacus 1.6.0, peft 0.21.2) is trusted here: every per-sample gradient equals a
batch-1 autograd oracle, the clipped sum equals an independent clip-and-sum, the noise has the
scale σ·C/B, and training moves the LoRA weights.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from ondevice.randomness import SecureRandomSource, SeededRandomSource
from server_aggregator.synthetic.dp_sgd import DpSgdPlan, clipped_noised_gradient, make_private, train_dp_sgd
from server_aggregator.synthetic.generator import (
    collate,
    per_example_lm_loss,
    prompt_for,
)
from tests.generator_fixtures import TWEETS, generator_with_nonzero_lora_b, tweet_examples
from tests.noise_stats import N, noise_failures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generator() -> Any:
    return generator_with_nonzero_lora_b(2)


@pytest.fixture(scope="module")
def examples(generator: Any) -> Any:
    return tweet_examples(generator.tokenizer)


def _loss(examples: Any) -> Any:
    return lambda model, indices: per_example_lm_loss(model, collate(examples, indices))


def _oracle_grads(generator: Any, examples: Any, index: int) -> list[torch.Tensor]:
    """Plain autograd on the one example alone, unpadded (batch of 1)."""
    params = generator.trainable_parameters()
    for p in params:
        p.grad = None
    per_example_lm_loss(generator.model, collate(examples, [index])).sum().backward()
    grads = [p.grad.detach().clone() for p in params]
    for p in params:
        p.grad = None
    return grads


def test_prompt_tokens_carry_no_loss_and_text_tokens_do(generator: Any, examples: Any) -> None:
    batch = collate(examples, [0, 2])
    prompt_len = len(generator.tokenizer(prompt_for("not-offensive"), add_special_tokens=False)["input_ids"])
    mask, attention = batch["loss_mask"], batch["attention_mask"]
    # target t+1 is scored from position t: the first scored target is the first text token
    assert torch.all(mask[:, : prompt_len - 1] == 0)
    assert torch.all(mask[0, prompt_len - 1 : int(attention[0].sum()) - 1] == 1)
    assert mask[0].sum() == attention[0].sum() - prompt_len  # text + <|im_end|>, nothing of the padding
    assert torch.all(mask[0, int(attention[0].sum()) - 1 :] == 0)
    decoded = generator.tokenizer.decode(batch["input_ids"][0, : int(attention[0].sum())])
    assert decoded == prompt_for("not-offensive") + TWEETS[0] + "<|im_end|>"


def test_per_sample_gradients_equal_a_batch_of_one_oracle(generator: Any, examples: Any) -> None:
    params = generator.trainable_parameters()
    assert len(params) == 2 * 2 * generator.model.config.num_hidden_layers  # A and B of q_proj, v_proj
    plan = DpSgdPlan(4, 3, 1, 1.0, 1.0, 1e-5, 1.0)
    wrapped, optimizer = make_private(generator.model, torch.optim.SGD(params, lr=0.0), plan, SeededRandomSource(0))
    try:
        indices = [0, 1, 2, 3]  # different lengths: rows 0, 1 and 3 are padded
        per_example_lm_loss(wrapped, collate(examples, indices)).mean().backward()
        samples = [p.grad_sample.detach().clone() for p in params]  # each [4, *p.shape]
    finally:
        wrapped._close()
        optimizer.zero_grad(set_to_none=True)
    worst = 0.0
    for row, index in enumerate(indices):
        for sample, oracle in zip(samples, _oracle_grads(generator, examples, index), strict=True):
            scale = float(oracle.abs().max())
            assert scale > 0, "a LoRA tensor has no gradient: the LoRA is not being trained"
            worst = max(worst, float((sample[row] - oracle).abs().max()) / scale)
    assert worst < 1e-4, worst


def test_clipped_sum_equals_an_independent_clip_and_sum(generator: Any, examples: Any) -> None:
    clip = 0.05
    indices = [0, 1, 3]
    oracle = [_oracle_grads(generator, examples, i) for i in indices]
    norms = [math.sqrt(sum(float((g**2).sum()) for g in grads)) for grads in oracle]
    assert min(norms) > 2 * clip, norms  # every example is really clipped
    expected_batch = 4
    want = [
        sum(g[k] * min(1.0, clip / n) for g, n in zip(oracle, norms, strict=True)) / expected_batch
        for k in range(len(oracle[0]))
    ]
    plan = DpSgdPlan(4, expected_batch, 1, 1e-9, clip, 1e-5, 1.0)  # σ ~ 0: the noise is tested below
    got = clipped_noised_gradient(
        generator.model, generator.trainable_parameters(), _loss(examples), indices, plan, SeededRandomSource(3)
    )
    for g, w in zip(got, want, strict=True):
        scale = float(w.abs().max())
        assert scale > 0 and float(np.abs(g - w.numpy()).max()) < 1e-4 * scale
    total = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in got))
    assert total <= len(indices) * clip / expected_batch * (1 + 1e-4)


def test_noise_has_the_scale_sigma_c_over_b(generator: Any, examples: Any) -> None:
    sigma, clip, batch = 1.3, 0.5, 4
    plan = DpSgdPlan(4, batch, 1, sigma, clip, 1e-5, 1.0)
    params = generator.trainable_parameters()
    draws = []
    source = SeededRandomSource(11)
    while sum(d.size for d in draws) < N:  # empty Poisson batches: the step is pure noise
        grads = clipped_noised_gradient(generator.model, params, _loss(examples), [], plan, source)
        draws.append(np.concatenate([g.ravel() for g in grads]))
    noise = np.concatenate(draws)[:N]
    assert noise_failures(noise, sigma * clip / batch) == []
    # And with real gradients in the batch: noised − clean has the same scale.
    clean = clipped_noised_gradient(
        generator.model,
        params,
        _loss(examples),
        [0, 1],
        DpSgdPlan(4, batch, 1, 1e-9, clip, 1e-5, 1.0),
        SeededRandomSource(0),
    )
    noised = clipped_noised_gradient(generator.model, params, _loss(examples), [0, 1], plan, SeededRandomSource(12))
    diff = np.concatenate([(a - b).ravel() for a, b in zip(noised, clean, strict=True)])
    assert abs(float(diff.std()) / (sigma * clip / batch) - 1) < 0.01


def test_training_moves_the_lora_and_secure_runs_differ(generator: Any, examples: Any) -> None:
    params = generator.trainable_parameters()
    start = [p.detach().clone() for p in params]
    plan = DpSgdPlan(4, 2, 2, 0.8, 1.0, 1e-5, 4.0)
    ends = []
    for _ in range(2):
        with torch.no_grad():
            for p, s in zip(params, start, strict=True):
                p.copy_(s)
        result = train_dp_sgd(
            generator.model, params, _loss(examples), plan, learning_rate=1e-3, random_source=SecureRandomSource()
        )
        assert len(result.losses) == 2
        ends.append([p.detach().clone() for p in params])
    for p, s in zip(params, start, strict=True):
        with torch.no_grad():
            p.copy_(s)
    moved = [float((e - s).abs().max()) for e, s in zip(ends[0], start, strict=True)]
    assert min(moved) > 0, "some LoRA tensor never changed (the opacus #820 symptom)"
    assert any(not torch.equal(a, b) for a, b in zip(ends[0], ends[1], strict=True)), "two noisy runs are identical"


def test_seeded_runs_repeat_exactly(generator: Any, examples: Any) -> None:
    params = generator.trainable_parameters()
    plan = DpSgdPlan(4, 2, 1, 0.8, 1.0, 1e-5, 4.0)
    got = [
        clipped_noised_gradient(generator.model, params, _loss(examples), [0, 2], plan, SeededRandomSource(5))
        for _ in range(2)
    ]
    for a, b in zip(*got, strict=True):
        np.testing.assert_array_equal(a, b)
