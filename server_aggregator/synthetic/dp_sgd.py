"""Central DP-SGD through Opacus: a plan (q, σ, T) from an ε target, per-sample clipping, secure noise.

Used by the synthetic-data stage twice: to fine-tune the generator's LoRA on the private seed
set, and for the "DP-SGD directly on the real data" baseline classifier. The only module that
touches Opacus internals (its optimizer's noise hook); everything else sees ``train_dp_sgd``.

Mechanism, per step (Abadi et al. 2016, as Opacus implements it):
    batch  B_t: every example joins independently with probability q (Poisson; the sampling
           decisions come from the OS CSPRNG, like the noise — they must stay secret too);
    g_i    per-example gradient of the example's own loss (Opacus ``GradSampleModule`` hooks);
    ḡ      = (Σ_i g_i · min(1, C/‖g_i‖) + N(0, (σC)² I)) / (q·n)   — divided by the EXPECTED batch;
    θ      ← optimizer(θ, ḡ).
Accounting: T self-composed PoissonSampled(Gaussian(σ)) events (add/remove-one relation), ε from
PLD (primary) with an RDP cross-check — the same accountants the phones use (``ondevice.accounting``).

Noise: Opacus draws its noise with ``torch.normal`` (Mersenne Twister; its ``secure_mode`` needs
torchcsprng, unmaintained since 2021). ``_SecureNoiseDPOptimizer`` replaces only that draw with
``ondevice.randomness`` sources: the OS CSPRNG in production, a seeded source in tests.

Opacus + PEFT ≥ 0.14 can silently train nothing (opacus #820: hooks registered before a lazy
device move). Here everything stays on the CPU, and tests compare every per-sample gradient with a
batch-1 autograd oracle on the real generator (``tests/e2e/test_synth_dp.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import torch
from dp_accounting.pld import pld_privacy_accountant
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn

from ondevice.accounting import PldAccountant, RdpAccountant, StepEvent
from ondevice.randomness import RandomSource, gaussian_noise
from ondevice.sampling import poisson_sample

DEFAULT_MAX_NOISE_MULTIPLIER = 20.0
"""Beyond this σ a step's noise (σC per coordinate) swamps any batch we can afford on a CPU."""

_CALIBRATION_INTERVAL = 1e-3  # PLD grid used while searching σ (pessimistic: ε only over-estimated)


class PrivacyPlanError(ValueError):
    """No DP-SGD schedule meets the ε target; the message states the smallest workable ε."""


