"""Both phone runtimes of one bundle, driven with the same batches and the same noise, follow
the same DP-SGD trajectory: ORT (in-graph per-example clipping, batch-1 TrainSteps, SGD model)
vs ExecuTorch (per-example-gradient program, host clipping, host SGD)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from ondevice.bundle import verify_bundle
from ondevice.data import load_tweeteval
from ondevice.dp_math import clip_and_sum, flat_to_tensors
from ondevice.et_runtime import EtPerExampleGrads
from ondevice.ort_runtime import OrtDpTrainer

STEPS = 4
CLIP = 1.0
NOISE_MULTIPLIER = 0.5
LR = 0.05


def test_ort_and_executorch_follow_the_same_dp_sgd_trajectory(bundle_dir: Path, offensive_dir: Path) -> None:
    manifest = verify_bundle(bundle_dir)
    specs = manifest.trainable
    tokenizer = Tokenizer.from_file(str(bundle_dir / manifest.file("tokenizer").path))
    tokenizer.no_padding()  # the packaged tokenizer.json pads everything to 128; devices pad per batch
    tokenizer.enable_truncation(manifest.max_seq_len)
    data = load_tweeteval(offensive_dir, "val")
    ort = OrtDpTrainer(bundle_dir / "ort", specs, optimizer="sgd", learning_rate=LR, threads=2)
    et = EtPerExampleGrads(bundle_dir / "executorch" / "per_example_grads.pte", specs)
    theta = {k: v.astype(np.float32) for k, v in load_file(bundle_dir / manifest.file("adapter").path).items()}
    start = {k: v.copy() for k, v in theta.items()}
    rng = np.random.default_rng(2024)
    clipped_any = False

    for step in range(STEPS):
        rows = list(range(step * 6, step * 6 + 6 - step % 2))  # 6 or 5 real examples (rest: padding rows)
        batch = len(rows)
        encodings = [tokenizer.encode(data.texts[i]).ids for i in rows]
        noise = rng.normal(0.0, NOISE_MULTIPLIER * CLIP, size=manifest.trainable_numel).astype(np.float32)  # [P]
        scale = 1.0 / batch

        for position, (ids, row) in enumerate(zip(encodings, rows, strict=True)):
            tokens = np.asarray([ids], dtype=np.int64)  # [1, T_i]
            ort.accumulate(
                tokens, np.ones_like(tokens), data.labels[row], CLIP, noise if position == 0 else None, scale
            )
        ort.step()

        longest = max(len(ids) for ids in encodings)
        input_ids = np.zeros((et.batch_size, longest), dtype=np.int64)  # [Bfix, T]
        mask = np.zeros_like(input_ids)
        labels = np.zeros(et.batch_size, dtype=np.int64)
        weights = np.zeros(et.batch_size, dtype=np.float32)
        for b, (ids, row) in enumerate(zip(encodings, rows, strict=True)):
            input_ids[b, : len(ids)], mask[b, : len(ids)] = ids, 1
            labels[b], weights[b] = data.labels[row], 1.0
        per_example = et(input_ids, mask, labels, weights, theta)
        norms = np.sqrt(sum(np.sum(g.reshape(et.batch_size, -1) ** 2, axis=1) for g in per_example.values()))
        clipped_any |= bool((norms[:batch] > CLIP).any())
        summed = clip_and_sum(per_example, CLIP, weights)
        noise_tensors = flat_to_tensors(noise, specs)
        for name in theta:
            gradient = scale * (summed[name] + noise_tensors[name])
            theta[name] = (theta[name] - LR * gradient).astype(np.float32)

        ort_params = ort.get_parameters()
        worst = max(float(np.abs(ort_params[n] - theta[n]).max()) for n in theta)
        assert worst <= 1e-5, f"step {step}: ORT and ExecuTorch parameters differ by {worst:.2e}"

    assert clipped_any, "choose CLIP so that clipping is exercised"
    moved = max(float(np.abs(theta[n] - start[n]).max()) for n in theta)
    assert moved > 1e-2  # the trajectory really goes somewhere
