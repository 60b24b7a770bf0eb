"""A cohort's local rounds, vectorized: the phone's ``LocalTrainer`` rule for many clients at once.

Per local step t and client c (exactly ``ondevice.trainer.LocalTrainer.run_round``, runtime
``executorch``'s host arithmetic):

1. ``source = source_for(c, t)``; ``chosen = poisson_sample(n_c, q, source)``; then
   ``noise = gaussian_noise(source, P, σ·C)``, zero on coordinates the round freezes;
2. per-example gradients of every chosen row at the client's current parameters
   (``CohortModel``: one batched forward/backward for all clients' rows),
   factor = min(1, C / (‖g‖ + 1e-6)) over all trainable tensors, times the round's class weight
   of the row's label (``DpConfig.class_weights``; 1 when unset), summed per client in float64;
3. g_c = (Σ clipped + noise) / (q·n_c) in float64, the optimizer step in float32 (SGD or ORT's
   AdamW, ``ondevice.optim``), frozen coordinates restored;
4. after the last step the upload is ``ondevice.update``'s: Δ = θ_c − θ_global (float64), kept to
   the trained rank, clipped to S and cast to the round's dtype.

Not simulated (refused with a message): DP-SAT (ρ > 0). Optimizer state starts fresh each round
(a real device may carry AdamW moments across rounds; with Poisson cohorts a user rarely
returns within a run, and keeping 10^4 users' moments would cost 0.6 MB each).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ondevice.dp_math import CLIP_EPS, flat_to_tensors
from ondevice.optim import make_host_optimizer
from ondevice.protocol import DpConfig, TensorSpec
from ondevice.randomness import RandomSource, gaussian_noise
from ondevice.sampling import poisson_sample
from ondevice.seed_methods import flat_mask, slice_to_rank, trainable_masks
from ondevice.update import clip_delta
from server_aggregator.simulation.cohort_model import CohortModel, pad_rows

MAX_CHUNK_TOKENS = 4096
"""Padded tokens per batched forward/backward (≈ 0.5 GB of saved activations for MiniLM-L6)."""

SourceFor = Callable[[int, int], RandomSource]
"""(client position in the cohort, local step) → that step's RandomSource (sampling, then noise)."""


@dataclass(frozen=True)
class ClientExamples:
    """One client's examples: token id arrays [T_i] and labels."""

    token_ids: tuple[np.ndarray, ...]
    labels: np.ndarray  # [n] int64

    def __post_init__(self) -> None:
        if len(self.token_ids) == 0:
            raise ValueError("a client needs at least one example")
        if len(self.token_ids) != len(self.labels):
            raise ValueError(f"{len(self.token_ids)} token arrays but {len(self.labels)} labels")


@dataclass(frozen=True)
class CohortSteps:
    """What the cohort's local steps produced."""

    parameters: np.ndarray  # [C, P] float32, each client's final local parameters
    rows_per_step: tuple[int, ...]  # example-gradients computed at each local step (all clients)
    mean_loss: float  # mean per-example loss over all rows (nan when no row was sampled)


def check_simulated(dp: DpConfig) -> None:
    """ValueError for round settings the simulator does not reproduce."""
    if dp.dp_sat_rho != 0:
        raise ValueError(f"dp_sat_rho={dp.dp_sat_rho!r}: DP-SAT is not simulated; use dp_sat_rho=0")


def round_masks(
    global_params: dict[str, np.ndarray], specs: Sequence[TensorSpec], lora_rank: int, dp: DpConfig
) -> np.ndarray:
    """The round's trained coordinates, flat bool [P] (the device's ``trainable_masks`` on the global weights)."""
    masks = trainable_masks(global_params, specs, lora_rank, dp.train_rank, dp.unit_sparsity)
    return flat_mask(masks, specs)


