"""Server aggregation: FedAvg, the DP-FedAvg wrapper (clipping, noise, q·N), adaptive clipping, apply_delta.

Oracles are written here from the definitions (numpy on flattened float64 vectors, dp_accounting for
the privacy composition), not imported from the module under test. Noise checks use DESIGN.md's
thresholds for n = 10⁶ coordinates (each at α = 1e-6); the KS statistic is computed with math.erf.
"""

from __future__ import annotations

import dataclasses
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant

from ondevice.randomness import SecureRandomSource, SeededRandomSource
from server_aggregator.aggregation import (
    AdaptiveClipping,
    ClientDelta,
    DpAdaptiveClipping,
    DpFixedClipping,
    FedAvg,
    apply_delta,
    clip_to_norm,
    delta_noise_multiplier,
    global_l2_norm,
    next_clip_norm,
    noised_unclipped_fraction,
    unclipped_count,
)
from tests.noise_stats import noise_failures

N = 1_000_000
SMALL = {"a": (3, 4), "b": (5,), "c": (2, 2, 2)}
# The device's trainable layout: LoRA A/B for q and v in 6 layers, plus the head (74,498 floats).
REAL: dict[str, tuple[int, ...]] = {
    f"layer{i}.{m}.lora_{ab}": ((8, 384) if ab == "A" else (384, 8))
    for i in range(6)
    for m in ("q", "v")
    for ab in ("A", "B")
}
REAL |= {"head.weight": (2, 384), "head.bias": (2,)}


def _random_tensors(rng: np.random.Generator, shapes: dict[str, tuple[int, ...]], norm: float) -> dict[str, np.ndarray]:
    """Random direction with global L2 norm ``norm`` (float32)."""
    raw = {n: rng.standard_normal(s) for n, s in shapes.items()}
    scale = norm / math.sqrt(sum(float((v * v).sum()) for v in raw.values()))
    return {n: (v * scale).astype(np.float32) for n, v in raw.items()}


def _flat(tensors: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(tensors[n], dtype=np.float64).ravel() for n in sorted(tensors)])


