"""Per-example clipping arithmetic shared by every runtime (numpy only, pure functions).

The clip rule is Opacus's: factor_i = min(1, C / (‖g_i‖ + 1e-6)), where ‖g_i‖ is the global
L2 norm of example i's gradient over *all* trainable tensors. The ORT training graph
implements the same rule in-graph (``export.ort_backend``); the ExecuTorch path applies it
on the host with these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ondevice.protocol import TensorSpec

CLIP_EPS = 1e-6


def clip_factors(norms: np.ndarray, clip_norm: float) -> np.ndarray:
    """[B] norms → [B] factors min(1, C / (norm + 1e-6)); NaN norms are refused."""
    if not clip_norm > 0 or not np.isfinite(clip_norm):
        raise ValueError(f"clip_norm must be a finite number > 0, found {clip_norm!r}")
    norms = np.asarray(norms, dtype=np.float64)
    if np.any(np.isnan(norms)):
        raise ValueError("per-example gradient norms contain NaN; refusing to clip")
    return np.minimum(1.0, clip_norm / (norms + CLIP_EPS))


def per_example_norms(per_example: Mapping[str, np.ndarray]) -> np.ndarray:
    """Global L2 norm of each example's gradient: tensors [B, *shape] → [B] (float64)."""
    if not per_example:
        raise ValueError("per_example holds no tensors")
    sizes = {name: g.shape[0] for name, g in per_example.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"per-example tensors disagree on the batch size: {sizes}")
    total = np.zeros(next(iter(sizes.values())), dtype=np.float64)  # [B]
    for g in per_example.values():
        total += np.sum(np.square(g.reshape(g.shape[0], -1), dtype=np.float64), axis=1)
    return np.sqrt(total)


def clip_and_sum(
    per_example: Mapping[str, np.ndarray], clip_norm: float, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Σ_i w_i · factor_i · g_i per tensor ([B, *shape] → [*shape], float64).

    ``weights`` [B] (default ones) marks real examples (1) and padding rows (0). Each clipped
    example has norm ≤ C; an example whose norm is infinite is dropped (clipped to 0); NaN raises.
    """
    factors = clip_factors(per_example_norms(per_example), clip_norm)  # [B]
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != factors.shape:
            raise ValueError(f"weights shape {weights.shape} does not match batch {factors.shape}")
        factors = factors * weights
    keep = factors > 0  # drop rows with weight 0 or infinite norm explicitly: inf · 0 is NaN
    return {
        name: np.tensordot(factors[keep], g[keep].astype(np.float64), axes=([0], [0]))
        for name, g in per_example.items()
    }


def flat_to_tensors(flat: np.ndarray, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Split a flat vector [P] into tensors in ``specs`` order (the manifest's trainable order)."""
    total = sum(s.numel for s in specs)
    if flat.ndim != 1 or flat.shape[0] != total:
        raise ValueError(f"flat vector has shape {flat.shape}, the trainable tensors need ({total},)")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        out[spec.name] = flat[offset : offset + spec.numel].reshape(spec.shape)
        offset += spec.numel
    return out


def tensors_to_flat(tensors: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> np.ndarray:
    """Concatenate tensors in ``specs`` order into one flat vector [P]."""
    missing = [s.name for s in specs if s.name not in tensors]
    if missing or len(tensors) != len(specs):
        raise ValueError(f"tensors do not match the specs: missing {missing[:3]}, have {len(tensors)} of {len(specs)}")
    return np.concatenate([np.asarray(tensors[s.name]).reshape(-1) for s in specs])