def run_local_steps(
    model: CohortModel,
    global_flat: np.ndarray,
    clients: Sequence[ClientExamples],
    dp: DpConfig,
    trained: np.ndarray,
    source_for: SourceFor,
    *,
    max_rows: int = 128,
) -> CohortSteps:
    """Every client's ``dp.local_steps`` DP-SGD steps from ``global_flat`` [P]; see the module docstring."""
    check_simulated(dp)
    num_clients, num_params = len(clients), model.num_params
    if global_flat.shape != (num_params,) or trained.shape != (num_params,):
        raise ValueError(f"global_flat and trained must have shape ({num_params},)")
    params = np.repeat(global_flat.astype(np.float32)[None], num_clients, axis=0)  # [C, P]
    frozen = ~trained
    optimizers = [make_host_optimizer(dp.optimizer, dp.learning_rate) for _ in range(num_clients)]
    sizes = np.array([len(c.token_ids) for c in clients], dtype=np.float64)  # [C]
    scales = 1.0 / (dp.sampling_rate * sizes)  # [C]
    std = dp.noise_multiplier * dp.clip_norm
    rows_per_step: list[int] = []
    loss_sum, loss_rows = 0.0, 0
    for step in range(dp.local_steps):
        chosen: list[np.ndarray] = []
        noise = np.empty((num_clients, num_params), dtype=np.float32)  # [C, P]
        for c, client in enumerate(clients):
            source = source_for(c, step)
            chosen.append(poisson_sample(len(client.token_ids), dp.sampling_rate, source))
            noise[c] = gaussian_noise(source, num_params, std)
        noise[:, frozen] = 0.0
        rows = [(c, int(i)) for c in range(num_clients) for i in chosen[c]]
        totals, batch_loss = _clipped_sums(model, params, clients, rows, dp, max_rows)  # [C, P] float64
        loss_sum += batch_loss
        loss_rows += len(rows)
        rows_per_step.append(len(rows))
        before = params.copy() if frozen.any() else None
        for c in range(num_clients):
            gradient = scales[c] * (totals[c] + noise[c].astype(np.float64))  # [P] float64
            optimizers[c].step_inplace({"flat": params[c]}, {"flat": gradient})
        if before is not None:
            params[:, frozen] = before[:, frozen]
    return CohortSteps(params, tuple(rows_per_step), loss_sum / loss_rows if loss_rows else math.nan)


def _clipped_sums(
    model: CohortModel,
    params: np.ndarray,
    clients: Sequence[ClientExamples],
    rows: Sequence[tuple[int, int]],
    dp: DpConfig,
    max_rows: int,
) -> tuple[np.ndarray, float]:
    """Σ over each client's rows of w_y·min(1, C/(‖g‖+1e-6))·g (float64 [C, P]) and the rows' summed loss."""
    totals = torch.zeros(params.shape, dtype=torch.float64)  # [C, P]
    table = torch.from_numpy(params)  # [C, P] float32, shared memory
    lengths = [len(clients[c].token_ids[i]) for c, i in rows]
    order = sorted(range(len(rows)), key=lambda r: lengths[r])
    loss_sum = 0.0
    for chunk_rows in token_chunks([lengths[r] for r in order], max_rows):
        chunk = [rows[order[r]] for r in chunk_rows]
        owners = torch.tensor([c for c, _ in chunk], dtype=torch.int64)  # [R]
        ids, mask = pad_rows([clients[c].token_ids[i] for c, i in chunk], pad_id=0)  # [R, T]
        labels = torch.tensor([int(clients[c].labels[i]) for c, i in chunk], dtype=torch.int64)  # [R]
        grads, losses = model.per_example_gradients(ids, mask, labels, table[owners])  # [R, P], [R]
        grads64 = grads.to(torch.float64)
        norms = torch.linalg.vector_norm(grads64, dim=1)  # [R]
        if torch.isnan(norms).any():
            raise ValueError("per-example gradient norms contain NaN; refusing to clip")
        factors = torch.clamp(dp.clip_norm / (norms + CLIP_EPS), max=1.0)  # [R]
        label_weights = dp.label_weights(labels.numpy())  # [R] or None
        if label_weights is not None:
            factors = factors * torch.from_numpy(label_weights)
        keep = factors > 0  # an infinite norm is dropped, as on the device
        totals.index_add_(0, owners[keep], grads64[keep] * factors[keep, None])
        loss_sum += float(losses.sum())
    return totals.numpy(), loss_sum


def token_chunks(sorted_lengths: Sequence[int], max_rows: int, max_tokens: int = MAX_CHUNK_TOKENS) -> list[range]:
    """Consecutive row ranges of length-sorted rows with ≤ ``max_rows`` rows and rows × longest ≤ ``max_tokens``
    (at least one row each): bounds activation memory whatever the text lengths."""
    chunks: list[range] = []
    start = 0
    while start < len(sorted_lengths):
        end = start + 1
        while (
            end < len(sorted_lengths)
            and end - start < max_rows
            and (end - start + 1) * sorted_lengths[end] <= max_tokens
        ):
            end += 1
        chunks.append(range(start, end))
        start = end
    return chunks


def client_update(
    global_flat: np.ndarray,
    local_flat: np.ndarray,
    specs: Sequence[TensorSpec],
    *,
    train_rank: int | None,
    update_clip_norm: float,
    update_dtype: str,
) -> dict[str, np.ndarray]:
    """The tensors a device uploads (``ondevice.update.build_update``): Δ kept to rank, clipped, cast."""
    delta = flat_to_tensors(local_flat.astype(np.float64) - global_flat.astype(np.float64), specs)
    return clip_delta(slice_to_rank(delta, train_rank), update_clip_norm, update_dtype)