@dataclass(frozen=True)
class DpSgdPlan:
    """What DP-SGD will run and the inputs of its privacy accounting."""

    num_examples: int
    expected_batch_size: int
    steps: int
    noise_multiplier: float
    clip_norm: float
    delta: float
    target_epsilon: float

    def __post_init__(self) -> None:
        if not isinstance(self.num_examples, int) or self.num_examples < 1:
            raise ValueError(f"num_examples must be an int >= 1, found {self.num_examples!r}")
        if not isinstance(self.expected_batch_size, int) or not 1 <= self.expected_batch_size <= self.num_examples:
            raise ValueError(
                f"expected_batch_size must be an int in 1..{self.num_examples} (the data size), "
                f"found {self.expected_batch_size!r}"
            )
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1, found {self.steps!r}")
        if not math.isfinite(self.noise_multiplier) or self.noise_multiplier <= 0:
            raise ValueError(f"noise_multiplier must be a finite number > 0, found {self.noise_multiplier!r}")
        if not math.isfinite(self.clip_norm) or self.clip_norm <= 0:
            raise ValueError(f"clip_norm must be a finite number > 0, found {self.clip_norm!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), found {self.delta!r}")

    @property
    def sampling_rate(self) -> float:
        return self.expected_batch_size / self.num_examples

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to the summed clipped gradients (σ·C)."""
        return self.noise_multiplier * self.clip_norm

    def step_events(self) -> list[StepEvent]:
        return [StepEvent(self.sampling_rate, self.noise_multiplier, self.steps)]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sampling_rate": self.sampling_rate}


def dp_event(sampling_rate: float, noise_multiplier: float, steps: int) -> dp_accounting.DpEvent:
    """T self-composed Poisson-sampled Gaussian steps: the event the ledger and card describe."""
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps
    )


def plan_epsilons(plan: DpSgdPlan) -> dict[str, float]:
    """ε of a plan at its δ from PLD (primary, adaptive grid) and RDP (cross-check, never below PLD)."""
    events = plan.step_events()
    return {
        "pld": PldAccountant().epsilon(events, plan.delta),
        "rdp": RdpAccountant().epsilon(events, plan.delta),
    }


def _epsilon_fast(sampling_rate: float, noise_multiplier: float, steps: int, delta: float) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=_CALIBRATION_INTERVAL)
    accountant.compose(dp_event(sampling_rate, noise_multiplier, steps))
    return float(accountant.get_epsilon(delta))


def calibrate_noise_multiplier(
    epsilon: float, delta: float, sampling_rate: float, steps: int, *, tolerance: float = 1e-3
) -> float:
    """Smallest σ (within ``tolerance``, rounded up) with PLD ε(q, σ, T) ≤ ``epsilon`` at ``delta``."""
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a finite number > 0, found {epsilon!r}")
    low, high = 0.05, 1.0
    while _epsilon_fast(sampling_rate, high, steps, delta) > epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise PrivacyPlanError(f"no noise multiplier up to 1e4 reaches epsilon={epsilon} at delta={delta}")
    while high - low > tolerance:
        mid = 0.5 * (low + high)
        if _epsilon_fast(sampling_rate, mid, steps, delta) > epsilon:
            low = mid
        else:
            high = mid
    return high


def plan_dp_sgd(
    *,
    epsilon: float,
    delta: float,
    num_examples: int,
    expected_batch_size: int,
    max_steps: int,
    clip_norm: float,
    max_noise_multiplier: float = DEFAULT_MAX_NOISE_MULTIPLIER,
) -> DpSgdPlan:
    """The DP-SGD schedule for an ε target: batch fixed (capped at the data size), σ calibrated for
    ``max_steps``; when that σ would exceed ``max_noise_multiplier`` the step count shrinks (fewer
    steps, each with usable noise). No schedule at all → ``PrivacyPlanError`` with the smallest ε."""
    if num_examples < 1:
        raise PrivacyPlanError("no training examples: the private data set is empty")
    batch = min(expected_batch_size, num_examples)
    q = batch / num_examples

    def sigma_for(steps: int) -> float:
        return calibrate_noise_multiplier(epsilon, delta, q, steps)

    smallest = _epsilon_fast(q, max_noise_multiplier, 1, delta)
    if epsilon < smallest:
        raise PrivacyPlanError(
            f"epsilon={epsilon:g} is too small for even one DP-SGD step: with q={q:.4g} (batch {batch} of "
            f"{num_examples} examples) and the largest usable noise multiplier {max_noise_multiplier:g}, one step "
            f"already costs epsilon={smallest:.4g} at delta={delta:g}. Ask for epsilon >= {smallest:.4g}, "
            "or raise --max-noise-multiplier."
        )
    steps = max_steps
    sigma = sigma_for(steps)
    if sigma > max_noise_multiplier:
        low, high = 1, max_steps  # sigma_for(low) <= max (checked above), sigma_for(high) > max
        while high - low > 1:
            mid = (low + high) // 2
            if sigma_for(mid) <= max_noise_multiplier:
                low = mid
            else:
                high = mid
        steps, sigma = low, sigma_for(low)
    plan = DpSgdPlan(num_examples, batch, steps, sigma, clip_norm, delta, epsilon)
    # The adaptive PLD grid can land a hair above the coarse search's ε: nudge σ up until it fits.
    for _ in range(50):
        if PldAccountant().epsilon(plan.step_events(), delta) <= epsilon:
            return plan
        plan = DpSgdPlan(num_examples, batch, steps, plan.noise_multiplier * 1.002, clip_norm, delta, epsilon)
    raise PrivacyPlanError(f"could not fit epsilon={epsilon} with sigma near {sigma:.4g}")  # pragma: no cover


class _SecureNoiseDPOptimizer(DPOptimizer):  # type: ignore[misc]
    """Opacus' DPOptimizer with its noise draw taken from a ``RandomSource`` (one draw per step)."""

    def __init__(self, *args: Any, random_source: RandomSource, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.random_source = random_source

    def add_noise(self) -> None:
        params = list(self.params)
        for p in params:
            _check_processed_flag(p.summed_grad)
        sizes = [p.summed_grad.numel() for p in params]
        std = self.noise_multiplier * self.max_grad_norm
        noise = torch.from_numpy(gaussian_noise(self.random_source, sum(sizes), std))  # [Σ numel]
        for p, chunk in zip(params, torch.split(noise, sizes), strict=True):
            p.grad = (p.summed_grad + chunk.view_as(p.summed_grad).to(p.summed_grad.dtype)).view_as(p)
            _mark_as_processed(p.summed_grad)


PerExampleLoss = Callable[[nn.Module, Sequence[int]], torch.Tensor]
"""(wrapped model, example indices) → per-example losses [b] (each the example's own mean loss)."""


@dataclass(frozen=True)
class DpTrainingResult:
    losses: tuple[float, ...]  # mean per-example loss of each step's batch (nan for an empty batch)
    batch_sizes: tuple[int, ...]


def make_private(
    model: nn.Module, optimizer: torch.optim.Optimizer, plan: DpSgdPlan, random_source: RandomSource
) -> tuple[GradSampleModule, DPOptimizer]:
    """Wrap ``model`` for per-sample gradients and ``optimizer`` for clipping + noise (``loss_reduction="mean"``)."""
    model.train()
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    dp_optimizer = _SecureNoiseDPOptimizer(
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.clip_norm,
        expected_batch_size=plan.expected_batch_size,
        loss_reduction="mean",
        random_source=random_source,
    )
    return wrapped, dp_optimizer


@contextlib.contextmanager
def _quiet_hooks() -> Iterator[None]:
    """Opacus' full backward hooks fire on frozen inputs (only LoRA weights need gradients), and torch
    warns about it on every step; the per-sample gradients are right (tested against an oracle)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        yield


def _empty_batch_grad_samples(optimizer: DPOptimizer) -> None:
    """An empty Poisson batch still takes a (pure-noise) step: zero per-sample gradients [0, ...]."""
    for p in optimizer.params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)


@dataclass(frozen=True)
class Checkpointing:
    """Save the trainer's state every ``every`` steps to ``path`` so an interrupted run resumes there."""

    path: Path
    every: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"checkpoint every must be an int >= 1, found {self.every!r}")


