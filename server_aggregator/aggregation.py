"""Server aggregation: plain FedAvg, the user-level DP-FedAvg wrapper, adaptive clipping, applying a delta.

Pure numeric code (numpy, float64 inside; no database, no HTTP). The shape follows Flower:
``FedAvg`` is an undecorated strategy, and ``DpFixedClipping`` wraps it like Flower's
``DifferentialPrivacyServerSideFixedClipping`` (McMahan et al. 2018, "Learning differentially
private recurrent language models"): re-clip each client delta to global L2 norm ≤ S, sum the
clipped deltas *unweighted*, add N(0, (z·S)²) per coordinate, divide by the expected number of
clients q·N. ``DpAdaptiveClipping`` adds Andrew et al. 2021 ("Differentially private learning
with adaptive clipping"): the clip norm follows a target quantile of the update norms, estimated
from a noised count of unclipped updates, and the round still costs one Gaussian release with
the noise multiplier the ledger records.

Noise comes from ``ondevice.randomness``: ``SecureRandomSource`` (os.urandom + Box-Muller in
float64; see that module for why, and for its floating-point caveat) unless a source is passed;
``SeededRandomSource`` is for tests only. Draws are made in float64 in sorted tensor-name order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ondevice.randomness import RandomSource, SecureRandomSource

Shapes = Mapping[str, tuple[int, ...]]

# Relative slack below C_t under which the server infers "not clipped" from a received norm: the
# device clips to C_t and may upload fp16, whose rounding (relative error ≤ 2⁻¹¹ ≈ 4.9e-4 per
# coordinate, much less on the global norm) can leave a clipped update slightly below C_t.
BIT_TOLERANCE = 1e-3


def _number(x: object) -> float | None:
    """float(x) for a finite real number (bools excluded), else None."""
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def _positive(owner: str, name: str, x: object) -> float:
    value = _number(x)
    if value is None or value <= 0:
        raise ValueError(f"{owner}.{name} must be a finite number > 0, found {x!r}")
    return value


def _non_negative(owner: str, name: str, x: object) -> float:
    value = _number(x)
    if value is None or value < 0:
        raise ValueError(f"{owner}.{name} must be a finite number >= 0, found {x!r}")
    return value


@dataclass(frozen=True)
class ClientDelta:
    """One client's model delta (trainable name → array, float16/32/64).

    No example count: devices do not send one (it would leave the device in clear), and neither
    aggregation rule here weights by it."""

    tensors: Mapping[str, np.ndarray] = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tensors, Mapping) or not self.tensors:
            raise ValueError(f"ClientDelta.tensors must be a non-empty mapping, found {type(self.tensors).__name__}")
        for name, value in self.tensors.items():
            if not isinstance(name, str) or not isinstance(value, np.ndarray):
                raise ValueError(f"ClientDelta.tensors must map str to numpy arrays, found {name!r}: {type(value)}")
            if not np.issubdtype(value.dtype, np.floating):
                raise ValueError(f"ClientDelta tensor {name!r} must be floating point, found dtype {value.dtype}")


def tensor_shapes(tensors: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """name → shape of every tensor."""
    return {name: tuple(int(d) for d in value.shape) for name, value in tensors.items()}


def _check_layout(tensors: Mapping[str, np.ndarray], shapes: Shapes, where: str) -> None:
    """Exact key set and shapes, else ValueError naming the difference."""
    if set(tensors) != set(shapes):
        missing, extra = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
        raise ValueError(f"{where}: key set differs from the expected one: missing {missing}, unexpected {extra}")
    for name, shape in shapes.items():
        found = tuple(tensors[name].shape)
        if found != tuple(shape):
            raise ValueError(f"{where}: tensor {name!r} has shape {found}, expected {tuple(shape)}")


def _check_finite(tensors: Mapping[str, np.ndarray], where: str) -> None:
    for name in sorted(tensors):
        if not np.all(np.isfinite(tensors[name])):
            raise ValueError(f"{where}: tensor {name!r} holds NaN or inf; refusing to merge it")


def _check_updates(updates: Sequence[ClientDelta], shapes: Shapes, start: int = 0) -> None:
    """Every update is a ClientDelta with exactly ``shapes`` and finite values (checked before any merge);
    ``start`` numbers the updates in messages."""
    for i, update in enumerate(updates, start):
        if not isinstance(update, ClientDelta):
            raise ValueError(f"update {i} must be a ClientDelta, found {type(update).__name__}")
        _check_layout(update.tensors, shapes, f"update {i}")
        _check_finite(update.tensors, f"update {i}")


def _normalise_shapes(shapes: Shapes) -> dict[str, tuple[int, ...]]:
    if not isinstance(shapes, Mapping) or not shapes:
        raise ValueError(f"shapes must be a non-empty mapping name -> shape, found {shapes!r}")
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in shapes.items():
        dims = tuple(shape)
        if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 0 for d in dims):
            raise ValueError(f"shape of {name!r} must be a tuple of ints >= 0, found {shape!r}")
        out[name] = tuple(int(d) for d in dims)
    return out


def global_l2_norm(tensors: Mapping[str, np.ndarray]) -> float:
    """‖Δ‖₂ over all tensors together, in float64; NaN or inf values raise ValueError."""
    _check_finite(tensors, "global_l2_norm")
    flat = [np.asarray(tensors[name], dtype=np.float64).ravel() for name in sorted(tensors)]
    with np.errstate(over="ignore"):
        total = sum(float(np.dot(x, x)) for x in flat)
    if math.isfinite(total):
        return math.sqrt(total)
    # finite values whose squares overflow float64 (|x| ≳ 1e154): rescale by the largest magnitude
    scale = max(float(np.max(np.abs(x))) for x in flat if x.size)
    return scale * math.sqrt(sum(float(np.dot(x / scale, x / scale)) for x in flat))


def clip_to_norm(tensors: Mapping[str, np.ndarray], clip_norm: float) -> tuple[dict[str, np.ndarray], float]:
    """(Δ·min(1, S/‖Δ‖) in float64, ‖Δ‖): the global norm of the result is ≤ S (up to float64 rounding)."""
    clip = _positive("clip_to_norm", "clip_norm", clip_norm)
    norm = global_l2_norm(tensors)
    factor = clip / norm if norm > clip else 1.0
    return {name: np.asarray(value, dtype=np.float64) * factor for name, value in tensors.items()}, norm


class Strategy(Protocol):
    """An undecorated aggregation rule: client deltas → one delta (float64)."""

    def aggregate(self, updates: Sequence[ClientDelta]) -> dict[str, np.ndarray]:
        """Combine the deltas; raise ValueError on empty, mismatched or non-finite input."""
        ...


@dataclass(frozen=True)
class FedAvg:
    """Plain FedAvg, unweighted: the mean of the client deltas. No privacy.

    McMahan et al. 2017 weight each client by its example count n_i; devices no longer send n_i
    (it is private), so every client weighs the same (the DP wrappers below use the unweighted sum too)."""

    def aggregate(self, updates: Sequence[ClientDelta]) -> dict[str, np.ndarray]:
        """Σ Δ_i / k per tensor, float64, for k updates; every update must share the first one's keys and shapes."""
        if not updates:
            raise ValueError("FedAvg needs at least one update, found 0")
        first = updates[0]
        if not isinstance(first, ClientDelta):
            raise ValueError(f"update 0 must be a ClientDelta, found {type(first).__name__}")
        shapes = tensor_shapes(first.tensors)
        _check_updates(updates, shapes)
        return self._combine(updates, shapes, [1.0 / len(updates)] * len(updates))

    def unweighted_sum(self, updates: Sequence[ClientDelta], shapes: Shapes) -> dict[str, np.ndarray]:
        """Σ Δ_i per tensor, float64; zero updates → zeros of ``shapes``."""
        shapes = _normalise_shapes(shapes)
        _check_updates(updates, shapes)
        return self._combine(updates, shapes, [1.0] * len(updates))

    @staticmethod
    def add_inplace(total: dict[str, np.ndarray], tensors: Mapping[str, np.ndarray], weight: float = 1.0) -> None:
        """total[name] += weight·tensors[name] for every tensor of ``total`` (float64 accumulators)."""
        for name, acc in total.items():
            acc += weight * np.asarray(tensors[name], dtype=np.float64)

    @classmethod
    def _combine(
        cls, updates: Sequence[ClientDelta], shapes: Shapes, weights: Sequence[float]
    ) -> dict[str, np.ndarray]:
        out = {name: np.zeros(shape, dtype=np.float64) for name, shape in shapes.items()}
        for update, w in zip(updates, weights, strict=True):
            cls.add_inplace(out, update.tensors, w)
        return out


