"""Seed-method masks, DP-SAT perturbation, update clipping and host optimizers (no bundle needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ondevice.checkpoint import CURRENT, PREVIOUS, STAGING, latest_checkpoint, write_checkpoint
from ondevice.optim import AdamWOptimizer, SgdOptimizer, make_host_optimizer
from ondevice.protocol import DpConfig, ProtocolError, RoundConfig, TensorSpec, decode_update, encode_update
from ondevice.seed_methods import (
    check_train_rank,
    expand_from_rank,
    flat_mask,
    restore_frozen_inplace,
    sat_perturbation,
    slice_to_rank,
    trainable_masks,
)
from ondevice.update import build_update, clip_delta, global_norm

SPECS = (
    TensorSpec("encoder.layer.0.attention.self.query.lora_A.weight", (4, 10)),
    TensorSpec("encoder.layer.0.attention.self.query.lora_B.weight", (6, 4)),
    TensorSpec("head.weight", (2, 6)),
    TensorSpec("head.bias", (2,)),
)
A, B, W, BIAS = (s.name for s in SPECS)


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.normal(size=s.shape).astype(np.float32) for s in SPECS}


def test_rank_mask_trains_only_the_first_components() -> None:
    masks = trainable_masks(_params(), SPECS, lora_rank=4, train_rank=2)
    assert masks[A][:2].all() and not masks[A][2:].any()
    assert masks[B][:, :2].all() and not masks[B][:, 2:].any()
    assert masks[W].all() and masks[BIAS].all()


def test_unit_sparsity_freezes_the_least_important_units() -> None:
    params = _params()
    params[A][:, 3] = 0.0  # input unit 3 unimportant
    params[A][:, 7] = 1e-3
    params[B][5, :] = 0.0  # output unit 5 unimportant
    masks = trainable_masks(params, SPECS, lora_rank=4, unit_sparsity=0.2)  # floor(0.2·10)=2 inputs, 1 output
    assert sorted(np.flatnonzero(~masks[A].all(axis=0)).tolist()) == [3, 7]
    assert np.flatnonzero(~masks[B].all(axis=1)).tolist() == [5]
    # importance is computed on the trained rank only: components beyond r' must not decide
    params[A][2:, 3] = 100.0
    masks = trainable_masks(params, SPECS, lora_rank=4, train_rank=2, unit_sparsity=0.2)
    assert not masks[A][:, 3].any()


def test_train_rank_bounds_are_checked() -> None:
    assert check_train_rank(None, 8) == 8
    for bad in (0, 9, -1):
        with pytest.raises(ValueError, match="train_rank must be an int in 1..8"):
            check_train_rank(bad, 8)


def test_restore_frozen_and_flat_mask() -> None:
    before, after = _params(0), _params(1)
    masks = trainable_masks(before, SPECS, lora_rank=4, train_rank=1)
    restore_frozen_inplace(after, before, masks)
    np.testing.assert_array_equal(after[A][1:], before[A][1:])
    assert not np.array_equal(after[A][0], before[A][0])
    flat = flat_mask(masks, SPECS)
    assert flat.shape == (sum(s.numel for s in SPECS),) and flat.sum() == 10 + 6 + 12 + 2


def test_sat_perturbation_has_radius_rho_along_the_previous_update() -> None:
    previous = _params(3)
    pert = sat_perturbation(previous, 0.05)
    assert pert is not None
    assert global_norm(pert) == pytest.approx(0.05, rel=1e-5)
    ratio = pert[A] / previous[A]
    assert np.allclose(ratio, ratio.flat[0])  # same direction
    assert sat_perturbation(None, 0.05) is None
    assert sat_perturbation(previous, 0.0) is None
    assert sat_perturbation({k: np.zeros_like(v) for k, v in previous.items()}, 0.1) is None
    with pytest.raises(ValueError, match="dp_sat_rho"):
        sat_perturbation(previous, -1.0)


def test_slice_and_expand_round_trip() -> None:
    params = _params()
    sliced = slice_to_rank(params, 2)
    assert sliced[A].shape == (2, 10) and sliced[B].shape == (6, 2) and sliced[W].shape == (2, 6)
    full = expand_from_rank(sliced, SPECS)
    np.testing.assert_array_equal(full[A][:2], params[A][:2])
    assert not full[A][2:].any() and not full[B][:, 2:].any()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("scale", [0.0, 1e-3, 1.0, 1e3, 1e6])
def test_clip_delta_bounds_the_norm_after_casting(dtype: str, scale: float) -> None:
    delta = {k: v * scale for k, v in _params(5).items()}
    clipped = clip_delta(delta, 0.7, dtype)
    assert all(str(v.dtype) == dtype for v in clipped.values())
    norm = global_norm(clipped)
    assert norm <= 0.7
    if global_norm(delta) > 0.7:
        assert norm == pytest.approx(0.7, rel=2e-3)
    else:
        assert norm == pytest.approx(global_norm(delta), rel=2e-3)


def test_clip_delta_refuses_non_finite() -> None:
    delta = _params()
    delta[A][0, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        clip_delta(delta, 1.0, "float32")


def _round(train_rank: int | None = None, dtype: str = "float16") -> RoundConfig:
    dp = DpConfig(
        clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.1, local_steps=2, learning_rate=0.1, train_rank=train_rank
    )
    return RoundConfig(
        round_id=3,
        manifest_hash="a" * 64,
        global_adapter_version=2,
        dp=dp,
        update_clip_norm=0.5,
        deadline_unix=2e9,
        update_dtype=dtype,
    )


def test_build_update_is_the_clipped_sliced_delta() -> None:
    start, end = _params(0), _params(1)
    update = build_update(_round(train_rank=2), "dev-1", start, end, 1.5, 1e-5)
    assert update.dtype == "float16" and update.l2_norm() <= 0.5
    assert update.tensors[A].shape == (2, 10)
    raw = {
        A: (end[A] - start[A])[:2],
        B: (end[B] - start[B])[:, :2],
        W: end[W] - start[W],
        BIAS: end[BIAS] - start[BIAS],
    }
    factor = 0.5 / global_norm(raw)
    np.testing.assert_allclose(update.tensors[A].astype(np.float64), raw[A] * factor, atol=2e-3)
    decoded = decode_update(encode_update(update))
    assert decoded.nonce == update.nonce and len(update.nonce) == 32
    assert decoded.dp.train_rank == 2 and "num_examples" not in decoded.metadata_dict()


def test_dp_config_rejects_bad_values_by_name() -> None:
    base = _round().dp.to_dict()
    for key, bad in (("noise_multiplier", -1.0), ("clip_norm", 0.0), ("train_rank", 0), ("unit_sparsity", 0.99)):
        with pytest.raises(ProtocolError, match=f"DpConfig.{key}"):
            DpConfig.from_dict({**base, key: bad})


# --------------------------------------------------------------------------- host optimizers


def test_sgd_matches_the_rule() -> None:
    params, grads = _params(0), _params(1)
    expected = {k: params[k] - 0.1 * grads[k] for k in params}
    SgdOptimizer(0.1).step_inplace(params, grads)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-6)


def test_adamw_with_eps_zero_matches_torch_adamw() -> None:
    """ORT's AdamW (adam_mode 1) and PyTorch's differ only in where ε enters; with ε = 0 they agree.
    (ε's placement is checked against ORT's own kernel in tests/e2e/test_local_trainer.py.)"""
    params = _params(0)
    torch_params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
    reference = torch.optim.AdamW(list(torch_params.values()), lr=0.01, betas=(0.9, 0.999), eps=0.0, weight_decay=0)
    ours = AdamWOptimizer(0.01, eps=0.0)
    for step in range(5):
        grads = _params(10 + step)
        for k, p in torch_params.items():
            p.grad = torch.from_numpy(grads[k].copy())
        reference.step()
        ours.step_inplace(params, grads)
    for k in params:
        np.testing.assert_allclose(params[k], torch_params[k].detach().numpy(), rtol=1e-5, atol=1e-6)
    restored = AdamWOptimizer(0.01)
    restored.load_state_dict(ours.state_dict())
    assert restored.step_count == 5 and np.array_equal(restored.m[A], ours.m[A])


def test_unknown_optimizer_and_bad_lr() -> None:
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_host_optimizer("lion", 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        SgdOptimizer(0.0)


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_swap_is_atomic_and_keeps_the_newest(tmp_path: Path) -> None:
    def writer(value: int) -> object:
        return lambda folder: (folder / "blob").write_text(str(value))

    assert latest_checkpoint(tmp_path) is None
    write_checkpoint(tmp_path, {"steps_done": 1}, writer(1))  # type: ignore[arg-type]
    write_checkpoint(tmp_path, {"steps_done": 2}, writer(2))  # type: ignore[arg-type]
    found = latest_checkpoint(tmp_path)
    assert found is not None and found[1] == {"steps_done": 2} and (found[0] / "blob").read_text() == "2"
    assert not (tmp_path / STAGING).exists() and not (tmp_path / PREVIOUS).exists()
    # a crash between the two renames leaves only ckpt.old: it is used
    (tmp_path / CURRENT).rename(tmp_path / PREVIOUS)
    found = latest_checkpoint(tmp_path)
    assert found is not None and found[0].name == PREVIOUS and found[1]["steps_done"] == 2
    # a half-written staging folder is ignored
    (tmp_path / STAGING).mkdir()
    (tmp_path / STAGING / "progress.json").write_text(json.dumps({"steps_done": 99}))
    found = latest_checkpoint(tmp_path)
    assert found is not None and found[1]["steps_done"] == 2
