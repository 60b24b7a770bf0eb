"""Training runtimes for local DP steps, behind one interface and a string-keyed registry.

Both backends compute, for a Poisson-sampled batch of token sequences,

    θ ← optimizer(θ, scale · (Σ_i w_i · g_i · min(1, C / (‖g_i‖ + 1e-6)) + noise))

with ``noise`` supplied by the caller (already N(0, σ²C²) per coordinate, zero where the
round freezes a coordinate), ``scale`` = 1 / expected batch size and w_i ∈ (0, 1] the weight
of example i's label (``DpConfig.class_weights``; 1 when the round sets none). They differ in
where the work happens:

``ort``        ONNX Runtime Training with the bundle's in-graph clipping: one batch-1 TrainStep
               per example (the noise rides on the first one), then OptimizerStep and
               LazyResetGrad — the calls a phone's ORT API has (it has no gradient getter).
               A weight w_i enters as that TrainStep's scale, scale·w_i; the noise rides on the
               heaviest example k as noise / w_k, so scale·w_k·(noise / w_k) = scale·noise.
               An empty batch is a noise-only step: one TrainStep on ``[CLS] [SEP]`` with clip
               norm 1e-30, so the example's contribution is ≤ 1e-30 and only the noise remains.
``executorch`` the bundle's per-example gradient program (fixed batch ``Bfix`` rows; padding rows
               weight 0), clipping and noise on the host in float64 (``ondevice.dp_math``), and
               a numpy optimizer with ORT's update rules (``ondevice.optim``).

Parameters travel as float32 dicts keyed by canonical names (``ArtifactManifest.trainable``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from safetensors.numpy import load_file, save_file

from ondevice.dp_math import clip_and_sum, flat_to_tensors
from ondevice.optim import HostOptimizer, make_host_optimizer
from ondevice.protocol import ArtifactManifest, TensorSpec

NOISE_ONLY_CLIP = 1e-30
"""Clip norm of the ORT noise-only TrainStep that carries the noise of an empty batch."""


@dataclass(frozen=True)
class StepStats:
    """What one private step saw (the batch size is private to the device; never uploaded)."""

    batch_size: int
    mean_loss: float  # mean cross-entropy over the batch before the step (nan for an empty batch)


class TrainingBackend(Protocol):
    """One runtime's local DP step; see the module docstring for the exact rule."""

    name: str
    specs: tuple[TensorSpec, ...]

    def parameters(self) -> dict[str, np.ndarray]: ...

    def set_parameters(self, values: Mapping[str, np.ndarray]) -> None: ...

    def set_learning_rate(self, learning_rate: float) -> None: ...

    def private_step(
        self,
        examples: Sequence[np.ndarray],
        labels: Sequence[int],
        clip_norm: float,
        noise: np.ndarray,
        scale: float,
        weights: np.ndarray | None = None,
    ) -> StepStats: ...

    def save_state(self, directory: Path) -> None: ...

    def load_state(self, directory: Path) -> None: ...