@dataclass(frozen=True)
class DpAggregate:
    """One DP-FedAvg round's release and the numbers the ledger and status need.

    ``noise_multiplier`` is what the accountant records for the round (one Gaussian release with
    that multiplier, Poisson-sampled at rate q); ``update_noise_multiplier`` is the multiplier
    actually applied to the update sum (smaller than ``noise_multiplier`` with adaptive clipping,
    because part of the budget goes to the clipped-count estimate; equal otherwise).
    """

    mean_delta: dict[str, np.ndarray] = field(repr=False)  # float32: (clipped sum + noise) / (q·N)
    num_updates: int
    num_clipped: int  # updates with ‖Δ‖ > S that the server scaled down
    clip_norm: float  # S used this round
    noise_multiplier: float  # z for the ledger
    update_noise_multiplier: float  # z_Δ on the update sum
    expected_clients: float  # q·N, the fixed denominator
    next_clip_norm: float  # S for the next round (== clip_norm with fixed clipping)
    unclipped_fraction: float | None = None  # noised fraction b̄ (adaptive clipping only)
    bit_noise_std: float | None = None  # σ_b (adaptive clipping only)

    @property
    def noise_std_sum(self) -> float:
        """z_Δ·S: noise std per coordinate of the clipped sum."""
        return self.update_noise_multiplier * self.clip_norm

    @property
    def noise_std_mean(self) -> float:
        """z_Δ·S/(q·N): noise std per coordinate of ``mean_delta``."""
        return self.noise_std_sum / self.expected_clients


