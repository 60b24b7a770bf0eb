"""The round config's optional seed methods, as pure numpy functions.

All three only post-process quantities that are already private (the current weights, the
previous step's noised update) or fixed by the server, so none costs extra privacy:

* **DP-SAT** (Park et al. 2023): evaluate the step's gradient at θ + ρ·d/‖d‖, where d is the
  previous step's noised update direction θ_{t−1} − θ_t (= lr · the previous noised gradient
  for SGD), then apply the update to θ itself.
* **Unit-level sparsity**: freeze the p-fraction least important *input* units of every
  ``lora_A`` [r, in] (importance: column sums of |A|) and *output* units of every ``lora_B``
  [out, r] (importance: row sums of |B|). Ties (e.g. an all-zero fresh ``lora_B``) break by
  unit index, which is data-independent.
* **DyLoRA-style rank**: train only the first r′ rank components: rows ``[:r′]`` of ``lora_A``
  and columns ``[:, :r′]`` of ``lora_B``; the update carries only those slices.

Frozen coordinates get no noise and are restored after every optimizer step, so they never
move; the head is never masked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ondevice.protocol import TensorSpec

LORA_A = ".lora_A.weight"
LORA_B = ".lora_B.weight"


def check_train_rank(train_rank: int | None, lora_rank: int) -> int:
    """The rank to train: ``train_rank`` if 1 ≤ r′ ≤ r, the full rank for None; ValueError otherwise."""
    if train_rank is None:
        return lora_rank
    if isinstance(train_rank, bool) or not isinstance(train_rank, int) or not 1 <= train_rank <= lora_rank:
        raise ValueError(f"train_rank must be an int in 1..{lora_rank} (the bundle's LoRA rank), found {train_rank!r}")
    return train_rank


def _least_important(importance: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the ⌊fraction·n⌋ smallest entries of [n] importance (stable: ties by index)."""
    count = math.floor(fraction * importance.shape[0])
    return np.argsort(importance, kind="stable")[:count]


def trainable_masks(
    params: Mapping[str, np.ndarray],
    specs: Sequence[TensorSpec],
    lora_rank: int,
    train_rank: int | None = None,
    unit_sparsity: float = 0.0,
) -> dict[str, np.ndarray]:
    """Boolean masks (True = trained) per tensor, from the current (already private) weights."""
    rank = check_train_rank(train_rank, lora_rank)
    if not 0.0 <= unit_sparsity <= 0.95:
        raise ValueError(f"unit_sparsity must be in [0, 0.95], found {unit_sparsity!r}")
    masks: dict[str, np.ndarray] = {}
    for spec in specs:
        mask = np.ones(spec.shape, dtype=bool)
        weight = np.abs(np.asarray(params[spec.name], dtype=np.float64))
        if spec.name.endswith(LORA_A):  # [r, in]
            mask[rank:, :] = False
            mask[:, _least_important(weight[:rank].sum(axis=0), unit_sparsity)] = False
        elif spec.name.endswith(LORA_B):  # [out, r]
            mask[:, rank:] = False
            mask[_least_important(weight[:, :rank].sum(axis=1), unit_sparsity), :] = False
        masks[spec.name] = mask
    return masks


def masks_are_trivial(masks: Mapping[str, np.ndarray]) -> bool:
    return all(bool(m.all()) for m in masks.values())


def flat_mask(masks: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> np.ndarray:
    """Masks concatenated in ``specs`` order → bool [P]."""
    return np.concatenate([masks[s.name].reshape(-1) for s in specs])


def restore_frozen_inplace(
    params: dict[str, np.ndarray], before: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
) -> None:
    """params[~mask] = before[~mask] for every tensor (frozen coordinates never move)."""
    for name, mask in masks.items():
        if not mask.all():
            params[name][~mask] = before[name][~mask]


def sat_perturbation(previous_update: Mapping[str, np.ndarray] | None, rho: float) -> dict[str, np.ndarray] | None:
    """ρ · d / ‖d‖ (global L2 norm) for the previous noised update d, or None (first step, ρ = 0, d = 0)."""
    if rho < 0 or not math.isfinite(rho):
        raise ValueError(f"dp_sat_rho must be a finite number >= 0, found {rho!r}")
    if previous_update is None or rho == 0:
        return None
    norm = math.sqrt(sum(float(np.sum(np.square(d, dtype=np.float64))) for d in previous_update.values()))
    if norm == 0 or not math.isfinite(norm):
        return None
    return {k: (rho / norm * np.asarray(d, dtype=np.float64)).astype(np.float32) for k, d in previous_update.items()}


def slice_to_rank(tensors: Mapping[str, np.ndarray], train_rank: int | None) -> dict[str, np.ndarray]:
    """Keep the trained rank components only: lora_A [r, in] → [r′, in], lora_B [out, r] → [out, r′]."""
    if train_rank is None:
        return {k: np.asarray(v) for k, v in tensors.items()}
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if name.endswith(LORA_A):
            out[name] = np.ascontiguousarray(value[:train_rank, :])
        elif name.endswith(LORA_B):
            out[name] = np.ascontiguousarray(value[:, :train_rank])
        else:
            out[name] = np.asarray(value)
    return out


def expand_from_rank(tensors: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Inverse of ``slice_to_rank`` for a delta: zero-fill the untrained components to full shapes."""
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        value = np.asarray(tensors[spec.name])
        full = np.zeros(spec.shape, dtype=value.dtype)
        full[tuple(slice(0, n) for n in value.shape)] = value
        out[spec.name] = full
    return out