def _plan_key(plan: DpSgdPlan) -> dict[str, Any]:
    return plan.to_dict()


def _load_checkpoint(
    checkpointing: Checkpointing | None,
    plan: DpSgdPlan,
    parameters: Sequence[nn.Parameter],
    optimizer: torch.optim.Optimizer,
) -> tuple[int, list[float], list[int]]:
    """Restore parameters and optimiser state from a checkpoint of the same plan → (next step, losses, sizes)."""
    if checkpointing is None or not checkpointing.path.is_file():
        return 0, [], []
    state = torch.load(checkpointing.path, weights_only=False)
    if state.get("plan") != _plan_key(plan) or len(state["parameters"]) != len(parameters):
        raise ValueError(
            f"{checkpointing.path} is a checkpoint of another plan ({state.get('plan')}); "
            "delete it to start over"
        )
    with torch.no_grad():
        for p, saved in zip(parameters, state["parameters"], strict=True):
            p.copy_(saved)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), list(state["losses"]), list(state["batch_sizes"])


def _save_checkpoint(
    checkpointing: Checkpointing,
    plan: DpSgdPlan,
    step: int,
    parameters: Sequence[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    losses: list[float],
    sizes: list[int],
) -> None:
    state = {
        "plan": _plan_key(plan),
        "step": step,
        "parameters": [p.detach().clone() for p in parameters],
        "optimizer": optimizer.state_dict(),
        "losses": losses,
        "batch_sizes": sizes,
    }
    checkpointing.path.parent.mkdir(parents=True, exist_ok=True)
    staging = checkpointing.path.with_name(checkpointing.path.name + ".partial")
    torch.save(state, staging)
    os.replace(staging, checkpointing.path)


def _micro_batches(indices: np.ndarray, size: int | None, sort_key: Callable[[int], int] | None) -> list[list[int]]:
    """The Poisson batch cut into pieces of ≤ ``size`` (sorted by ``sort_key`` first, to pad less)."""
    order = [int(i) for i in indices]
    if sort_key is not None:
        order.sort(key=sort_key)
    if size is None or len(order) <= size:
        return [order]
    return [order[k : k + size] for k in range(0, len(order), size)]


def draw_poisson_batches(plan: DpSgdPlan, random_source: RandomSource) -> list[np.ndarray]:
    """All ``plan.steps`` Poisson batches of a plan, drawn now (each example independently at rate q)."""
    return [poisson_sample(plan.num_examples, plan.sampling_rate, random_source) for _ in range(plan.steps)]


OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("constant", "linear")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, found {value!r}")


def check_optimizer_choice(optimizer: str, lr_schedule: str) -> None:
    """Refuse an unknown optimiser or learning-rate schedule name, naming the choices."""
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)


