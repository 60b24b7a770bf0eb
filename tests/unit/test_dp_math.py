"""Host-side clipping arithmetic: bounds at extreme norms, NaN refusal, weights, flat layout."""

from __future__ import annotations

import numpy as np
import pytest

from ondevice.dp_math import clip_and_sum, clip_factors, flat_to_tensors, per_example_norms, tensors_to_flat
from ondevice.protocol import TensorSpec

SPECS = (TensorSpec("a", (2, 3)), TensorSpec("b", (4,)))


def _batch(direction_norms: list[float], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-example gradients [B, *shape] whose global norms are exactly ``direction_norms``."""
    flat = rng.standard_normal((len(direction_norms), 10))
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        flat = flat * np.asarray(direction_norms)[:, None]
    flat[np.asarray(direction_norms) == 0] = 0.0
    return {"a": flat[:, :6].reshape(-1, 2, 3), "b": flat[:, 6:]}


@pytest.mark.parametrize("norm_in_c", [0.0, 1.0, 10.0, 1e6, np.inf])
def test_each_clipped_example_has_norm_at_most_c(norm_in_c: float) -> None:
    clip = 0.7
    rng = np.random.default_rng(0)
    grads = _batch([norm_in_c * clip], rng)
    if np.isinf(norm_in_c):
        grads["a"][0, 0, 0] = np.inf
    summed = clip_and_sum(grads, clip)
    out_norm = float(np.sqrt(sum(np.sum(v**2) for v in summed.values())))
    assert np.isfinite(out_norm)
    assert out_norm <= clip * (1 + 1e-4)
    if norm_in_c == 1.0:
        assert out_norm == pytest.approx(clip / (1 + 1e-6 / clip), rel=1e-9)  # just under C


def test_nan_gradients_are_refused() -> None:
    grads = _batch([1.0, 2.0], np.random.default_rng(1))
    grads["b"][1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clip_and_sum(grads, 1.0)


def test_sum_matches_a_loop_and_weights_drop_padding_rows() -> None:
    rng = np.random.default_rng(2)
    grads = _batch([0.2, 3.0, 1.0, 50.0], rng)
    clip = 1.0
    expected = {k: np.zeros(v.shape[1:]) for k, v in grads.items()}
    for i in range(4):
        norm = np.sqrt(sum(np.sum(v[i] ** 2) for v in grads.values()))
        for k, v in grads.items():
            expected[k] += v[i] * min(1.0, clip / (norm + 1e-6))
    got = clip_and_sum(grads, clip)
    for k in grads:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-12, atol=1e-15)
    weighted = clip_and_sum(grads, clip, weights=np.array([1.0, 1.0, 0.0, 0.0]))
    partial = clip_and_sum({k: v[:2] for k, v in grads.items()}, clip)
    for k in grads:
        np.testing.assert_allclose(weighted[k], partial[k], rtol=1e-12)


def test_norms_and_factor_validation() -> None:
    grads = _batch([3.0, 4.0], np.random.default_rng(3))
    np.testing.assert_allclose(per_example_norms(grads), [3.0, 4.0], rtol=1e-12)
    with pytest.raises(ValueError, match="clip_norm"):
        clip_factors(np.ones(2), 0.0)
    with pytest.raises(ValueError, match="disagree on the batch size"):
        per_example_norms({"a": np.ones((2, 3)), "b": np.ones((3, 3))})


def test_flat_layout_round_trip() -> None:
    flat = np.arange(10, dtype=np.float32)
    tensors = flat_to_tensors(flat, SPECS)
    np.testing.assert_array_equal(tensors["a"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(tensors["b"], [6, 7, 8, 9])
    np.testing.assert_array_equal(tensors_to_flat(tensors, SPECS), flat)
    with pytest.raises(ValueError, match="need"):
        flat_to_tensors(np.zeros(9), SPECS)