def _zeros(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    return {n: np.zeros(s, dtype=np.float32) for n, s in shapes.items()}


# ---------------------------------------------------------------- noise checks (DESIGN.md)


# ---------------------------------------------------------------- FedAvg


def test_fedavg_is_the_unweighted_mean() -> None:
    rng = np.random.default_rng(0)
    updates = [ClientDelta(_random_tensors(rng, SMALL, 1.0 + i)) for i in range(4)]
    out = FedAvg().aggregate(updates)
    assert set(out) == set(SMALL)
    for name, shape in SMALL.items():
        stack = np.stack([u.tensors[name].astype(np.float64) for u in updates])
        oracle = stack.sum(axis=0) / len(updates)
        assert out[name].shape == shape
        np.testing.assert_allclose(out[name], oracle, rtol=1e-12, atol=1e-15)


def test_client_delta_carries_no_example_count() -> None:
    """Devices no longer send their example count, so nothing server-side can weight by it."""
    assert [f.name for f in dataclasses.fields(ClientDelta)] == ["tensors"]
    with pytest.raises(TypeError):
        ClientDelta({"a": np.zeros(3, np.float32)}, 3)  # type: ignore[call-arg]


def test_fedavg_rejects_mismatched_or_bad_input() -> None:
    rng = np.random.default_rng(1)
    good = ClientDelta(_random_tensors(rng, SMALL, 1.0))
    missing = ClientDelta({k: v for k, v in good.tensors.items() if k != "b"})
    extra = ClientDelta({**good.tensors, "d": np.zeros(1, np.float32)})
    reshaped = ClientDelta({**good.tensors, "b": np.zeros((5, 1), np.float32)})
    nan = ClientDelta({**good.tensors, "b": np.array([0, 0, np.nan, 0, 0], np.float32)})
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        FedAvg().aggregate([good, missing])
    with pytest.raises(ValueError, match="unexpected \\['d'\\]"):
        FedAvg().aggregate([good, extra])
    with pytest.raises(ValueError, match="shape \\(5, 1\\), expected \\(5,\\)"):
        FedAvg().aggregate([good, reshaped])
    with pytest.raises(ValueError, match="NaN or inf"):
        FedAvg().aggregate([good, nan])
    with pytest.raises(ValueError, match="at least one update"):
        FedAvg().aggregate([])
    with pytest.raises(ValueError, match="floating point"):
        ClientDelta({"a": np.zeros(3, dtype=np.int32)})


# ---------------------------------------------------------------- clipping


@pytest.mark.parametrize("norm_in_c", [0.0, 0.5, 1.0, 10.0, 1e6])
def test_clip_to_norm_bounds_the_global_norm_and_keeps_direction(norm_in_c: float) -> None:
    clip = 0.37
    tensors = _random_tensors(np.random.default_rng(2), SMALL, norm_in_c * clip)
    clipped, norm = clip_to_norm(tensors, clip)
    x, y = _flat(tensors), _flat(clipped)
    assert norm == pytest.approx(np.linalg.norm(x), rel=1e-12)
    assert np.linalg.norm(y) <= clip * (1 + 1e-12)
    if np.linalg.norm(x) <= clip:  # at C the float32 rounding decides which side it falls
        np.testing.assert_array_equal(y, x)  # not clipped: untouched
    else:
        np.testing.assert_allclose(np.linalg.norm(y), clip, rtol=1e-12)
        np.testing.assert_allclose(y, x * (clip / np.linalg.norm(x)), rtol=1e-12)


def test_norm_survives_float64_overflow_and_refuses_non_finite() -> None:
    huge = {"a": np.full(4, 1e200), "b": np.array([3e200])}
    assert global_l2_norm(huge) == pytest.approx(math.sqrt(4 + 9) * 1e200, rel=1e-12)
    clipped, _ = clip_to_norm(huge, 1.0)
    assert np.linalg.norm(_flat(clipped)) == pytest.approx(1.0, rel=1e-12)
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(ValueError, match="NaN or inf"):
            clip_to_norm({"a": np.array([1.0, bad], dtype=np.float32)}, 1.0)


# ---------------------------------------------------------------- DP wrapper: arithmetic


def _oracle_dp_mean(updates: list[ClientDelta], clip: float, expected: float) -> tuple[np.ndarray, int]:
    """Σ_i Δ_i·min(1, S/‖Δ_i‖) / (q·N) on flattened float64 vectors, and how many had ‖Δ_i‖ > S."""
    total, clipped = 0.0, 0
    for u in updates:
        x = _flat(dict(u.tensors))
        norm = float(np.linalg.norm(x))
        total = total + (x * min(1.0, clip / norm) if norm > 0 else x)
        clipped += norm > clip
    return np.asarray(total) / expected, clipped


def test_dp_without_noise_equals_the_clipped_sum_over_expected_clients() -> None:
    rng = np.random.default_rng(3)
    clip, expected = 0.8, 7.5
    norms = [0.5 * clip, 10 * clip, 1e6 * clip, 0.0, 0.9 * clip]
    updates = [ClientDelta(_random_tensors(rng, SMALL, n)) for n in norms]
    dp = DpFixedClipping(clip, 0.0, expected, random_source=SeededRandomSource(0))
    result = dp.aggregate(updates, SMALL)
    oracle, oracle_clipped = _oracle_dp_mean(updates, clip, expected)
    got = _flat(result.mean_delta)
    np.testing.assert_allclose(got, oracle, rtol=1e-6, atol=1e-9)
    assert all(v.dtype == np.float32 and v.shape == SMALL[n] for n, v in result.mean_delta.items())
    assert (result.num_updates, result.num_clipped, oracle_clipped) == (5, 2, 2)
    assert (result.clip_norm, result.next_clip_norm, result.expected_clients) == (clip, clip, expected)
    assert result.noise_std_sum == 0 and result.noise_std_mean == 0
    assert result.noise_multiplier == result.update_noise_multiplier == 0
    # The fixed denominator q·N, not the realised count (5) or the example total:
    assert not np.allclose(got, oracle * expected / len(updates), rtol=1e-3)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_update_is_refused_before_anything_is_merged(bad: float) -> None:
    rng = np.random.default_rng(5)
    good = ClientDelta(_random_tensors(rng, SMALL, 1.0))
    poisoned = dict(_random_tensors(rng, SMALL, 1.0))
    poisoned["a"] = poisoned["a"].copy()
    poisoned["a"][1, 2] = bad
    source = SeededRandomSource(9)
    with pytest.raises(ValueError, match="update 1: tensor 'a' holds NaN or inf"):
        DpFixedClipping(1.0, 1.0, 2.0, random_source=source).aggregate([good, ClientDelta(poisoned)], SMALL)
    # validation ran before the noise draw: the source is untouched
    assert source.standard_normal(3) == pytest.approx(SeededRandomSource(9).standard_normal(3))


def test_dp_rejects_layout_mismatch_and_bad_config() -> None:
    rng = np.random.default_rng(6)
    update = ClientDelta(_random_tensors(rng, SMALL, 1.0))
    dp = DpFixedClipping(1.0, 1.0, 2.0, random_source=SeededRandomSource(0))
    with pytest.raises(ValueError, match="missing \\['z'\\]"):
        dp.aggregate([update], {**SMALL, "z": (1,)})
    with pytest.raises(ValueError, match="'b' has shape \\(5,\\), expected \\(6,\\)"):
        dp.aggregate([update], {**SMALL, "b": (6,)})
    with pytest.raises(ValueError, match="clip_norm must be a finite number > 0, found 0"):
        DpFixedClipping(0, 1.0, 2.0)
    with pytest.raises(ValueError, match="noise_multiplier must be a finite number >= 0, found -1"):
        DpFixedClipping(1.0, -1, 2.0)
    with pytest.raises(ValueError, match="expected_clients must be a finite number > 0, found nan"):
        DpFixedClipping(1.0, 1.0, float("nan"))
    with pytest.raises(TypeError, match="must be a FedAvg"):
        DpFixedClipping(1.0, 1.0, 2.0, strategy=object())  # type: ignore[arg-type]


# ---------------------------------------------------------------- DP wrapper: noise statistics

Z, CLIP, EXPECTED = 1.1, 0.7, 12.5  # S ≠ 1 and q·N ≠ count, so a wrong scale cannot pass by accident


def _pure_noise_rounds(rounds: int, source: SeededRandomSource | SecureRandomSource) -> tuple[np.ndarray, float]:
    """Zero updates (a pure-noise release) on the real layout, ``rounds`` times: first 10⁶ coordinates."""
    dp = DpFixedClipping(CLIP, Z, EXPECTED, random_source=source)
    out, std = [], math.nan
    for _ in range(rounds):
        result = dp.aggregate([], REAL)
        assert result.num_updates == 0 and result.num_clipped == 0
        assert {n: v.shape for n, v in result.mean_delta.items()} == REAL
        out.append(_flat(result.mean_delta))
        std = result.noise_std_mean
    return np.concatenate(out)[:N], std


def test_pure_noise_release_has_std_z_s_over_qn() -> None:
    assert sum(math.prod(s) for s in REAL.values()) == 74_498
    noise, std = _pure_noise_rounds(14, SeededRandomSource(20240607))  # 14 · 74,498 ≥ 10⁶
    assert std == pytest.approx(Z * CLIP / EXPECTED, rel=1e-15)
    assert noise_failures(noise, Z * CLIP / EXPECTED) == []


def test_noise_with_zero_updates_on_a_large_tensor() -> None:
    shapes = {"w": (N,)}
    updates = [ClientDelta(_zeros(shapes)) for _ in range(3)]
    dp = DpFixedClipping(CLIP, Z, EXPECTED, random_source=SeededRandomSource(77))
    result = dp.aggregate(updates, shapes)
    assert result.noise_std_sum == pytest.approx(Z * CLIP, rel=1e-15)
    assert result.noise_std_mean == pytest.approx(Z * CLIP / EXPECTED, rel=1e-15)
    noise = result.mean_delta["w"]
    assert noise.dtype == np.float32
    target = Z * CLIP / EXPECTED
    assert noise_failures(noise, target) == []
    # The same checks catch the classic scale bugs in that very output:
    assert any("variance" in f for f in noise_failures(noise / 4, target))  # noise 4× too small
    assert any("variance" in f for f in noise_failures(noise * CLIP, target))  # S applied twice
    assert any("variance" in f for f in noise_failures(noise * EXPECTED / 3, target))  # ÷ realised count
    assert any("variance" in f for f in noise_failures(noise * EXPECTED, target))  # no division by q·N


def test_secure_source_is_the_default_and_its_noise_passes() -> None:
    dp = DpFixedClipping(CLIP, Z, EXPECTED)
    assert isinstance(dp.random_source, SecureRandomSource) and dp.random_source.secure is True
    adaptive = DpAdaptiveClipping(1.0, 100.0, AdaptiveClipping(0.5, 0.2, 5.0, 1.0))
    assert adaptive.random_source.secure is True
    assert DpFixedClipping(CLIP, Z, EXPECTED, random_source=SeededRandomSource(0)).random_source.secure is False
    noise, std = _pure_noise_rounds(14, dp.random_source)  # type: ignore[arg-type]
    assert noise_failures(noise, std) == []  # unseeded: α = 1e-6 per check


# ---------------------------------------------------------------- adaptive clipping: privacy


@pytest.mark.parametrize(("z", "sigma_b"), [(1.0, 5.0), (0.8, 0.5), (2.0, 1.2), (0.3, 0.151)])
def test_adaptive_round_composes_to_one_gaussian_with_multiplier_z(z: float, sigma_b: float) -> None:
    """RDP of Gaussian(z_Δ) ∘ Gaussian(2σ_b) equals RDP of Gaussian(z) (dp_accounting as the oracle).

    The bit release is Σ(b_i − ½) + N(0, σ_b²): centring makes each client's contribution ±½, so
    adding or removing one client moves the sum by at most ½ and its noise multiplier is σ_b/½ = 2σ_b
    (uncentred bits would have sensitivity 1, multiplier σ_b). Unsampled Gaussians compose exactly in
    RDP (α/(2z²) adds up); with Poisson sampling the two releases share the same sampled clients, so the
    round is one sampled Gaussian on the concatenated query with multiplier z — what the ledger records.
    """
    delta = 1e-6
    z_delta = delta_noise_multiplier(z, sigma_b)
    assert z_delta > z
    composed = RdpAccountant()
    composed.compose(dp_accounting.GaussianDpEvent(z_delta))
    composed.compose(dp_accounting.GaussianDpEvent(2 * sigma_b))
    single = RdpAccountant()
    single.compose(dp_accounting.GaussianDpEvent(z))
    eps = single.get_epsilon(delta)
    assert composed.get_epsilon(delta) == pytest.approx(eps, rel=1e-6)
    # the uncentred (sensitivity-1) reading would cost more: the test can tell the two apart
    wrong = RdpAccountant()
    wrong.compose(dp_accounting.GaussianDpEvent(z_delta))
    wrong.compose(dp_accounting.GaussianDpEvent(sigma_b))
    assert wrong.get_epsilon(delta) > eps * 1.01


def test_delta_noise_multiplier_values_and_limits() -> None:
    assert delta_noise_multiplier(1.0, 5.0) == pytest.approx((1 - 1 / 100) ** -0.5, rel=1e-15)  # paper: σ_b = m/20
    assert delta_noise_multiplier(0.0, 0.0) == 0.0  # no privacy claimed either way
    with pytest.raises(ValueError, match="z_total=1.0, found bit_noise_std=0.5 \\(need > 0.5\\)"):
        delta_noise_multiplier(1.0, 0.5)
    with pytest.raises(ValueError, match="bit_noise_std=0.0"):
        delta_noise_multiplier(0.4, 0.0)
    with pytest.raises(ValueError, match="z_total must be a finite number >= 0, found -1"):
        delta_noise_multiplier(-1, 1.0)
    with pytest.raises(ValueError, match="z_total=2.0"):
        DpAdaptiveClipping(2.0, 100.0, AdaptiveClipping(0.5, 0.2, 0.9, 1.0), random_source=SeededRandomSource(0))


# ---------------------------------------------------------------- adaptive clipping: mechanics


def test_bits_fraction_and_clip_update_formulas() -> None:
    c = 2.0
    norms = [c, c * (1 - 5e-4), c * (1 + 1e-6), c * (1 - 2e-3), 0.0, 0.3 * c]  # first three: device-clipped
    assert unclipped_count(norms, c) == 3
    assert unclipped_count(norms, c, tolerance=0.0) == 4
    source = SeededRandomSource(0)
    # σ_b = 0: exact centred estimate ½ + (U − k/2)/(q·N)
    assert noised_unclipped_fraction(3, 6, 8.0, 0.0, source) == pytest.approx(0.5 + (3 - 3) / 8)
    assert noised_unclipped_fraction(5, 6, 8.0, 0.0, source) == pytest.approx(0.5 + (5 - 3) / 8)
    assert noised_unclipped_fraction(0, 0, 8.0, 0.0, source) == 0.5
    assert noised_unclipped_fraction(20, 20, 8.0, 0.0, source) == 1.0  # clamped
    # σ_b > 0: the noise is σ_b·(one standard normal from the source), before the division
    draw = float(SeededRandomSource(3).standard_normal(1)[0])
    got = noised_unclipped_fraction(4, 6, 8.0, 0.25, SeededRandomSource(3))
    assert got == pytest.approx(min(1.0, max(0.0, 0.5 + (4 - 3 + 0.25 * draw) / 8)), rel=1e-15)
    assert next_clip_norm(2.0, 0.9, 0.5, 0.2) == pytest.approx(2.0 * math.exp(-0.2 * 0.4), rel=1e-15)
    assert next_clip_norm(2.0, 0.1, 0.5, 0.2) == pytest.approx(2.0 * math.exp(0.2 * 0.4), rel=1e-15)
    with pytest.raises(ValueError, match="target_quantile"):
        next_clip_norm(2.0, 0.5, 1.0, 0.2)
    with pytest.raises(ValueError, match="AdaptiveClipping.target_quantile must be in \\(0, 1\\), found 0"):
        AdaptiveClipping(0, 0.2, 1.0, 1.0)
    with pytest.raises(ValueError, match="initial_clip_norm must be a finite number > 0, found -2"):
        AdaptiveClipping(0.5, 0.2, 1.0, -2)


def test_adaptive_round_end_to_end_without_noise() -> None:
    rng = np.random.default_rng(8)
    c, expected = 1.5, 4.0
    # as received: two device-clipped (one with fp16-style rounding just below C), two not clipped
    norms = [0.5 * c, c, c * (1 - 1e-4), 0.2 * c]
    updates = [ClientDelta(_random_tensors(rng, SMALL, n)) for n in norms]
    config = AdaptiveClipping(target_quantile=0.8, clip_learning_rate=0.2, bit_noise_std=0.0, initial_clip_norm=c)
    dp = DpAdaptiveClipping(0.0, expected, config, random_source=SeededRandomSource(0))
    result = dp.aggregate(updates, SMALL, clip_norm=c)
    oracle, _ = _oracle_dp_mean(updates, c, expected)
    np.testing.assert_allclose(_flat(result.mean_delta), oracle, rtol=1e-6, atol=1e-9)
    assert result.unclipped_fraction == pytest.approx(0.5 + (2 - 2) / expected)
    assert result.next_clip_norm == pytest.approx(c * math.exp(-0.2 * (0.5 - 0.8)), rel=1e-12)
    assert result.bit_noise_std == 0.0 and result.clip_norm == c


def test_adaptive_round_reports_z_for_the_ledger_and_z_delta_on_the_sum() -> None:
    config = AdaptiveClipping(0.5, 0.2, 5.0, 1.0)
    dp = DpAdaptiveClipping(1.0, 100.0, config, random_source=SeededRandomSource(1))
    shapes = {"w": (N,)}
    result = dp.aggregate([ClientDelta(_zeros(shapes))] * 3, shapes, clip_norm=0.4)
    z_delta = (1.0 - (2 * 5.0) ** -2) ** -0.5
    assert result.noise_multiplier == 1.0
    assert result.update_noise_multiplier == pytest.approx(z_delta, rel=1e-15)
    assert result.noise_std_sum == pytest.approx(z_delta * 0.4, rel=1e-15)
    assert noise_failures(result.mean_delta["w"], z_delta * 0.4 / 100.0) == []
    assert result.unclipped_fraction is not None
    assert result.next_clip_norm == pytest.approx(0.4 * math.exp(-0.2 * (result.unclipped_fraction - 0.5)))


@pytest.mark.parametrize("gamma", [0.5, 0.8])
def test_clip_norm_converges_to_the_target_quantile(gamma: float) -> None:
    """Client norms ~ LogNormal(ln 2, 0.6); devices clip to C_t (clipped norms come back at C_t, with
    fp16-style rounding just below it); Poisson sampling, q·N = 100, σ_b = q·N/20 = 5 (the paper's
    choice). After 400 rounds from C_0 = 0.1, C_t sits within 10 % of the γ-quantile."""
    rng = np.random.default_rng(12345)
    source = SeededRandomSource(54321)
    population, q = 1000, 0.1
    expected = q * population
    mu, s = math.log(2.0), 0.6
    probit = {0.5: 0.0, 0.8: 0.8416212335729143}[gamma]
    quantile = math.exp(mu + s * probit)
    config = AdaptiveClipping(gamma, clip_learning_rate=0.2, bit_noise_std=5.0, initial_clip_norm=0.1)
    clip, history = config.initial_clip_norm, []
    for _ in range(400):
        k = int(rng.binomial(population, q))
        norms = rng.lognormal(mu, s, size=k)
        received = np.where(norms > clip, clip * (1 - 4e-4 * rng.random(k)), norms)
        bits = unclipped_count(received, clip, config.tolerance)
        frac = noised_unclipped_fraction(bits, k, expected, config.bit_noise_std, source)
        clip = next_clip_norm(clip, frac, gamma, config.clip_learning_rate)
        history.append(clip)
    late = np.asarray(history[-100:])
    assert abs(math.exp(float(np.mean(np.log(late)))) / quantile - 1) < 0.10
    assert np.all(np.abs(late / quantile - 1) < 0.35)  # it stays there, not just on average


# ---------------------------------------------------------------- apply_delta


def test_apply_delta_adds_the_scaled_delta_in_float32() -> None:
    rng = np.random.default_rng(13)
    global_params = {n: rng.standard_normal(s).astype(np.float32) for n, s in SMALL.items()}
    delta = {n: rng.standard_normal(s).astype(np.float32) for n, s in SMALL.items()}
    for lr in (1.0, 0.5):
        new = apply_delta(global_params, delta, server_learning_rate=lr)
        for name in SMALL:
            assert new[name].dtype == np.float32 and new[name].shape == SMALL[name]
            expected = (global_params[name].astype(np.float64) + lr * delta[name].astype(np.float64)).astype(np.float32)
            np.testing.assert_array_equal(new[name], expected)
    assert global_params["a"].dtype == np.float32  # inputs untouched
    with pytest.raises(ValueError, match="missing \\['c'\\]"):
        apply_delta(global_params, {n: v for n, v in delta.items() if n != "c"})
    with pytest.raises(ValueError, match="'a' has shape \\(4, 3\\), expected \\(3, 4\\)"):
        apply_delta(global_params, {**delta, "a": delta["a"].T.copy()})
    with pytest.raises(ValueError, match="server_learning_rate must be a finite number > 0, found 0"):
        apply_delta(global_params, delta, server_learning_rate=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        apply_delta(global_params, {**delta, "b": np.full(5, np.inf, np.float32)})