def scheduled_learning_rate(learning_rate: float, step: int, steps: int, lr_schedule: str) -> float:
    """The learning rate of 0-based ``step`` of ``steps``: constant, or linear from lr down to lr / steps."""
    _check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    if not 0 <= step < steps:
        raise ValueError(f"step must be in 0..{steps - 1}, found {step!r}")
    if lr_schedule == "constant":
        return learning_rate
    return learning_rate * (1.0 - step / steps)


def _make_optimizer(name: str, parameters: Sequence[nn.Parameter], learning_rate: float) -> torch.optim.Optimizer:
    if name == "sgd":  # plain SGD: the noise enters the weights at its own scale (no per-coordinate rescaling)
        return torch.optim.SGD(parameters, lr=learning_rate)
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)


def train_dp_sgd(
    model: nn.Module,
    parameters: Sequence[nn.Parameter],
    per_example_loss: PerExampleLoss,
    plan: DpSgdPlan,
    *,
    learning_rate: float,
    random_source: RandomSource,
    on_step: Callable[[int, float, int], None] | None = None,
    micro_batch_size: int | None = None,
    sort_key: Callable[[int], int] | None = None,
    checkpointing: Checkpointing | None = None,
    batches: Sequence[np.ndarray] | None = None,
    optimizer: str = "adamw",
    lr_schedule: str = "constant",
) -> DpTrainingResult:
    """Run ``plan.steps`` DP-SGD steps on ``parameters`` and return the per-step losses.

    ``optimizer``: "adamw" (no weight decay) or "sgd" (plain); ``lr_schedule``: "constant" or
    "linear" (lr at step s is lr·(1 − s/T); a resumed run continues the same schedule).

    A large Poisson batch is processed in micro-batches of ≤ ``micro_batch_size`` examples (Opacus'
    skipped steps: each piece's per-example gradients are clipped and summed; the noise is drawn
    once per logical step and the sum divided by the expected batch). ``checkpointing`` saves the
    parameters and optimiser state every few steps; a later call with the same plan resumes there.
    ``batches`` are Poisson batches drawn in advance (``draw_poisson_batches``; one per step, indices
    in the caller's numbering): a stage that must prepare the sampled examples (the generator's
    layer cache) draws them first; the mechanism is the same as drawing each at its step.
    """
    if micro_batch_size is not None and micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be None or >= 1, found {micro_batch_size!r}")
    if batches is not None and len(batches) != plan.steps:
        raise ValueError(f"batches must hold one Poisson batch per step ({plan.steps}), found {len(batches)}")
    check_optimizer_choice(optimizer, lr_schedule)
    inner = _make_optimizer(optimizer, parameters, learning_rate)
    start, losses, sizes = _load_checkpoint(checkpointing, plan, parameters, inner)
    wrapped, dp_optimizer = make_private(model, inner, plan, random_source)
    try:
        with _quiet_hooks():
            for step in range(start, plan.steps):
                for group in inner.param_groups:
                    group["lr"] = scheduled_learning_rate(learning_rate, step, plan.steps, lr_schedule)
                if batches is None:
                    indices = poisson_sample(plan.num_examples, plan.sampling_rate, random_source)  # [b]
                else:
                    indices = np.asarray(batches[step], dtype=np.int64)
                dp_optimizer.zero_grad(set_to_none=True)
                if indices.size == 0:
                    _empty_batch_grad_samples(dp_optimizer)
                    loss_value = float("nan")
                else:
                    pieces = _micro_batches(indices, micro_batch_size, sort_key)
                    total = 0.0
                    for k, piece in enumerate(pieces):
                        if k > 0:
                            dp_optimizer.zero_grad(set_to_none=True)  # keeps the summed clipped gradients
                        per_example = per_example_loss(wrapped, piece)  # [b_k]
                        per_example.mean().backward()  # type: ignore[no-untyped-call]
                        total += float(per_example.detach().sum())
                        if k < len(pieces) - 1:
                            dp_optimizer.signal_skip_step(do_skip=True)
                            dp_optimizer.step()  # clip + accumulate only
                    loss_value = total / int(indices.size)
                dp_optimizer.step()
                losses.append(loss_value)
                sizes.append(int(indices.size))
                if on_step is not None:
                    on_step(step, loss_value, int(indices.size))
                done = step + 1
                if checkpointing is not None and (done % checkpointing.every == 0 or done == plan.steps):
                    _save_checkpoint(checkpointing, plan, done, parameters, inner, losses, sizes)
    finally:
        wrapped._close()
    return DpTrainingResult(tuple(losses), tuple(sizes))


