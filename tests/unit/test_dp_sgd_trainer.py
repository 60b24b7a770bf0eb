"""train_dp_sgd: micro-batches (one noise draw per logical step), mid-stage checkpoints, optimisers, lr schedules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ondevice.randomness import make_random_source
from server_aggregator.synthetic.config import DpTraining
from server_aggregator.synthetic.dp_sgd import (
    Checkpointing,
    DpSgdPlan,
    clipped_noised_gradient,
    scheduled_learning_rate,
    train_dp_sgd,
)

N, H = 64, 5
_rng = np.random.default_rng(0)
X = torch.tensor(_rng.normal(size=(N, H)) * 3, dtype=torch.float32)
Y = torch.tensor(_rng.integers(0, 2, size=N))
PLAN = DpSgdPlan(N, 24, 6, 0.8, 1.0, 1e-6, 5.0)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(H, 2)


def loss(m: nn.Module, indices: Sequence[int]) -> torch.Tensor:
    idx = torch.tensor(list(indices))
    return nn.functional.cross_entropy(m(X[idx]), Y[idx], reduction="none")  # [b]


def run(
    micro: int | None,
    checkpointing: Checkpointing | None = None,
    seed: int = 5,
    learning_rate: float = 0.1,
    **kw: object,
) -> nn.Module:
    m = model()
    train_dp_sgd(
        m,
        list(m.parameters()),
        loss,
        PLAN,
        learning_rate=learning_rate,
        random_source=make_random_source("seeded", seed),
        micro_batch_size=micro,
        checkpointing=checkpointing,
        **kw,  # type: ignore[arg-type]
    )
    return m


def test_micro_batches_give_the_same_step_as_one_batch() -> None:
    whole = run(None)
    pieces = run(5, sort_key=lambda i: -i)
    moved = [float((a - b).abs().max()) for a, b in zip(whole.parameters(), model().parameters(), strict=True)]
    assert max(moved) > 1e-3  # training moved the weights
    for a, b in zip(whole.parameters(), pieces.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_stopped_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    checkpoint = Checkpointing(tmp_path / "ckpt.pt", every=2)
    seen: list[int] = []

    def stop_at_three(step: int, value: float, size: int) -> None:
        seen.append(step)
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(None, checkpoint, on_step=stop_at_three)
    assert seen == [0, 1, 2, 3]
    saved = torch.load(checkpoint.path, weights_only=False)
    assert saved["step"] == 2 and len(saved["losses"]) == 2
    resumed_steps: list[int] = []
    m = model()
    result = train_dp_sgd(
        m,
        list(m.parameters()),
        loss,
        PLAN,
        learning_rate=0.1,
        random_source=make_random_source("seeded", 9),
        checkpointing=checkpoint,
        on_step=lambda s, v, b: resumed_steps.append(s),
    )
    assert resumed_steps == [2, 3, 4, 5]  # continued where the checkpoint stopped, not from step 0
    assert len(result.losses) == PLAN.steps and result.losses[:2] == tuple(saved["losses"])
    assert torch.load(checkpoint.path, weights_only=False)["step"] == PLAN.steps
    other = DpSgdPlan(N, 24, 7, 0.8, 1.0, 1e-6, 5.0)
    with pytest.raises(ValueError, match="another plan"):
        train_dp_sgd(
            m,
            list(m.parameters()),
            loss,
            other,
            learning_rate=0.1,
            random_source=make_random_source("seeded", 1),
            checkpointing=checkpoint,
        )


@pytest.mark.parametrize("lr_schedule", ["constant", "linear"])
def test_sgd_steps_equal_the_privatised_gradient_oracle(lr_schedule: str) -> None:
    """Plain SGD applies exactly lr_s times the privatised gradient (clip, sum, noise, ÷ B) of each step,
    with lr_s the schedule's rate: rebuilt step by step from ``clipped_noised_gradient`` on the same
    Poisson batches and the same noise stream."""
    batches = [np.asarray(b) for b in ([0, 3, 5, 9, 11], [2, 4, 6], [1, 7, 8, 20, 30, 40], [], [10, 12], [13])]
    trained = run(None, seed=3, learning_rate=0.5, batches=batches, optimizer="sgd", lr_schedule=lr_schedule)
    oracle = model()
    source = make_random_source("seeded", 3)
    for step, batch in enumerate(batches):
        rate = 0.5 * (1 - step / PLAN.steps) if lr_schedule == "linear" else 0.5
        grads = clipped_noised_gradient(oracle, list(oracle.parameters()), loss, batch.tolist(), PLAN, source)
        with torch.no_grad():
            for p, g in zip(oracle.parameters(), grads, strict=True):
                p -= rate * torch.from_numpy(g)
    moved = max(float((a - b).abs().max()) for a, b in zip(trained.parameters(), model().parameters(), strict=True))
    assert moved > 1e-2
    for a, b in zip(trained.parameters(), oracle.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_learning_rate_schedules_and_bad_names() -> None:
    assert [scheduled_learning_rate(0.8, s, 4, "linear") for s in range(4)] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert scheduled_learning_rate(0.8, 3, 4, "constant") == 0.8
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        scheduled_learning_rate(0.8, 0, 4, "cosine")
    with pytest.raises(ValueError, match="step must be in 0..3"):
        scheduled_learning_rate(0.8, 4, 4, "linear")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        run(None, optimizer="lion")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        DpTraining(expected_batch_size=8, max_steps=2, learning_rate=0.1, optimizer="adam")
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        DpTraining(expected_batch_size=8, max_steps=2, learning_rate=0.1, lr_schedule="step")
