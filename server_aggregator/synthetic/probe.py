"""DP linear probe: the classifier's head trained with DP-SGD on frozen encoder embeddings.

The encoder (MiniLM, with whatever LoRA the classifier already carries) is frozen, so each
private example's mean-pooled embedding x_i [H] is computed once; the head z = W x + b is a
softmax regression whose per-example gradient has a closed form (no autograd, no Opacus)::

    g_i = (softmax(W x_i + b) - e_{y_i}) ⊗ [x_i, 1]        ‖g_i‖ = ‖p_i - e_{y_i}‖ · √(‖x_i‖² + 1)

Each step: Poisson sample (rate q = B/n, decisions from the ``RandomSource``), clip every g_i to C,
sum, add N(0, (σC)² I) from the ``RandomSource``, divide by the expected batch B, then an Adam
update (post-processing of the privatised gradient). A step costs microseconds, so the planner can
afford thousands of steps of large batches: σ/B becomes small. The trained (W, b) is the
classifier's head; its encoder is untouched, so the phone bundle is the same model family.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from export.classifier import Classifier, additive_attention_mask, mean_pool
from ondevice.randomness import RandomSource, gaussian_noise
from ondevice.sampling import poisson_sample
from server_aggregator.synthetic.dp_sgd import DpSgdPlan


@dataclass(frozen=True)
class ProbeTraining:
    """The probe's optimiser settings (σ, B, T come from a ``DpSgdPlan``)."""

    learning_rate: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8

    def __post_init__(self) -> None:
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be a finite number > 0, found {self.learning_rate!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), found {value!r}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be > 0, found {self.adam_eps!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def embed_texts(clf: Classifier, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Mean-pooled encoder outputs [N, H] float32: exactly what the classifier's head sees."""
    clf.model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), clf.model.head.in_features), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = clf.encode([texts[i] for i in idx])
        mask = additive_attention_mask(batch["attention_mask"])  # [b, 1, 1, T]
        hidden = clf.model.encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state  # [b, T, H]
        out[idx] = mean_pool(hidden, batch["attention_mask"]).numpy()
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)  # [b, L]
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def per_example_gradients(
    weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-entropy gradients of each example: gW [b, L, H], gb [b, L], and per-example losses [b]."""
    p = _softmax(x @ weight.T + bias)  # [b, L]
    losses = -np.log(np.clip(p[np.arange(len(y)), y], 1e-30, None))  # [b]
    r = p.copy()
    r[np.arange(len(y)), y] -= 1.0  # [b, L]: p - e_y
    return r[:, :, None] * x[:, None, :], r, losses


def clipped_sum(
    gw: np.ndarray, gb: np.ndarray, clip_norm: float, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Σ_i w_i · g_i · min(1, C/‖g_i‖) over the batch → ([L, H], [L]); ‖·‖ over all of (W, b).

    ``weights`` [b] in [0, 1] (class weights): each contribution stays ≤ C, so the sensitivity is C.
    """
    norms = np.sqrt((gw.astype(np.float64) ** 2).sum(axis=(1, 2)) + (gb.astype(np.float64) ** 2).sum(axis=1))  # [b]
    scale = np.minimum(1.0, clip_norm / np.maximum(norms, 1e-30))  # [b]
    if weights is not None:
        scale = scale * weights
    return (gw * scale[:, None, None]).sum(axis=0), (gb * scale[:, None]).sum(axis=0)


def noisy_label_counts(y: np.ndarray, num_labels: int, noise_std: float, random_source: RandomSource) -> np.ndarray:
    """Gaussian mechanism on the label histogram [L] (add/remove-one sensitivity 1 in L2)."""
    if not math.isfinite(noise_std) or noise_std <= 0:
        raise ValueError(f"noise_std must be a finite number > 0, found {noise_std!r}")
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_labels).astype(np.float64)  # [L]
    noisy: np.ndarray = counts + gaussian_noise(random_source, num_labels, noise_std)
    return noisy


def balanced_class_weights(counts: np.ndarray) -> np.ndarray:
    """Weights [L] in (0, 1] proportional to 1/count (the rarest class gets 1), from (noisy) counts."""
    safe = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    weights: np.ndarray = safe.min() / safe
    return weights


@dataclass(frozen=True)
class ProbeResult:
    weight: np.ndarray  # [L, H]
    bias: np.ndarray  # [L]
    losses: tuple[float, ...]  # mean loss of each step's batch before its update (nan: empty batch)
    batch_sizes: tuple[int, ...]


