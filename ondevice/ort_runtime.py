"""ONNX Runtime Training runner for a bundle's ``ort/`` files (the phone-side half of the ORT contract).

The graph contract (inputs, in-graph DP clipping, batch-1 steps) is documented in
``export.ort_backend``; the names below are shared by the exporter and this runner. The
trainable order comes from the manifest (``ArtifactManifest.trainable``): no ``onnx`` import
is needed on a device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ondevice.protocol import TensorSpec

BACKEND = "ort"
TRAINING_MODEL = "training_model.onnx"
EVAL_MODEL = "eval_model.onnx"
CHECKPOINT = "checkpoint"
INFERENCE_MODEL = "inference.onnx"
OPTIMIZER_FILES = {"adamw": "optimizer_adamw.onnx", "sgd": "optimizer_sgd.onnx"}

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LABELS = "labels"
LOGITS = "logits"
LOSS = "loss"
DP_CLIP_NORM = "dp_clip_norm"
DP_NOISE = "dp_noise"
DP_SCALE = "dp_scale"
TRAINING_USER_INPUTS = (INPUT_IDS, ATTENTION_MASK, LABELS, DP_CLIP_NORM, DP_NOISE, DP_SCALE)


class OrtDpTrainer:
    """Batch-1 DP training on the exported artifacts with onnxruntime.training's Python API.

    Mirrors what a phone does with TrainStep / OptimizerStep / LazyResetGrad: ``accumulate`` once per
    example (noise on one of them), then ``step``. ``gradients()`` reads the accumulation buffers, which
    only the Python API exposes (phones have no gradient getter): for tests only.
    """

    def __init__(
        self,
        ort_dir: Path,
        specs: Sequence[TensorSpec],
        optimizer: str = "sgd",
        learning_rate: float = 1e-3,
        threads: int | None = None,
        checkpoint: Path | None = None,
    ) -> None:
        from onnxruntime import SessionOptions
        from onnxruntime.training.api import CheckpointState, Module, Optimizer

        ort_dir = Path(ort_dir)
        if optimizer not in OPTIMIZER_FILES or not (ort_dir / OPTIMIZER_FILES[optimizer]).is_file():
            raise ValueError(f"no optimizer model for {optimizer!r} in {ort_dir} (known: {sorted(OPTIMIZER_FILES)})")
        options = SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.specs = tuple(specs)
        self.num_params = sum(s.numel for s in self.specs)
        self.state: Any = CheckpointState.load_checkpoint(str(checkpoint or ort_dir / CHECKPOINT))
        self.module: Any = Module(
            str(ort_dir / TRAINING_MODEL), self.state, str(ort_dir / EVAL_MODEL), device="cpu", session_options=options
        )
        self.optimizer: Any = Optimizer(str(ort_dir / OPTIMIZER_FILES[optimizer]), self.module)
        self.optimizer.set_learning_rate(float(learning_rate))
        self._zeros = np.zeros(self.num_params, dtype=np.float32)  # [P]

    def accumulate(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        label: int,
        clip_norm: float,
        noise: np.ndarray | None,
        scale: float,
    ) -> float:
        """One batch-1 TrainStep: ids/mask [1, T]; adds (clip(g)·+noise)·scale to the gradient buffers."""
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.asarray(attention_mask, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape != mask.shape:
            raise ValueError(f"input_ids / attention_mask must both be [1, T], found {ids.shape} / {mask.shape}")
        if not (clip_norm > 0 and math.isfinite(clip_norm)):
            raise ValueError(f"clip_norm must be a finite number > 0, found {clip_norm!r}")
        flat = self._zeros if noise is None else np.ascontiguousarray(noise, dtype=np.float32)
        if flat.shape != (self.num_params,):
            raise ValueError(f"noise must have shape ({self.num_params},), found {flat.shape}")
        self.module.train()
        loss = self.module(
            ids,
            mask,
            np.array([label], dtype=np.int64),
            np.array([clip_norm], dtype=np.float32),
            flat,
            np.array([scale], dtype=np.float32),
        )
        return float(np.asarray(loss))

    def plain_step(self, input_ids: np.ndarray, attention_mask: np.ndarray, labels: np.ndarray) -> float:
        """NON-PRIVATE reference step, for benchmarks only: one TrainStep on the whole [B, T] batch
        (clip norm 1e30 so nothing is clipped, zero noise, scale 1: the plain mean-loss gradient),
        then OptimizerStep + LazyResetGrad. Returns the batch's mean cross-entropy."""
        ids = np.asarray(input_ids, dtype=np.int64)  # [B, T]
        mask = np.asarray(attention_mask, dtype=np.int64)  # [B, T]
        target = np.asarray(labels, dtype=np.int64)  # [B]
        if ids.ndim != 2 or ids.shape != mask.shape or target.shape != (ids.shape[0],):
            raise ValueError(
                f"need input_ids / attention_mask [B, T] and labels [B], found {ids.shape} / {mask.shape} / "
                f"{target.shape}"
            )
        self.module.train()
        loss = self.module(
            ids,
            mask,
            target,
            np.array([1e30], dtype=np.float32),
            self._zeros,
            np.array([1.0], dtype=np.float32),
        )
        self.step()
        return float(np.asarray(loss))

    def step(self) -> None:
        """OptimizerStep with the accumulated gradient, then LazyResetGrad."""
        self.optimizer.step()
        self.module.lazy_reset_grad()

    def reset_gradients(self) -> None:
        """LazyResetGrad without an optimizer step (the next TrainStep overwrites the buffers)."""
        self.module.lazy_reset_grad()

    def save_checkpoint(self, path: Path) -> None:
        """Every parameter and the optimizer state (SaveCheckpoint with include_optimizer_state);
        pass the file as ``checkpoint=`` to resume."""
        from onnxruntime.training.api import CheckpointState

        CheckpointState.save_checkpoint(self.state, str(path), include_optimizer_state=True)

    def set_learning_rate(self, learning_rate: float) -> None:
        self.optimizer.set_learning_rate(float(learning_rate))

    def eval_loss(self, input_ids: np.ndarray, attention_mask: np.ndarray, labels: np.ndarray) -> float:
        """Mean cross-entropy of the eval model on a [B, T] batch with the current parameters."""
        self.module.eval()
        loss = self.module(
            np.asarray(input_ids, dtype=np.int64),
            np.asarray(attention_mask, dtype=np.int64),
            np.asarray(labels, dtype=np.int64),
        )
        self.module.train()
        return float(np.asarray(loss))

    def get_parameters(self, *, trainable_only: bool = True) -> dict[str, np.ndarray]:
        """float32 copies (the state's arrays are zero-copy views), canonical order for the trainables."""
        if trainable_only:
            return {s.name: np.array(self.state.parameters[s.name].data, dtype=np.float32) for s in self.specs}
        return {name: np.array(p.data, dtype=np.float32) for name, p in self.state.parameters}

    def set_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite trainable parameters by canonical name (cast to contiguous float32 first: float64
        into ORT's in-place update writes garbage)."""
        shapes = {s.name: s.shape for s in self.specs}
        for name, value in values.items():
            if name not in shapes:
                raise ValueError(f"{name!r} is not a trainable parameter")
            array = np.ascontiguousarray(value, dtype=np.float32)
            if array.shape != shapes[name]:
                raise ValueError(f"{name}: shape {array.shape} does not match {shapes[name]}")
            self.state.parameters[name] = array

    def gradients(self) -> dict[str, np.ndarray]:
        """Copies of the accumulated gradients. TESTS ONLY: phones' ORT APIs have no gradient getter."""
        out: dict[str, np.ndarray] = {}
        for spec in self.specs:
            grad = self.state.parameters[spec.name].grad
            if grad is None:
                raise RuntimeError(f"{spec.name} has no gradient buffer yet; run accumulate() first")
            out[spec.name] = np.array(grad, dtype=np.float32)
        return out

    def export_for_inferencing(self, path: Path) -> None:
        """Inference model with the CURRENT parameters (ExportModelForInferencing on the eval model)."""
        self.module.export_model_for_inferencing(str(path), [LOGITS])
