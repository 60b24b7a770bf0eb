"""The DP linear probe: per-example gradients against autograd, clipping bounds, the noise scale, class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ondevice.randomness import make_random_source
from server_aggregator.synthetic.dp_sgd import DpSgdPlan
from server_aggregator.synthetic.probe import (
    ProbeTraining,
    balanced_class_weights,
    clipped_sum,
    noisy_label_counts,
    per_example_gradients,
    privatised_gradient,
    train_dp_probe,
)
from tests.noise_stats import noise_failures


def autograd_oracle(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Batch-1 torch autograd of each example's cross-entropy, flattened as [W row-major, b]."""
    grads = []
    for i in range(len(y)):
        w = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
        logits = torch.tensor(x[i : i + 1], dtype=torch.float64) @ w.T + b  # [1, L]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y[i : i + 1]))
        gw, gb = torch.autograd.grad(loss, [w, b])
        grads.append(np.concatenate([gw.numpy().ravel(), gb.numpy()]))
    return grads


def test_per_example_gradients_equal_autograd() -> None:
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(3, 7)), rng.normal(size=3)
    x, y = rng.normal(size=(9, 7)) * 4, rng.integers(0, 3, size=9)
    gw, gb, losses = per_example_gradients(weight, bias, x, y)
    for i, oracle in enumerate(autograd_oracle(weight, bias, x, y)):
        np.testing.assert_allclose(np.concatenate([gw[i].ravel(), gb[i]]), oracle, rtol=1e-10, atol=1e-12)
    logits = x @ weight.T + bias
    expected = -(logits[np.arange(9), y] - np.log(np.exp(logits).sum(axis=1)))
    np.testing.assert_allclose(losses, expected, rtol=1e-10)


@pytest.mark.parametrize("scale", [0.0, 1e-3, 1.0, 10.0, 1e6])
def test_every_clipped_contribution_is_at_most_c(scale: float) -> None:
    rng = np.random.default_rng(1)
    weight, bias = rng.normal(size=(2, 5)), rng.normal(size=2)
    x, y = rng.normal(size=(6, 5)) * scale, rng.integers(0, 2, size=6)
    gw, gb, _ = per_example_gradients(weight, bias, x, y)
    for i in range(6):  # one example at a time: its clipped gradient's norm
        sw, sb = clipped_sum(gw[i : i + 1], gb[i : i + 1], 0.5)
        norm = float(np.sqrt((sw**2).sum() + (sb**2).sum()))
        raw = float(np.sqrt((gw[i] ** 2).sum() + (gb[i] ** 2).sum()))
        assert norm <= 0.5 * (1 + 1e-4)
        assert norm == pytest.approx(min(raw, 0.5), rel=1e-9, abs=1e-15)  # unclipped gradients are untouched
    weights = np.array([0.25, 1.0])[y]
    sw, sb = clipped_sum(gw, gb, 0.5, weights)
    each = [clipped_sum(gw[i : i + 1], gb[i : i + 1], 0.5, weights[i : i + 1]) for i in range(6)]
    np.testing.assert_allclose(sw, sum(e[0] for e in each), rtol=1e-12)
    np.testing.assert_allclose(sb, sum(e[1] for e in each), rtol=1e-12)


def test_noise_of_an_empty_batch_has_std_sigma_c_over_b() -> None:
    plan = DpSgdPlan(10_000, 512, 10, 3.0, 0.7, 1e-6, 1.0)
    source = make_random_source("seeded", 7)
    weight, bias = np.zeros((2, 384)), np.zeros(2)
    draws = [
        privatised_gradient(weight, bias, np.zeros((0, 384)), np.zeros(0, dtype=np.int64), plan, source)[0]
        for _ in range(1_299)
    ]
    sample = np.concatenate(draws)[:1_000_000]  # [10⁶]
    assert noise_failures(sample, plan.noise_std / plan.expected_batch_size) == []


def test_privatised_gradient_is_the_clipped_sum_plus_noise_over_b() -> None:
    rng = np.random.default_rng(2)
    weight, bias = rng.normal(size=(2, 4)), rng.normal(size=2)
    x, y = rng.normal(size=(5, 4)) * 10, rng.integers(0, 2, size=5)
    plan = DpSgdPlan(100, 8, 1, 2.0, 1.0, 1e-6, 1.0)
    got, _ = privatised_gradient(weight, bias, x, y, plan, make_random_source("seeded", 3))
    noise = (make_random_source("seeded", 3).standard_normal(10) * plan.noise_std).astype(np.float32)
    clipped = []
    for oracle in autograd_oracle(weight, bias, x, y):  # independent clip of the oracle gradients
        clipped.append(oracle * min(1.0, 1.0 / np.linalg.norm(oracle)))
    np.testing.assert_allclose(got, (np.sum(clipped, axis=0) + noise) / 8, rtol=1e-9, atol=1e-12)


def test_label_counts_noise_and_weights() -> None:
    y = np.array([0] * 700 + [1] * 300)
    draws = np.array([noisy_label_counts(y, 2, 5.0, make_random_source("seeded", s)) for s in range(400)])
    assert abs(draws[:, 0].mean() - 700) < 4 * 5.0 / np.sqrt(400)
    assert draws[:, 1].std() == pytest.approx(5.0, rel=0.15)
    np.testing.assert_allclose(balanced_class_weights(np.array([700.0, 300.0])), [300 / 700, 1.0])
    with pytest.raises(ValueError, match="noise_std"):
        noisy_label_counts(y, 2, 0.0, make_random_source("seeded", 0))


def test_probe_refuses_bad_inputs() -> None:
    plan = DpSgdPlan(4, 2, 1, 1.0, 1.0, 1e-6, 1.0)
    x, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    init = (np.zeros((2, 3)), np.zeros(2))
    source = make_random_source("seeded", 0)
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_dp_probe(bad, y, plan, ProbeTraining(), source, init=init)
    with pytest.raises(ValueError, match="plan is for 4"):
        train_dp_probe(x[:3], y[:3], plan, ProbeTraining(), source, init=init)
    with pytest.raises(ValueError, match="class_weights"):
        train_dp_probe(x, y, plan, ProbeTraining(), source, init=init, class_weights=np.array([2.0, 1.0]))
    with pytest.raises(ValueError, match="labels must be in"):
        train_dp_probe(x, np.array([0, 1, 2, 0]), plan, ProbeTraining(), source, init=init)
    with pytest.raises(ValueError, match="learning_rate"):
        ProbeTraining(learning_rate=0.0)