def privatised_gradient(
    weight: np.ndarray,
    bias: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    plan: DpSgdPlan,
    random_source: RandomSource,
    class_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """One DP-SGD gradient of the head on the (already Poisson-sampled) batch x [b, H], y [b]:
    (Σ clipped + N(0, (σC)² I)) / B as a flat [L·H + L] vector (W row-major, then b), and the batch's mean loss."""
    if x.shape[0]:
        gw, gb, batch_losses = per_example_gradients(weight, bias, x, y)
        weights = None if class_weights is None else class_weights[y]  # [b]
        sw, sb = clipped_sum(gw, gb, plan.clip_norm, weights)
        loss = float(batch_losses.mean())
    else:
        sw, sb, loss = np.zeros_like(weight), np.zeros_like(bias), float("nan")
    flat = np.concatenate([sw.ravel(), sb])  # [L·H + L]
    flat = flat + gaussian_noise(random_source, flat.size, plan.noise_std)
    return flat / plan.expected_batch_size, loss


def train_dp_probe(
    x: np.ndarray,
    y: np.ndarray,
    plan: DpSgdPlan,
    settings: ProbeTraining,
    random_source: RandomSource,
    *,
    init: tuple[np.ndarray, np.ndarray],
    class_weights: np.ndarray | None = None,
    on_step: Callable[[int, float, int], None] | None = None,
) -> ProbeResult:
    """``plan.steps`` DP-SGD steps of the softmax head from ``init`` = (W [L, H], b [L]).

    ``class_weights`` [L] in [0, 1] scale each clipped example's gradient by its label's weight
    (e.g. ``balanced_class_weights`` of DP label counts, so macro-F1 does not sink to the majority).
    """
    n, h = x.shape
    if n != plan.num_examples or len(y) != n:
        raise ValueError(f"the plan is for {plan.num_examples} examples but x has {n} rows and y {len(y)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinity; the encoder output is broken")
    weight, bias = (np.asarray(a, dtype=np.float64).copy() for a in init)
    if weight.ndim != 2 or weight.shape[1] != h or bias.shape != (weight.shape[0],):
        raise ValueError(f"init shapes {weight.shape}, {bias.shape} do not fit features of width {h}")
    labels = weight.shape[0]
    y = np.asarray(y, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= labels):
        raise ValueError(f"labels must be in 0..{labels - 1}, found {y.min()}..{y.max()}")
    if class_weights is not None:
        class_weights = np.asarray(class_weights, dtype=np.float64)
        if class_weights.shape != (labels,) or not np.all((class_weights >= 0) & (class_weights <= 1)):
            raise ValueError(f"class_weights must be {labels} numbers in [0, 1], found {class_weights!r}")
    x64 = x.astype(np.float64)
    m = np.zeros(labels * (h + 1))
    v = np.zeros(labels * (h + 1))
    losses: list[float] = []
    sizes: list[int] = []
    for step in range(plan.steps):
        idx = poisson_sample(n, plan.sampling_rate, random_source)  # [b]
        grad, loss = privatised_gradient(weight, bias, x64[idx], y[idx], plan, random_source, class_weights)
        m = settings.beta1 * m + (1 - settings.beta1) * grad
        v = settings.beta2 * v + (1 - settings.beta2) * grad**2
        m_hat = m / (1 - settings.beta1 ** (step + 1))
        v_hat = v / (1 - settings.beta2 ** (step + 1))
        update = settings.learning_rate * m_hat / (np.sqrt(v_hat) + settings.adam_eps)
        weight -= update[: labels * h].reshape(labels, h)
        bias -= update[labels * h :]
        losses.append(loss)
        sizes.append(int(idx.size))
        if on_step is not None:
            on_step(step, loss, int(idx.size))
    return ProbeResult(weight.astype(np.float32), bias.astype(np.float32), tuple(losses), tuple(sizes))


def install_head(clf: Classifier, weight: np.ndarray, bias: np.ndarray) -> None:
    """Write a trained probe into the classifier's head (shapes must match)."""
    head = clf.model.head
    if tuple(weight.shape) != tuple(head.weight.shape) or tuple(bias.shape) != tuple(head.bias.shape):
        raise ValueError(f"probe shapes {weight.shape}/{bias.shape} differ from the head's {tuple(head.weight.shape)}")
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32)))
        head.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))


def head_state(clf: Classifier) -> tuple[np.ndarray, np.ndarray]:
    head = clf.model.head
    return head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()


def predict(weight: np.ndarray, bias: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Predicted labels [N] of the probe on features ``x`` [N, H]."""
    return np.asarray((x @ weight.T + bias).argmax(axis=1))
