"""The device's upload: its adapter delta, clipped to the round's norm S, as an ``AdapterUpdate``.

Client-side clipping for DP-FedAvg: Δ = θ_local − θ_global (float64), kept to the trained rank
(``train_rank``), scaled by min(1, S / ‖Δ‖) with ‖·‖ the global L2 norm over all tensors, then
cast to the round's dtype. If the cast (fp16 rounding) pushes the norm above S, the delta is
shrunk by the excess and cast again, so the encoded update always satisfies ‖Δ‖ ≤ S.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping

import numpy as np

from ondevice.protocol import AdapterUpdate, RoundConfig
from ondevice.seed_methods import slice_to_rank


def global_norm(tensors: Mapping[str, np.ndarray]) -> float:
    """L2 norm over all tensors, in float64."""
    return math.sqrt(sum(float(np.sum(np.square(np.asarray(t, dtype=np.float64)))) for t in tensors.values()))


def clip_delta(delta: Mapping[str, np.ndarray], max_norm: float, dtype: str) -> dict[str, np.ndarray]:
    """Scale ``delta`` to global norm ≤ ``max_norm`` and cast to ``dtype`` (norm checked after the cast)."""
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"max_norm must be a finite number > 0, found {max_norm!r}")
    values = {k: np.asarray(v, dtype=np.float64) for k, v in delta.items()}
    norm = global_norm(values)
    if not math.isfinite(norm):
        raise ValueError("the adapter delta is not finite; refusing to upload it")
    factor = min(1.0, max_norm / norm) if norm > 0 else 1.0
    for _ in range(8):
        cast = {k: (v * factor).astype(dtype) for k, v in values.items()}
        cast_norm = global_norm(cast)
        if cast_norm <= max_norm:
            return cast
        factor *= max_norm / cast_norm * (1 - 1e-4)
    raise RuntimeError(f"could not bring the delta under {max_norm} after casting to {dtype}")


def build_update(
    round_config: RoundConfig,
    device_id: str,
    global_params: Mapping[str, np.ndarray],
    local_params: Mapping[str, np.ndarray],
    local_epsilon: float,
    local_delta: float,
    nonce: str | None = None,
) -> AdapterUpdate:
    """The clipped, typed delta with its metadata; ``nonce`` defaults to 128 random bits (``secrets``)."""
    missing = sorted(set(global_params) ^ set(local_params))
    if missing:
        raise ValueError(f"global and local parameters disagree on tensors {missing[:3]}")
    delta = {k: np.asarray(local_params[k], dtype=np.float64) - np.asarray(global_params[k]) for k in global_params}
    sliced = slice_to_rank(delta, round_config.dp.train_rank)
    tensors = clip_delta(sliced, round_config.update_clip_norm, round_config.update_dtype)
    return AdapterUpdate(
        round_id=round_config.round_id,
        device_id=device_id,
        manifest_hash=round_config.manifest_hash,
        global_adapter_version=round_config.global_adapter_version,
        tensors=tensors,
        dp=round_config.dp,
        local_epsilon=local_epsilon,
        local_delta=local_delta,
        nonce=nonce or secrets.token_hex(16),
    )