def _gaussian_like(shapes: Shapes, std: float, source: RandomSource) -> dict[str, np.ndarray]:
    """N(0, std²) float64 per coordinate: one draw for all tensors, split in sorted name order."""
    names = sorted(shapes)
    sizes = [math.prod(shapes[name]) for name in names]
    if std == 0:
        return {name: np.zeros(shapes[name], dtype=np.float64) for name in names}
    draw = np.asarray(source.standard_normal(sum(sizes)), dtype=np.float64) * std  # [Σ sizes]
    offsets = np.cumsum([0, *sizes])
    return {name: draw[offsets[i] : offsets[i + 1]].reshape(shapes[name]) for i, name in enumerate(names)}


def _clipped_noised_mean(
    updates: Iterable[ClientDelta],
    shapes: Shapes,
    *,
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: float,
    strategy: FedAvg,
    source: RandomSource,
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """(float32 (Σ clip(Δ_i) + N(0, (zS)²)) / (q·N), received norms [k] float64, number clipped).

    Streams: one update at a time is checked, clipped and added (memory independent of the round's
    size). A bad update raises before the noise is drawn, so a partial sum is never released.
    """
    shapes = _normalise_shapes(shapes)
    total = {name: np.zeros(shape, dtype=np.float64) for name, shape in shapes.items()}
    norms = []
    for index, update in enumerate(updates):
        _check_updates([update], shapes, start=index)
        tensors, norm = clip_to_norm(update.tensors, clip_norm)
        strategy.add_inplace(total, tensors)  # unit weight: see DpFixedClipping on why the sum is unweighted
        norms.append(norm)
    noise = _gaussian_like(shapes, noise_multiplier * clip_norm, source)
    mean = {name: ((total[name] + noise[name]) / expected_clients).astype(np.float32) for name in shapes}
    norms_arr = np.asarray(norms, dtype=np.float64)
    return mean, norms_arr, int(np.count_nonzero(norms_arr > clip_norm))


def _check_strategy(owner: str, strategy: object) -> None:
    if not isinstance(strategy, FedAvg):
        raise TypeError(
            f"{owner}.strategy must be a FedAvg (its unweighted sum has sensitivity S; other rules "
            f"such as a weighted mean or a median do not), found {type(strategy).__name__}"
        )


def _check_source(owner: str, source: object) -> None:
    if not isinstance(source, RandomSource):
        raise ValueError(f"{owner}.random_source must be a RandomSource, found {source!r}")


@dataclass(frozen=True)
class DpFixedClipping:
    """User-level DP-FedAvg with server-side fixed clipping (DP-FedAvg, McMahan et al. 2018).

    Per round: clip every delta to global L2 norm ≤ ``clip_norm`` (S), sum the clipped deltas,
    add N(0, (z·S)²) per coordinate, divide by ``expected_clients`` (q·N). Adding or removing
    one client's delta moves the clipped sum by at most S, so the noised sum is a Gaussian
    mechanism with multiplier z; with Poisson client sampling at rate q the ledger records
    PoissonSampled(Gaussian(z)). Everything after the noise is post-processing.

    Why the sum is unweighted: a mean weighted by example counts Σ n_i·Δ_i / Σ n_i has no useful
    bound on one client's influence — a client reporting a huge n_i (or the only client in a
    round) moves it by up to S, not S/(q·N), and the weights and their data-dependent
    denominator are themselves private (which is why devices do not send n_i at all). The
    unweighted sum has sensitivity exactly S. (Flower's wrapper feeds clipped results to the
    wrapped FedAvg, which weights by num_examples; here the wrapped FedAvg is asked for its
    unweighted sum.)

    Why q·N and not the number received: dividing by the realised count would release that count
    without noise (and make the sensitivity depend on it). Zero updates are a valid round: the
    release is pure noise, and it still counts in the ledger.

    ``random_source`` defaults to ``SecureRandomSource()`` (OS CSPRNG).
    """

    clip_norm: float
    noise_multiplier: float
    expected_clients: float
    strategy: FedAvg = field(default_factory=FedAvg)
    random_source: RandomSource = field(default_factory=SecureRandomSource, repr=False)

    def __post_init__(self) -> None:
        _positive("DpFixedClipping", "clip_norm", self.clip_norm)
        _non_negative("DpFixedClipping", "noise_multiplier", self.noise_multiplier)
        _positive("DpFixedClipping", "expected_clients", self.expected_clients)
        _check_strategy("DpFixedClipping", self.strategy)
        _check_source("DpFixedClipping", self.random_source)

    def aggregate(self, updates: Iterable[ClientDelta], shapes: Shapes) -> DpAggregate:
        """Clip, sum, noise, divide by q·N. ``shapes`` is the expected layout (also used for zero updates).

        Any update with a different key set or shape, or with a NaN/inf value, raises ValueError
        and nothing is merged.
        """
        clip, z, expected = float(self.clip_norm), float(self.noise_multiplier), float(self.expected_clients)
        mean, norms, num_clipped = _clipped_noised_mean(
            updates,
            shapes,
            clip_norm=clip,
            noise_multiplier=z,
            expected_clients=expected,
            strategy=self.strategy,
            source=self.random_source,
        )
        return DpAggregate(
            mean_delta=mean,
            num_updates=len(norms),
            num_clipped=num_clipped,
            clip_norm=clip,
            noise_multiplier=z,
            update_noise_multiplier=z,
            expected_clients=expected,
            next_clip_norm=clip,
        )


def delta_noise_multiplier(z_total: float, bit_noise_std: float) -> float:
    """z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2): the update-sum multiplier that, with the bit count noised by σ_b,
    makes the round one Gaussian release with multiplier ``z_total`` (Andrew et al. 2021, Thm. 1).

    The round releases the clipped sum (sensitivity S, noise z_Δ·S) and the centred bit count
    Σ(b_i − ½) (sensitivity ½, noise σ_b) from the same sampled clients. Both are one Gaussian
    mechanism on the concatenated query; after scaling each part by its sensitivity the noise
    multipliers combine as z⁻² = z_Δ⁻² + (2σ_b)⁻². Requires σ_b > z/2 (else no z_Δ exists);
    z_total = 0 (no privacy) gives 0.
    """
    z = _non_negative("delta_noise_multiplier", "z_total", z_total)
    sigma_b = _non_negative("delta_noise_multiplier", "bit_noise_std", bit_noise_std)
    if z == 0:
        return 0.0
    if not sigma_b > z / 2:
        raise ValueError(
            f"bit_noise_std must exceed z_total/2 for adaptive clipping to fit in noise multiplier "
            f"z_total={z!r}, found bit_noise_std={sigma_b!r} (need > {z / 2!r})"
        )
    return float((z**-2 - (2.0 * sigma_b) ** -2) ** -0.5)


def unclipped_count(norms: Sequence[float] | np.ndarray, clip_norm: float, tolerance: float = BIT_TOLERANCE) -> int:
    """Σ b_i with b_i = 1 iff the received norm < C_t·(1 − tolerance), i.e. the device did not clip it."""
    clip = _positive("unclipped_count", "clip_norm", clip_norm)
    tol = _non_negative("unclipped_count", "tolerance", tolerance)
    if tol >= 1:
        raise ValueError(f"unclipped_count.tolerance must be < 1, found {tolerance!r}")
    arr = np.asarray(norms, dtype=np.float64)
    if arr.ndim != 1 or np.any(np.isnan(arr)):
        raise ValueError(f"norms must be a 1-D array without NaN, found shape {arr.shape}")
    return int(np.count_nonzero(arr < clip * (1.0 - tol)))


def noised_unclipped_fraction(
    unclipped: int, num_updates: int, expected_clients: float, bit_noise_std: float, random_source: RandomSource
) -> float:
    """b̄ = ½ + (Σ(b_i − ½) + N(0, σ_b²)) / (q·N), clamped to [0, 1].

    The bits are centred before the sum (as in the paper and TF Privacy's quantile estimator) so
    one client moves the sum by ½, not 1; dividing by the fixed q·N keeps the realised count
    out of the release. The clamp is post-processing.
    """
    if isinstance(unclipped, bool) or not isinstance(unclipped, int | np.integer) or unclipped < 0:
        raise ValueError(f"unclipped must be an int >= 0, found {unclipped!r}")
    if isinstance(num_updates, bool) or not isinstance(num_updates, int | np.integer) or num_updates < unclipped:
        raise ValueError(f"num_updates must be an int >= unclipped ({unclipped}), found {num_updates!r}")
    expected = _positive("noised_unclipped_fraction", "expected_clients", expected_clients)
    sigma_b = _non_negative("noised_unclipped_fraction", "bit_noise_std", bit_noise_std)
    noise = float(random_source.standard_normal(1)[0]) * sigma_b if sigma_b > 0 else 0.0
    centred_sum = float(unclipped) - 0.5 * float(num_updates)
    return min(1.0, max(0.0, 0.5 + (centred_sum + noise) / expected))


def next_clip_norm(clip_norm: float, unclipped_fraction: float, target_quantile: float, learning_rate: float) -> float:
    """Geometric quantile step C_{t+1} = C_t · exp(−η·(b̄ − γ)): grows when too many updates are clipped."""
    clip = _positive("next_clip_norm", "clip_norm", clip_norm)
    frac = _number(unclipped_fraction)
    if frac is None:
        raise ValueError(f"unclipped_fraction must be a finite number, found {unclipped_fraction!r}")
    gamma = _number(target_quantile)
    if gamma is None or not 0 < gamma < 1:
        raise ValueError(f"target_quantile must be a number in (0, 1), found {target_quantile!r}")
    eta = _non_negative("next_clip_norm", "learning_rate", learning_rate)
    return clip * math.exp(-eta * (frac - gamma))


@dataclass(frozen=True)
class AdaptiveClipping:
    """Quantile-based adaptive clipping (Andrew et al. 2021) settings.

    ``target_quantile`` γ: fraction of updates meant to pass unclipped; ``clip_learning_rate`` η:
    step of the geometric update; ``bit_noise_std`` σ_b: noise on the unclipped count (the paper
    suggests σ_b ≈ q·N/20); ``initial_clip_norm``: C_0; ``tolerance``: see ``BIT_TOLERANCE``.
    """

    target_quantile: float
    clip_learning_rate: float
    bit_noise_std: float
    initial_clip_norm: float
    tolerance: float = BIT_TOLERANCE

    def __post_init__(self) -> None:
        gamma = _number(self.target_quantile)
        if gamma is None or not 0 < gamma < 1:
            raise ValueError(f"AdaptiveClipping.target_quantile must be in (0, 1), found {self.target_quantile!r}")
        _non_negative("AdaptiveClipping", "clip_learning_rate", self.clip_learning_rate)
        _non_negative("AdaptiveClipping", "bit_noise_std", self.bit_noise_std)
        _positive("AdaptiveClipping", "initial_clip_norm", self.initial_clip_norm)
        tol = _non_negative("AdaptiveClipping", "tolerance", self.tolerance)
        if tol >= 1:
            raise ValueError(f"AdaptiveClipping.tolerance must be < 1, found {self.tolerance!r}")


@dataclass(frozen=True)
class DpAdaptiveClipping:
    """DP-FedAvg whose clip norm tracks a quantile of the update norms, at a total noise multiplier z.

    The clip norm C_t is round state the caller persists (start at ``adaptive.initial_clip_norm``,
    then use each result's ``next_clip_norm``); devices clip to C_t before upload, so the server
    infers each bit from the received norm (``unclipped_count``). The update sum gets
    z_Δ = ``delta_noise_multiplier(z, σ_b)`` and the ledger records ``noise_multiplier`` z.
    """

    noise_multiplier: float
    expected_clients: float
    adaptive: AdaptiveClipping
    strategy: FedAvg = field(default_factory=FedAvg)
    random_source: RandomSource = field(default_factory=SecureRandomSource, repr=False)

    def __post_init__(self) -> None:
        _non_negative("DpAdaptiveClipping", "noise_multiplier", self.noise_multiplier)
        _positive("DpAdaptiveClipping", "expected_clients", self.expected_clients)
        if not isinstance(self.adaptive, AdaptiveClipping):
            raise ValueError(f"DpAdaptiveClipping.adaptive must be an AdaptiveClipping, found {self.adaptive!r}")
        _check_strategy("DpAdaptiveClipping", self.strategy)
        _check_source("DpAdaptiveClipping", self.random_source)
        delta_noise_multiplier(self.noise_multiplier, self.adaptive.bit_noise_std)  # σ_b > z/2, checked early

    @property
    def update_noise_multiplier(self) -> float:
        """z_Δ applied to the update sum."""
        return delta_noise_multiplier(self.noise_multiplier, self.adaptive.bit_noise_std)

    def aggregate(self, updates: Iterable[ClientDelta], shapes: Shapes, clip_norm: float) -> DpAggregate:
        """One round at clip norm C_t = ``clip_norm``: the DP mean delta and C_{t+1}."""
        clip = _positive("DpAdaptiveClipping.aggregate", "clip_norm", clip_norm)
        z, z_delta = float(self.noise_multiplier), self.update_noise_multiplier
        expected, cfg = float(self.expected_clients), self.adaptive
        mean, norms, num_clipped = _clipped_noised_mean(
            updates,
            shapes,
            clip_norm=clip,
            noise_multiplier=z_delta,
            expected_clients=expected,
            strategy=self.strategy,
            source=self.random_source,
        )
        unclipped = unclipped_count(norms, clip, cfg.tolerance)
        fraction = noised_unclipped_fraction(unclipped, len(norms), expected, cfg.bit_noise_std, self.random_source)
        return DpAggregate(
            mean_delta=mean,
            num_updates=len(norms),
            num_clipped=num_clipped,
            clip_norm=clip,
            noise_multiplier=z,
            update_noise_multiplier=z_delta,
            expected_clients=expected,
            next_clip_norm=next_clip_norm(clip, fraction, cfg.target_quantile, cfg.clip_learning_rate),
            unclipped_fraction=fraction,
            bit_noise_std=float(cfg.bit_noise_std),
        )


def apply_delta(
    global_params: Mapping[str, np.ndarray], mean_delta: Mapping[str, np.ndarray], server_learning_rate: float = 1.0
) -> dict[str, np.ndarray]:
    """New global = global + lr·delta per tensor (float64 sum, float32 result); keys and shapes must match."""
    lr = _positive("apply_delta", "server_learning_rate", server_learning_rate)
    _check_layout(mean_delta, tensor_shapes(global_params), "mean_delta")
    _check_finite(global_params, "global_params")
    _check_finite(mean_delta, "mean_delta")
    return {
        name: (np.asarray(value, dtype=np.float64) + lr * np.asarray(mean_delta[name], dtype=np.float64)).astype(
            np.float32
        )
        for name, value in global_params.items()
    }
