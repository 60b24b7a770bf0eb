"""The cached generator DP stage (LoRA on the top k layers, lower layers run once) against the full model.

Real SmolLM2-135M + PEFT LoRA on the top 2 layers, no mocks: the top stack's per-example losses
equal the full model's ``per_example_lm_loss``; every per-sample gradient Opacus computes on the top
stack equals a batch-1 autograd oracle on the FULL uncached model; ``train_dp_sgd``'s micro-batching
gives the same training as one pass; the trained adapter is a normal PEFT adapter that
reloads with ``load_trained_generator`` and reproduces the top stack's logits.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ondevice.randomness import SeededRandomSource
from server_aggregator.synthetic.dp_sgd import DpSgdPlan, make_private, train_dp_sgd
from server_aggregator.synthetic.generator import (
    TokenizedExamples,
    collate,
    load_trained_generator,
    per_example_lm_loss,
    save_generator_adapter,
)
from server_aggregator.synthetic.generator_cache import (
    HEAD_CHUNK_TOKENS,
    HiddenCache,
    _HeadCrossEntropy,
    lora_layer_indices,
    model_key_of,
    prepare_cached_training,
)
from tests.generator_fixtures import generator_with_nonzero_lora_b, tweet_examples

pytestmark = pytest.mark.slow

TOP = 2
LOSS_TOLERANCE = 1e-5  # absolute, on losses ~5 (float32 cache; measured ~1e-6)


@pytest.fixture(scope="module")
def generator() -> Any:
    return generator_with_nonzero_lora_b(1, top_layers=TOP)


@pytest.fixture(scope="module")
def examples(generator: Any) -> Any:
    return tweet_examples(generator.tokenizer)


@pytest.fixture(scope="module")
def cached(generator: Any, examples: Any) -> Any:
    return prepare_cached_training(generator, examples, TOP)


def test_only_the_top_layers_carry_lora(generator: Any, examples: Any, cached: Any) -> None:
    n = generator.model.config.num_hidden_layers
    assert lora_layer_indices(generator) == list(range(n - TOP, n))
    names = [name for name, p in generator.model.named_parameters() if p.requires_grad]
    assert len(names) == TOP * 2 * 2 and all("lora_" in name for name in names)  # A, B of q_proj, v_proj
    assert {id(p) for p in cached.parameters} == {id(p) for p in generator.trainable_parameters()}
    with pytest.raises(ValueError, match="top 2 layers"):
        prepare_cached_training(generator, examples, 3)


def test_cached_losses_equal_the_full_model(generator: Any, examples: Any, cached: Any) -> None:
    indices = [0, 1, 2, 3]  # different lengths: rows 0, 1 and 3 are padded
    with torch.no_grad():
        full = per_example_lm_loss(generator.model, collate(examples, indices))  # [4]
        got = cached.per_example_loss(cached.model, indices)  # [4]
        single = torch.cat([cached.per_example_loss(cached.model, [i]) for i in indices])
    assert got.shape == (4,)
    assert float((got - full).abs().max()) < LOSS_TOLERANCE, (got, full)
    assert float((single - full).abs().max()) < LOSS_TOLERANCE  # padding does not leak into the loss


def test_chunked_head_cross_entropy_equals_autograd() -> None:
    g = torch.Generator().manual_seed(0)
    n = HEAD_CHUNK_TOKENS + 44  # two chunks, the last one partial
    hidden = torch.randn(n, 16, generator=g, dtype=torch.float64, requires_grad=True)  # [N, H]
    weight = torch.randn(1000, 16, generator=g, dtype=torch.float64)  # [V, H], frozen
    targets = torch.randint(0, 1000, (n,), generator=g)  # [N]
    upstream = torch.rand(n, generator=g, dtype=torch.float64)  # per-token weights, like the per-example means
    want = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="none")
    (want_grad,) = torch.autograd.grad((want * upstream).sum(), hidden)
    got = _HeadCrossEntropy.apply(hidden, weight, targets)
    (got_grad,) = torch.autograd.grad((got * upstream).sum(), hidden)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)


def test_cache_round_trips_and_refuses_other_data(generator: Any, examples: Any, cached: Any, tmp_path: Path) -> None:
    path = tmp_path / "cache.pt"
    cached.cache.save(path)
    key = model_key_of(generator.model.get_base_model())
    lower = cached.cache.lower_layers
    again = HiddenCache.load(path, examples, lower, key, torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(again.states, cached.cache.states, strict=True))
    for other in ((lower - 1, key, torch.float32), (lower, key + "x", torch.float32), (lower, key, torch.bfloat16)):
        with pytest.raises(ValueError, match="another|other data"):
            HiddenCache.load(path, examples, *other)
    fewer = TokenizedExamples(examples.ids[:3], examples.prompt_lengths[:3], examples.pad_id)
    with pytest.raises(ValueError, match="other data"):
        HiddenCache.load(path, fewer, lower, key, torch.float32)
    # prepare_cached_training reuses a matching file and replaces a stale one
    reused = prepare_cached_training(generator, examples, TOP, cache_path=path)
    assert reused.cache.fingerprint == cached.cache.fingerprint
    rebuilt = prepare_cached_training(generator, fewer, TOP, cache_path=path)
    assert len(rebuilt.cache) == 3 and len(HiddenCache.load(path, fewer, lower, key, torch.float32)) == 3


def _oracle_grads(generator: Any, examples: Any, index: int) -> list[torch.Tensor]:
    """Plain autograd on the FULL uncached model, the one example alone (batch of 1)."""
    params = generator.trainable_parameters()
    for p in params:
        p.grad = None
    per_example_lm_loss(generator.model, collate(examples, [index])).sum().backward()
    grads = [p.grad.detach().clone() for p in params]
    for p in params:
        p.grad = None
    return grads


def test_per_sample_gradients_equal_a_full_model_oracle(generator: Any, examples: Any, cached: Any) -> None:
    params = cached.parameters
    plan = DpSgdPlan(4, 3, 1, 1.0, 1.0, 1e-5, 1.0)
    wrapped, optimizer = make_private(cached.model, torch.optim.SGD(params, lr=0.0), plan, SeededRandomSource(0))
    try:
        indices = [0, 1, 2, 3]
        with warnings.catch_warnings():  # Opacus' full backward hooks on frozen inputs (see dp_sgd._quiet_hooks)
            warnings.simplefilter("ignore", UserWarning)
            cached.per_example_loss(wrapped, indices).mean().backward()
        samples = [p.grad_sample.detach().clone() for p in params]  # each [4, *p.shape]
    finally:
        wrapped._close()
        optimizer.zero_grad(set_to_none=True)
    assert [id(p) for p in params] == [id(p) for p in generator.trainable_parameters()]
    worst = 0.0
    for row, index in enumerate(indices):
        for sample, oracle in zip(samples, _oracle_grads(generator, examples, index), strict=True):
            scale = float(oracle.abs().max())
            assert scale > 0, "a LoRA tensor has no gradient: the LoRA is not being trained"
            worst = max(worst, float((sample[row] - oracle).abs().max()) / scale)
    assert worst < 1e-4, worst


def test_train_dp_sgd_micro_batches_the_top_stack_like_one_pass(cached: Any) -> None:
    """``train_dp_sgd(..., micro_batch_size=1)`` (Opacus skipped steps per piece, one noise draw per
    step) on the top stack: the same losses and parameters as one pass over the whole batch."""
    params = cached.parameters
    start = [p.detach().clone() for p in params]
    plan = DpSgdPlan(4, 4, 2, 0.5, 0.05, 1e-5, 4.0)  # q = 1: every step's batch is all 4 examples
    runs = []
    try:
        for micro in (None, 1):
            with torch.no_grad():
                for p, s in zip(params, start, strict=True):
                    p.copy_(s)
            result = train_dp_sgd(
                cached.model,
                params,
                cached.per_example_loss,
                plan,
                learning_rate=1e-3,
                random_source=SeededRandomSource(21),
                micro_batch_size=micro,
            )
            runs.append((result, [p.detach().clone() for p in params]))
    finally:
        with torch.no_grad():
            for p, s in zip(params, start, strict=True):
                p.copy_(s)
    (whole, whole_params), (split, split_params) = runs
    assert whole.batch_sizes == split.batch_sizes == (4, 4)
    np.testing.assert_allclose(split.losses, whole.losses, rtol=1e-6)
    for a, b, s in zip(whole_params, split_params, start, strict=True):
        assert float((a - s).abs().max()) > 0
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)  # AdamW steps are ~1e-3: agreement to 1e-3 of a step


def test_trained_adapter_reloads_and_matches_the_top_stack(
    generator: Any, examples: Any, cached: Any, tmp_path: Path
) -> None:
    params = cached.parameters
    start = [p.detach().clone() for p in params]
    plan = DpSgdPlan(4, 2, 2, 0.8, 1.0, 1e-5, 4.0)
    train_dp_sgd(
        cached.model, params, cached.per_example_loss, plan, learning_rate=1e-2, random_source=SeededRandomSource(7)
    )
    try:
        assert min(float((p.detach() - s).abs().max()) for p, s in zip(params, start, strict=True)) > 0
        save_generator_adapter(generator, tmp_path, {"test": True})
        reloaded = load_trained_generator(tmp_path, None)
        indices = [0, 1, 2, 3]
        batch = collate(examples, indices)
        with torch.no_grad():
            cached.model.eval()
            stack_logits = cached.model(cached.cache.padded(indices), batch["attention_mask"])  # [4, T, V]
            full_logits = reloaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        real = batch["attention_mask"].bool()  # compare at real tokens only
        diff = float((stack_logits[real] - full_logits[real]).abs().max())
        assert diff < 1e-4 * float(full_logits[real].abs().max()), diff
        n = reloaded.model.config.num_hidden_layers
        lora_names = [name for name, _ in reloaded.model.named_parameters() if "lora_" in name]
        assert len(lora_names) == TOP * 2 * 2
        assert {int(name.split(".layers.")[1].split(".")[0]) for name in lora_names} == set(range(n - TOP, n))
    finally:
        with torch.no_grad():
            for p, s in zip(params, start, strict=True):
                p.copy_(s)
