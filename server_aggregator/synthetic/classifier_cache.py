"""DP-SGD of the classifier's top layers on cached activations of its frozen lower layers.

DP-SGD of LoRA + head runs every Poisson batch through all six MiniLM layers with per-example
gradient hooks. With LoRA trained in the top ``k`` layers only (the LoRA of the layers below
stays B = 0, so the exported graph is unchanged), the layers below are a fixed function of the
text: ``LowerCache`` runs them once per example and keeps each example's hidden states
([T_i, H], unpadded); ``TopClassifier`` runs the top layers, mean pooling and the head on a batch
of cached states. The per-example losses are the full model's (tested to 1e-5), so the DP
mechanism, its sampling and its accounting are unchanged; only the cost per step falls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from export.classifier import Classifier, additive_attention_mask, mean_pool
from ondevice.data import LabelledTexts


def _bert(clf: Classifier) -> Any:
    encoder = clf.model.encoder
    return encoder.base_model.model if hasattr(encoder, "base_model") else encoder


def freeze_lower_lora(clf: Classifier, top_layers: int) -> list[nn.Parameter]:
    """Stop training the LoRA of every layer below the top ``top_layers``; the parameters frozen (set their
    ``requires_grad`` back when done: ``Classifier.trainable_parameters`` lists only trainable ones)."""
    layers = len(_bert(clf).encoder.layer)
    if not 1 <= top_layers <= layers:
        raise ValueError(f"top_layers must be in 1..{layers}, found {top_layers!r}")
    lower = layers - top_layers
    frozen: list[nn.Parameter] = []
    for name, param in clf.trainable_parameters().items():
        parts = name.split(".")
        if "layer" in parts and int(parts[parts.index("layer") + 1]) < lower:
            param.requires_grad_(False)
            frozen.append(param)
    return frozen


class TopClassifier(nn.Module):
    """The top encoder layers (with their LoRA), mean pooling and the head; shares the classifier's modules."""

    def __init__(self, clf: Classifier, top_layers: int) -> None:
        super().__init__()
        layers = _bert(clf).encoder.layer
        if not 1 <= top_layers <= len(layers):
            raise ValueError(f"top_layers must be in 1..{len(layers)}, found {top_layers!r}")
        self.lower_layers = len(layers) - top_layers
        self.layers = nn.ModuleList(list(layers[self.lower_layers :]))
        self.head = clf.model.head

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """hidden [b, T, H] (cached, right-padded), attention_mask [b, T] → logits [b, L]."""
        mask = additive_attention_mask(attention_mask)  # [b, 1, 1, T]
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=mask)  # [b, T, H]
        logits: torch.Tensor = self.head(mean_pool(hidden, attention_mask))  # [b, L]
        return logits


class LowerCache:
    """Each example's hidden states after the frozen lower layers, computed once (no gradients)."""

    def __init__(self, clf: Classifier, texts: Sequence[str], lower_layers: int, *, batch_size: int = 64) -> None:
        bert = _bert(clf)
        if not 0 <= lower_layers < len(bert.encoder.layer):
            raise ValueError(f"lower_layers must be in 0..{len(bert.encoder.layer) - 1}, found {lower_layers!r}")
        self.states: list[torch.Tensor] = []  # each [T_i, H]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        by_index: dict[int, torch.Tensor] = {}
        was_training = clf.model.training
        clf.model.eval()
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = clf.encode([texts[i] for i in chunk])
                ids, attention = batch["input_ids"], batch["attention_mask"]  # [b, T]
                hidden = bert.embeddings(input_ids=ids)  # [b, T, H]
                mask = additive_attention_mask(attention)
                for layer in bert.encoder.layer[:lower_layers]:
                    hidden = layer(hidden, attention_mask=mask)
                lengths = attention.sum(dim=1).tolist()
                for row, i in enumerate(chunk):
                    by_index[i] = hidden[row, : int(lengths[row])].clone()
        clf.model.train(was_training)
        self.states = [by_index[i] for i in range(len(texts))]

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden [b, T, H] right-padded with zeros, attention_mask [b, T]) for ``indices``."""
        picked = [self.states[i] for i in indices]
        longest = max(s.shape[0] for s in picked)
        hidden = torch.zeros(len(picked), longest, picked[0].shape[1])
        attention = torch.zeros(len(picked), longest, dtype=torch.long)
        for row, state in enumerate(picked):
            hidden[row, : state.shape[0]] = state
            attention[row, : state.shape[0]] = 1
        return hidden, attention


def cached_per_example_loss(
    cache: LowerCache, data: LabelledTexts
) -> Callable[[nn.Module, Sequence[int]], torch.Tensor]:
    """(top model, indices) → cross-entropy of each indexed example [b], from the cached lower states."""

    def loss(model: nn.Module, indices: Sequence[int]) -> torch.Tensor:
        hidden, attention = cache.batch(indices)
        logits = model(hidden, attention)  # [b, L]
        targets = torch.tensor([data.labels[i] for i in indices], dtype=torch.long)  # [b]
        return nn.functional.cross_entropy(logits, targets, reduction="none")  # [b]

    return loss