def _grad_of(p: nn.Parameter) -> torch.Tensor:
    if p.grad is None:  # pragma: no cover - Opacus sets every trainable's grad in pre_step
        raise RuntimeError("a trainable parameter received no gradient")
    return p.grad


def clipped_noised_gradient(
    model: nn.Module,
    parameters: Sequence[nn.Parameter],
    per_example_loss: PerExampleLoss,
    indices: Sequence[int],
    plan: DpSgdPlan,
    random_source: RandomSource,
) -> list[np.ndarray]:
    """The privatised gradient one step would apply (clip, sum, noise, ÷ expected batch), without
    stepping: what tests compare with an independent oracle and with the noise scale σC/B."""
    optimizer = torch.optim.SGD(parameters, lr=0.0)
    wrapped, dp_optimizer = make_private(model, optimizer, plan, random_source)
    try:
        dp_optimizer.zero_grad(set_to_none=True)
        if len(indices) == 0:
            _empty_batch_grad_samples(dp_optimizer)
        else:
            with _quiet_hooks():
                per_example_loss(wrapped, list(indices)).mean().backward()  # type: ignore[no-untyped-call]
        if dp_optimizer.pre_step() is False:  # pragma: no cover - only with gradient accumulation
            raise RuntimeError("Opacus skipped the step")
        return [_grad_of(p).detach().numpy().copy() for p in parameters]
    finally:
        wrapped._close()
        for p in parameters:
            p.grad = None