def _pad(examples: Sequence[np.ndarray], rows: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token id arrays → ids, mask int64 [rows, T] (T = longest example, ≥ 2); extra rows are padding."""
    length = max(2, max(len(e) for e in examples))
    ids = np.full((rows, length), pad_id, dtype=np.int64)  # [rows, T]
    mask = np.zeros((rows, length), dtype=np.int64)  # [rows, T]
    for row, example in enumerate(examples):
        ids[row, : len(example)] = example
        mask[row, : len(example)] = 1
    for row in range(len(examples), rows):  # padding rows: [CLS] [SEP]-like content, weight 0
        ids[row, :2] = examples[0][:2] if len(examples[0]) >= 2 else pad_id
        mask[row, :2] = 1
    return ids, mask


def noised_gradient(
    clipped_sum: Mapping[str, np.ndarray], noise: np.ndarray, specs: Sequence[TensorSpec], scale: float
) -> dict[str, np.ndarray]:
    """scale · (Σ_i clip(g_i) + noise) per tensor, float64; ``noise`` is flat [P] in ``specs`` order.
    (The host half of the ExecuTorch step; ``ondevice.audit`` audits it.)"""
    noise_tensors = flat_to_tensors(np.asarray(noise, dtype=np.float64), specs)
    return {
        spec.name: scale * (np.asarray(clipped_sum[spec.name], np.float64) + noise_tensors[spec.name]) for spec in specs
    }


def _example_weights(weights: np.ndarray | None, count: int) -> np.ndarray:
    """float64 [count] weights in (0, 1] (ones when ``weights`` is None); ValueError otherwise."""
    if weights is None:
        return np.ones(count, dtype=np.float64)
    out = np.asarray(weights, dtype=np.float64)
    if out.shape != (count,):
        raise ValueError(f"weights must have shape ({count},), found {out.shape}")
    if not np.all((out > 0) & (out <= 1)):
        raise ValueError(f"example weights must be in (0, 1] (so one example moves the sum by <= C), found {out}")
    return out


def _check_step_inputs(
    examples: Sequence[np.ndarray], labels: Sequence[int], noise: np.ndarray, num_params: int, clip_norm: float
) -> None:
    if len(examples) != len(labels):
        raise ValueError(f"{len(examples)} examples but {len(labels)} labels")
    if noise.shape != (num_params,):
        raise ValueError(f"noise must have shape ({num_params},), found {noise.shape}")
    if not (clip_norm > 0 and np.isfinite(clip_norm)):
        raise ValueError(f"clip_norm must be a finite number > 0, found {clip_norm!r}")
    for index, example in enumerate(examples):
        if example.ndim != 1 or len(example) < 2:
            raise ValueError(f"example {index} must be a 1-D id array of length >= 2, found shape {example.shape}")


def _special_only_ids(bundle_dir: Path, manifest: ArtifactManifest) -> np.ndarray:
    """Ids of the empty text ([CLS] [SEP] for this vocabulary) as [1, T], from the bundle's tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(bundle_dir) / manifest.file("tokenizer").path))
    tokenizer.no_padding()
    ids = np.array([tokenizer.encode("").ids], dtype=np.int64)  # [1, T]
    if ids.shape[1] < 2:
        raise ValueError(f"the bundle's tokenizer encodes the empty text as {ids.tolist()}; expected [CLS] [SEP]")
    return ids


class OrtTrainingBackend:
    """ONNX Runtime Training with in-graph per-example clipping (batch-1 TrainSteps)."""

    name = "ort"

    def __init__(
        self, bundle_dir: Path, manifest: ArtifactManifest, optimizer: str, learning_rate: float, threads: int
    ) -> None:
        from ondevice.ort_runtime import OrtDpTrainer

        self.bundle_dir = Path(bundle_dir)
        self.specs = manifest.trainable
        self.optimizer_name = optimizer
        self.learning_rate = learning_rate
        self.threads = threads
        self._factory: Callable[[Path | None], OrtDpTrainer] = lambda checkpoint: OrtDpTrainer(
            self.bundle_dir / "ort", self.specs, optimizer, learning_rate, threads, checkpoint=checkpoint
        )
        self._trainer = self._factory(None)
        self._noise_only_ids = _special_only_ids(self.bundle_dir, manifest)  # [1, 2] [CLS] [SEP]

    def parameters(self) -> dict[str, np.ndarray]:
        return self._trainer.get_parameters()

    def set_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        self._trainer.set_parameters(values)

    def set_learning_rate(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate
        self._trainer.set_learning_rate(learning_rate)

    def private_step(
        self,
        examples: Sequence[np.ndarray],
        labels: Sequence[int],
        clip_norm: float,
        noise: np.ndarray,
        scale: float,
        weights: np.ndarray | None = None,
    ) -> StepStats:
        flat_noise = np.ascontiguousarray(noise, dtype=np.float32)  # [P]
        _check_step_inputs(examples, labels, flat_noise, self._trainer.num_params, clip_norm)
        example_weights = _example_weights(weights, len(examples))  # [B]
        self._trainer.reset_gradients()
        if not examples:
            ones = np.ones_like(self._noise_only_ids)
            self._trainer.accumulate(self._noise_only_ids, ones, 0, NOISE_ONLY_CLIP, flat_noise, scale)
            self._trainer.step()
            return StepStats(batch_size=0, mean_loss=float("nan"))
        carrier = int(np.argmax(example_weights))  # the noise rides on the heaviest example
        carried_noise = (np.asarray(noise, np.float64) / example_weights[carrier]).astype(np.float32)  # [P]
        losses = []
        for index, (example, label) in enumerate(zip(examples, labels, strict=True)):
            ids = np.asarray(example, dtype=np.int64)[None, :]  # [1, T]
            losses.append(
                self._trainer.accumulate(
                    ids,
                    np.ones_like(ids),
                    int(label),
                    clip_norm,
                    carried_noise if index == carrier else None,
                    scale * float(example_weights[index]),
                )
            )
        self._trainer.step()
        return StepStats(batch_size=len(examples), mean_loss=float(np.mean(losses)))

    def save_state(self, directory: Path) -> None:
        """ORT checkpoint with the optimizer state (~all weights: the ORT API saves frozen ones too)."""
        if self.optimizer_name == "sgd":
            save_file(self.parameters(), str(Path(directory) / "ort_params.safetensors"))
        else:
            self._trainer.save_checkpoint(Path(directory) / "ort_checkpoint")

    def load_state(self, directory: Path) -> None:
        directory = Path(directory)
        if self.optimizer_name == "sgd":
            self.set_parameters(load_file(str(directory / "ort_params.safetensors")))
        else:
            self._trainer = self._factory(directory / "ort_checkpoint")
            self._trainer.set_learning_rate(self.learning_rate)


class ExecuTorchTrainingBackend:
    """ExecuTorch per-example gradient program + host clipping, noise and optimizer."""

    name = "executorch"

    def __init__(
        self, bundle_dir: Path, manifest: ArtifactManifest, optimizer: str, learning_rate: float, threads: int
    ) -> None:
        from ondevice.et_runtime import EtPerExampleGrads, set_threads

        set_threads(threads)
        self.specs = manifest.trainable
        path = Path(bundle_dir) / manifest.file("per_example_grads", "executorch").path
        self._program = EtPerExampleGrads(path, self.specs)
        self.batch_rows = self._program.batch_size
        adapter = load_file(str(Path(bundle_dir) / manifest.file("adapter").path))
        self._params = {s.name: np.array(adapter[s.name], dtype=np.float32) for s in self.specs}
        self._optimizer: HostOptimizer = make_host_optimizer(optimizer, learning_rate)
        self._num_params = sum(s.numel for s in self.specs)

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._params.items()}

    def set_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        for spec in self.specs:
            if spec.name not in values:
                raise ValueError(f"trainable tensor {spec.name} is missing")
            array = np.array(values[spec.name], dtype=np.float32)
            if array.shape != spec.shape:
                raise ValueError(f"{spec.name}: shape {array.shape} does not match {spec.shape}")
            self._params[spec.name] = array

    def set_learning_rate(self, learning_rate: float) -> None:
        self._optimizer.learning_rate = float(learning_rate)

    def private_step(
        self,
        examples: Sequence[np.ndarray],
        labels: Sequence[int],
        clip_norm: float,
        noise: np.ndarray,
        scale: float,
        weights: np.ndarray | None = None,
    ) -> StepStats:
        _check_step_inputs(examples, labels, noise, self._num_params, clip_norm)
        example_weights = _example_weights(weights, len(examples))  # [B]
        total = {s.name: np.zeros(s.shape, dtype=np.float64) for s in self.specs}
        losses: list[float] = []
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]))  # less padding per chunk
        for start in range(0, len(order), self.batch_rows):
            chunk = order[start : start + self.batch_rows]
            ids, mask = _pad([examples[i] for i in chunk], self.batch_rows, pad_id=0)  # [Bfix, T]
            chunk_labels = np.zeros(self.batch_rows, dtype=np.int64)  # [Bfix]
            chunk_labels[: len(chunk)] = [int(labels[i]) for i in chunk]
            weight = np.zeros(self.batch_rows, dtype=np.float32)  # [Bfix] program input: real rows 1, padding 0
            weight[: len(chunk)] = 1.0
            per_example = self._program(ids, mask, chunk_labels, weight, self._params)  # name → [Bfix, *shape]
            losses.append(self._program.last_loss)
            after_clip = np.zeros(self.batch_rows, dtype=np.float64)  # [Bfix] w_i on the clipped rows
            after_clip[: len(chunk)] = example_weights[chunk]
            for name, summed in clip_and_sum(per_example, clip_norm, after_clip).items():
                total[name] += summed
        self._optimizer.step_inplace(self._params, noised_gradient(total, noise, self.specs, scale))
        mean_loss = float(sum(losses) / len(examples)) if examples else float("nan")
        return StepStats(batch_size=len(examples), mean_loss=mean_loss)

    def save_state(self, directory: Path) -> None:
        save_file(self.parameters(), str(Path(directory) / "et_params.safetensors"))
        state = self._optimizer.state_dict()
        if state:
            save_file(state, str(Path(directory) / "et_optimizer.safetensors"))

    def load_state(self, directory: Path) -> None:
        directory = Path(directory)
        self.set_parameters(load_file(str(directory / "et_params.safetensors")))
        optimizer_file = directory / "et_optimizer.safetensors"
        self._optimizer.load_state_dict(load_file(str(optimizer_file)) if optimizer_file.is_file() else {})


TRAINING_BACKENDS: dict[str, type[OrtTrainingBackend] | type[ExecuTorchTrainingBackend]] = {
    "ort": OrtTrainingBackend,
    "executorch": ExecuTorchTrainingBackend,
}


def make_training_backend(
    name: str, bundle_dir: Path, manifest: ArtifactManifest, optimizer: str, learning_rate: float, threads: int = 1
) -> TrainingBackend:
    """The training runtime registered under ``name`` (``ort`` or ``executorch``)."""
    if name not in TRAINING_BACKENDS:
        raise ValueError(f"unknown training runtime {name!r}; known: {sorted(TRAINING_BACKENDS)}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, found {threads!r}")
    return TRAINING_BACKENDS[name](Path(bundle_dir), manifest, optimizer, learning_rate, threads)
