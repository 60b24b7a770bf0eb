"""DP-SGD of the classifier's top layers on cached lower-layer states equals the full model's DP-SGD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from export.classifier import Classifier, ClassifierSpec, build_classifier
from ondevice.data import LabelledTexts
from ondevice.protocol import LoraSpec
from ondevice.randomness import SeededRandomSource
from server_aggregator.synthetic.classifier_cache import (
    LowerCache,
    TopClassifier,
    cached_per_example_loss,
    freeze_lower_lora,
)
from server_aggregator.synthetic.classifier_training import train_classifier_dp
from server_aggregator.synthetic.dp_sgd import DpSgdPlan, clipped_noised_gradient

pytestmark = pytest.mark.slow

TEXTS = (
    "have a lovely day",
    "@user you are a disgrace, shut up and go away, nobody wants you here",
    "what a game last night",
    "this is the worst take i have ever read, absolutely clueless",
    "thanks!",
    "i can't believe they did that to the poor dog, awful people",
)
TOP = 2


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    clf = build_classifier(None, ClassifierSpec(labels=("NOT", "OFF"), lora=LoraSpec(rank=4, alpha=8.0)), seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # LoRA B ≠ 0 everywhere, so the lower layers' LoRA really shapes the cached states
        for name, param in clf.model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    clf.model.eval()
    return clf


@pytest.fixture(scope="module")
def data() -> LabelledTexts:
    return LabelledTexts(TEXTS, (0, 1, 0, 1, 0, 1), ("NOT", "OFF"), "test")


def _trainable_top(clf: Classifier) -> list[torch.nn.Parameter]:
    for name, param in clf.model.named_parameters():
        param.requires_grad_("lora_" in name or name.startswith("head"))
    freeze_lower_lora(clf, TOP)
    return list(clf.trainable_parameters().values())


def _oracle(clf: Classifier, data: LabelledTexts, index: int, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """Batch-1 autograd through the FULL model on the text itself (no cache, no padding)."""
    for p in params:
        p.grad = None
    logits = clf.model(**clf.encode([data.texts[index]]))  # [1, L]
    torch.nn.functional.cross_entropy(logits, torch.tensor([data.labels[index]])).backward()  # type: ignore[no-untyped-call]
    return [p.grad.detach().clone() for p in params]  # type: ignore[union-attr]


def test_cached_logits_equal_the_full_model(classifier: Classifier, data: LabelledTexts) -> None:
    cache = LowerCache(classifier, data.texts, 6 - TOP, batch_size=4)
    top = TopClassifier(classifier, TOP).eval()
    for indices in ([0, 1, 2], [5, 3], [4]):  # other batch mixes than the cache was built with
        with torch.no_grad():
            full = classifier.model(**classifier.encode([data.texts[i] for i in indices]))
            part = top(*cache.batch(indices))
        assert float((full - part).abs().max()) < 1e-5


def test_freezing_leaves_the_top_lora_and_the_head(classifier: Classifier) -> None:
    everything = set(classifier.trainable_parameters())
    params = _trainable_top(classifier)
    names = list(classifier.trainable_parameters())
    assert all(".layer.4." in n or ".layer.5." in n or n.startswith("head") for n in names), names
    assert any(n.startswith("head") for n in names) and len(params) == len(names) < len(everything)
    with pytest.raises(ValueError, match="top_layers"):
        freeze_lower_lora(classifier, 7)


def test_clipped_sum_on_the_cache_equals_a_full_model_oracle(classifier: Classifier, data: LabelledTexts) -> None:
    params = _trainable_top(classifier)
    cache = LowerCache(classifier, data.texts, 6 - TOP)
    top = TopClassifier(classifier, TOP)
    indices, clip, expected_batch = [0, 1, 3, 4], 0.05, 4
    oracle = [_oracle(classifier, data, i, params) for i in indices]
    norms = [math.sqrt(sum(float((g**2).sum()) for g in grads)) for grads in oracle]
    assert min(norms) > 2 * clip, norms  # every example is really clipped
    want = [
        sum(g[k] * min(1.0, clip / n) for g, n in zip(oracle, norms, strict=True)) / expected_batch
        for k in range(len(params))
    ]
    plan = DpSgdPlan(len(TEXTS), expected_batch, 1, 1e-9, clip, 1e-5, 1.0)  # σ ≈ 0: only the clipped sum
    got = clipped_noised_gradient(
        top, params, cached_per_example_loss(cache, data), indices, plan, SeededRandomSource(3)
    )
    for g, w in zip(got, want, strict=True):
        scale = float(w.abs().max())
        assert scale > 0 and float(np.abs(g - w.numpy()).max()) < 1e-4 * scale


def test_train_classifier_dp_on_the_cache_moves_only_the_top_and_keeps_every_tensor(data: LabelledTexts) -> None:
    clf = build_classifier(None, ClassifierSpec(labels=("NOT", "OFF"), lora=LoraSpec(rank=4, alpha=8.0)), seed=0)
    before = {k: v.detach().clone() for k, v in clf.trainable_parameters().items()}
    plan = DpSgdPlan(len(TEXTS), 3, 2, 1.0, 1.0, 1e-5, 1.0)
    train_classifier_dp(clf, data, plan, learning_rate=0.01, random_source=SeededRandomSource(0), top_layers=TOP)
    after = clf.trainable_parameters()
    assert set(after) == set(before)  # the lower LoRA is trainable (and saved) again afterwards
    moved = {k for k in before if not torch.equal(before[k], after[k].detach())}
    assert moved and all(".layer.4." in k or ".layer.5." in k or k.startswith("head") for k in moved), moved


def test_a_fixed_head_is_left_as_it_is_and_trainable_again_afterwards(data: LabelledTexts) -> None:
    clf = build_classifier(None, ClassifierSpec(labels=("NOT", "OFF"), lora=LoraSpec(rank=4, alpha=8.0)), seed=0)
    before = {k: v.detach().clone() for k, v in clf.trainable_parameters().items()}
    plan = DpSgdPlan(len(TEXTS), 3, 3, 1.0, 1.0, 1e-5, 1.0)
    train_classifier_dp(
        clf,
        data,
        plan,
        learning_rate=0.5,
        random_source=SeededRandomSource(0),
        top_layers=TOP,
        optimizer="sgd",
        train_head=False,
    )
    after = clf.trainable_parameters()
    assert set(after) == set(before)  # the head and the lower LoRA are trainable again afterwards
    moved = {k for k in before if not torch.equal(before[k], after[k].detach())}
    assert moved and all(".layer.4." in k or ".layer.5." in k for k in moved), moved  # LoRA of the top only
    assert not any(k.startswith("head") for k in moved)
