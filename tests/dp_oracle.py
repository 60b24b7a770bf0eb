"""An independent PyTorch oracle for per-example clipped, summed, noised gradients.

Batch-1 autograd through the eager classifier, one example at a time; clipping and noise
written here from the definition (not imported from ondevice.dp_math), so a runtime that
is wrong and a helper that is wrong in the same way cannot agree by accident.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from export.classifier import Classifier


def per_example_gradients(clf: Classifier, texts: Sequence[str], labels: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """One dict of float64 gradients (canonical names) per example, from batch-1 autograd.

    Each example is tokenized alone (no padding), loss = cross-entropy of that example.
    """
    model = clf.model
    model.eval()  # dropout off (LoRA dropout is 0; MiniLM dropout would break determinism)
    params = clf.trainable_parameters()
    grads = []
    for text, label in zip(texts, labels, strict=True):
        batch = clf.encode([text])
        logits = model(batch["input_ids"], batch["attention_mask"])  # [1, L]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([label]))
        values = torch.autograd.grad(loss, list(params.values()))
        grads.append({n: g.detach().double().numpy() for n, g in zip(params, values, strict=True)})
    return grads


def clipped_noised_sum(
    grads: list[dict[str, np.ndarray]],
    clip_norm: float,
    noise: dict[str, np.ndarray],
    scale: float,
    weights: list[float] | None = None,
) -> dict[str, np.ndarray]:
    """scale · (Σ_i w_i · g_i · min(1, C / (‖g_i‖ + 1e-6)) + noise), float64, from first principles
    (w_i = 1 when ``weights`` is None)."""
    total = {n: np.zeros_like(g) for n, g in grads[0].items()}
    for i, g in enumerate(grads):
        norm = float(np.sqrt(sum(float((v * v).sum()) for v in g.values())))
        factor = min(1.0, clip_norm / (norm + 1e-6)) * (1.0 if weights is None else weights[i])
        for n, v in g.items():
            total[n] += factor * v
    return {n: scale * (total[n] + noise[n].astype(np.float64)) for n in total}
