"""The classifier as a function of per-row trainable tensors: per-example gradients for many clients.

Every batch row carries its own copy of the trainable tensors (LoRA A/B of every adapted linear and
the head), gathered from its client's current parameters. Because a row's copy only reaches that
row's loss, autograd's gradient of Σ_rows loss with respect to the row copies is exactly the
per-example gradient of each row at its own client's parameters: one batched forward/backward
serves a whole cohort whose clients have already diverged after their first local step.

The frozen encoder weights are shared with the loaded ``Classifier`` (not copied); the math is the
bundle's (additive attention mask, mean pooling, linear head, cross-entropy), so the gradients are
those the phone's ORT graph and ExecuTorch program compute (checked against both in the tests).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.classifier import Classifier, additive_attention_mask, mean_pool
from ondevice.protocol import TensorSpec


class _RowLoraLinear(nn.Module):
    """A frozen base linear plus LoRA with per-row A [R, r, in] and B [R, out, r] set before each call."""

    def __init__(self, base: nn.Module, scaling: float) -> None:
        super().__init__()
        self.base = base
        self.scaling = scaling
        self.lora_a: torch.Tensor | None = None
        self.lora_b: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [R, T, in]
        if self.lora_a is None or self.lora_b is None:
            raise RuntimeError("row LoRA tensors were not set before the forward pass")
        low = torch.bmm(x, self.lora_a.transpose(1, 2))  # [R, T, r]
        update = torch.bmm(low, self.lora_b.transpose(1, 2))  # [R, T, out]
        return self.base(x) + update * self.scaling  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _Slot:
    module: _RowLoraLinear
    a_index: int
    b_index: int


class CohortModel(nn.Module):
    """Frozen MiniLM + per-row LoRA + per-row head; see the module docstring."""

    def __init__(self, clf: Classifier) -> None:
        super().__init__()
        base = clf.model.encoder.get_base_model()
        shared = {id(t): t for t in itertools.chain(base.parameters(), base.buffers())}
        self.encoder = copy.deepcopy(base, memo=shared)  # module tree copied, weights shared
        self.specs: tuple[TensorSpec, ...] = clf.trainable_specs()
        index = {spec.name: i for i, spec in enumerate(self.specs)}
        slots: list[_Slot] = []
        for path, module in list(self.encoder.named_modules()):
            if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
                if len(module.scaling) != 1:
                    raise ValueError(f"{path}: expected one LoRA adapter, found {sorted(module.scaling)}")
                (adapter,) = module.scaling.keys()
                replacement = _RowLoraLinear(module.base_layer, float(module.scaling[adapter]))
                self.encoder.set_submodule(path, replacement)
                slots.append(_Slot(replacement, index[f"{path}.lora_A.weight"], index[f"{path}.lora_B.weight"]))
        self._slots = tuple(slots)
        self.head_index = (index["head.weight"], index["head.bias"])
        covered = {i for s in slots for i in (s.a_index, s.b_index)} | set(self.head_index)
        if covered != set(range(len(self.specs))):
            missing = [self.specs[i].name for i in range(len(self.specs)) if i not in covered]
            raise ValueError(f"the cohort model does not cover trainable tensors {missing}")
        for param in self.encoder.parameters():
            param.requires_grad_(False)
        self.encoder.eval()  # LoRA dropout is 0 in the bundle; no other stochastic layer
        self.num_params = sum(s.numel for s in self.specs)

    def split_flat(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """[R, P] → per-spec views [R, *shape] (the manifest's trainable order)."""
        out, offset = [], 0
        for spec in self.specs:
            out.append(flat[:, offset : offset + spec.numel].reshape(flat.shape[0], *spec.shape))
            offset += spec.numel
        return out

    def logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """input_ids, attention_mask [R, T]; rows: per-spec tensors [R, *shape] → logits [R, L]."""
        for slot in self._slots:
            slot.module.lora_a, slot.module.lora_b = rows[slot.a_index], rows[slot.b_index]
        try:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=additive_attention_mask(attention_mask)
            ).last_hidden_state  # [R, T, H]
        finally:
            for slot in self._slots:
                slot.module.lora_a = slot.module.lora_b = None
        pooled = mean_pool(hidden, attention_mask)  # [R, H]
        weight, bias = rows[self.head_index[0]], rows[self.head_index[1]]  # [R, L, H], [R, L]
        return torch.bmm(weight, pooled[:, :, None])[:, :, 0] + bias  # [R, L]

    def per_example_gradients(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, flat_rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradients [R, P] float32 at each row's own parameters ``flat_rows`` [R, P], losses [R])."""
        leaf = flat_rows.detach().clone().requires_grad_(True)  # [R, P]
        with torch.enable_grad():
            logits = self.logits(input_ids, attention_mask, self.split_flat(leaf))
            losses = F.cross_entropy(logits, labels, reduction="none")  # [R]
            (grad,) = torch.autograd.grad(losses.sum(), leaf)
        return grad, losses.detach()

    @torch.no_grad()
    def predict_proba(
        self, token_ids: Sequence[np.ndarray], flat_params: torch.Tensor, pad_id: int, batch_size: int = 128
    ) -> np.ndarray:
        """Class probabilities [N, L] of texts (token id arrays) under one parameter vector [P]."""
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        num_labels = self.specs[self.head_index[1]].shape[0]
        probs = np.zeros((len(token_ids), num_labels), np.float32)  # [N, L]
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = pad_rows([token_ids[i] for i in chunk], pad_id)
            rows = self.split_flat(flat_params[None].expand(len(chunk), -1))
            probs[chunk] = torch.softmax(self.logits(ids, mask, rows), dim=-1).numpy()
        return probs


def pad_rows(token_ids: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id arrays to the longest → input_ids, attention_mask int64 [R, T]."""
    longest = max(len(t) for t in token_ids)
    ids = np.full((len(token_ids), longest), pad_id, dtype=np.int64)  # [R, T]
    mask = np.zeros((len(token_ids), longest), dtype=np.int64)  # [R, T]
    for row, tokens in enumerate(token_ids):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)
