"""The ONNX Runtime backend of ``privtune export`` on the real MiniLM + LoRA classifier.

One export per module (into a tmp folder), after a seeded perturbation of the trainable tensors so
that lora_B is non-zero; every runtime result is compared with eager PyTorch or the batch-1 oracle.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.bundle_types import ExportOptions, WrittenFile
from export.classifier import Classifier, canonical_name
from export.ort_backend import (
    DP_CLIP_NORM,
    DP_NOISE,
    DP_SCALE,
    TRAINING_USER_INPUTS,
    export_ort,
)
from ondevice.data import LabelledTexts, load_tweeteval
from ondevice.dp_math import flat_to_tensors, tensors_to_flat
from ondevice.ort_runtime import OrtDpTrainer
from tests.dp_oracle import clipped_noised_sum, per_example_gradients

pytestmark = pytest.mark.slow

OPTIONS = ExportOptions(max_seq_len=128, optimizers=("adamw", "sgd"))
EXPECTED_FILES = {
    "ort/training_model.onnx": "training_model",
    "ort/eval_model.onnx": "eval_model",
    "ort/optimizer_adamw.onnx": "optimizer_adamw",
    "ort/optimizer_sgd.onnx": "optimizer_sgd",
    "ort/checkpoint": "checkpoint",
    "ort/inference.onnx": "inference_model",
}


@dataclass
class Exported:
    ort_dir: Path
    files: list[WrittenFile]
    seconds: float
    state: dict[str, np.ndarray]
    """The (perturbed) trainable state the bundle was exported with."""


@pytest.fixture(scope="module")
def tweets(offensive_dir: Path) -> LabelledTexts:
    return load_tweeteval(offensive_dir, "test")


@pytest.fixture(scope="module")
def exported(classifier: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """Export once, with the trainables perturbed (seeded, scale 0.05); restore them afterwards."""
    original = classifier.trainable_state()
    rng = np.random.default_rng(1234)
    perturbed = {n: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for n, v in original.items()}
    classifier.load_trainable_state(perturbed)
    try:
        bundle = tmp_path_factory.mktemp("ort_bundle")
        start = time.perf_counter()
        files = export_ort(classifier, bundle, OPTIONS)
        seconds = time.perf_counter() - start
        yield Exported(bundle / "ort", files, seconds, classifier.trainable_state())
    finally:
        classifier.load_trainable_state(original)


def _ids(clf: Classifier, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    batch = clf.encode(texts)
    return batch["input_ids"].numpy(), batch["attention_mask"].numpy()


def _max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert set(a) == set(b)
    return max(float(np.abs(np.asarray(a[n], np.float64) - np.asarray(b[n], np.float64)).max()) for n in a)


def _global_norm(tensors: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in tensors.values())))


def _accumulate(
    trainer: OrtDpTrainer,
    clf: Classifier,
    texts: Sequence[str],
    labels: Sequence[int],
    clip_norm: float,
    noise: np.ndarray | None,
    noise_step: int,
    scale: float,
) -> list[float]:
    """Batch-1 TrainSteps, each text at its own length; noise on ``noise_step`` only. Returns losses."""
    losses = []
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        ids, mask = _ids(clf, [text])  # [1, T_i]
        losses.append(trainer.accumulate(ids, mask, label, clip_norm, noise if i == noise_step else None, scale))
    return losses


# --------------------------------------------------------------------------- 1. files and contract


def test_files_versions_and_checkpoint(exported: Exported, classifier: Classifier) -> None:
    from onnxruntime.training.api import CheckpointState

    assert {f.path: f.role for f in exported.files} == EXPECTED_FILES
    assert all(f.backend == "ort" for f in exported.files)
    root = exported.ort_dir.parent
    for f in exported.files:
        assert (root / f.path).exists(), f.path
        if f.path.endswith(".onnx"):
            model = onnx.load(str(root / f.path), load_external_data=False)
            opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
            assert model.ir_version <= 10 and opset <= 21, (f.path, model.ir_version, opset)

    specs = classifier.trainable_specs()
    state = CheckpointState.load_checkpoint(str(exported.ort_dir / "checkpoint"))
    params = {name: p for name, p in state.parameters}
    assert list(params) == sorted(params)  # observed: CheckpointState lists names sorted, not canonically
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    assert list(trainable) and set(trainable) == {s.name for s in specs}  # all 26, canonical names
    for spec in specs:
        data = np.array(trainable[spec.name].data)
        assert data.shape == spec.shape and data.dtype == np.float32
        np.testing.assert_array_equal(data, exported.state[spec.name])
    # Frozen: every other exported weight, bit-equal to the torch weight of the same canonical name.
    torch_frozen = {canonical_name(n): p for n, p in classifier.model.named_parameters() if not p.requires_grad}
    frozen = {n: p for n, p in params.items() if not p.requires_grad}
    assert len(frozen) > 90 and set(frozen) <= set(torch_frozen)
    for name, param in frozen.items():
        np.testing.assert_array_equal(np.array(param.data), torch_frozen[name].detach().numpy())


def test_zero_lora_b_stays_trainable(
    exported: Exported, classifier: Classifier, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A fresh adapter has lora_B = 0 in every layer: identical tensors an EVAL-mode export would merge."""
    from onnxruntime.training.api import CheckpointState

    fresh = {n: np.zeros_like(v) if ".lora_B." in n else v for n, v in exported.state.items()}
    classifier.load_trainable_state(fresh)
    try:
        bundle = tmp_path_factory.mktemp("ort_fresh")
        export_ort(classifier, bundle, ExportOptions(optimizers=("sgd",)))
    finally:
        classifier.load_trainable_state(exported.state)
    state = CheckpointState.load_checkpoint(str(bundle / "ort" / "checkpoint"))
    trainable = {name: np.array(p.data) for name, p in state.parameters if p.requires_grad}
    assert set(trainable) == set(fresh) and len(trainable) == 26
    assert all(not trainable[n].any() for n in fresh if ".lora_B." in n)


def test_graph_interfaces(exported: Exported, classifier: Classifier) -> None:
    specs = classifier.trainable_specs()
    training = onnx.load(str(exported.ort_dir / "training_model.onnx"))
    inputs = {i.name: i for i in training.graph.input}
    names = [i.name for i in training.graph.input]
    assert names[: len(TRAINING_USER_INPUTS)] == list(TRAINING_USER_INPUTS)
    trainable_inputs = [n for n in names if n in {s.name for s in specs}]
    assert trainable_inputs == [s.name for s in specs]  # canonical order inside the training graph

    def dims(name: str) -> list[str | int]:
        shape = inputs[name].type.tensor_type.shape.dim
        return [d.dim_param or d.dim_value for d in shape]

    assert all(isinstance(d, str) for d in dims("input_ids") + dims("attention_mask"))  # dynamic B, T
    assert dims(DP_NOISE) == [74_498] and dims(DP_CLIP_NORM) == [1] and dims(DP_SCALE) == [1]
    assert inputs[DP_NOISE].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert inputs["labels"].type.tensor_type.elem_type == onnx.TensorProto.INT64

    trainer = OrtDpTrainer(exported.ort_dir, classifier.trainable_specs(), "sgd")
    assert trainer.module.input_names() == list(TRAINING_USER_INPUTS)
    assert trainer.module.output_names() == ["loss"]  # Module returns the loss only
    # ORT's contiguous trainable buffer is the canonical flat layout (the dp_noise layout too).
    flat = trainer.module.get_contiguous_parameters(trainable_only=True).numpy()
    np.testing.assert_array_equal(flat, tensors_to_flat(exported.state, specs))


# --------------------------------------------------------------------------- 2. inference parity


def test_inference_parity(exported: Exported, classifier: Classifier, tweets: LabelledTexts) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported.ort_dir / "inference.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    texts = list(tweets.texts[:40])
    by_length = sorted(texts, key=len)
    mixed = by_length[:4] + by_length[-4:]  # short and long, padded to the longest
    long_text = " ".join(texts)  # far beyond 128 tokens: truncated at max_seq_len
    batches = [mixed, by_length[8:16], ["ok"], [long_text], [by_length[20]], [by_length[-5]], [texts[0], "hi"]]
    seen_lengths = set()
    worst = 0.0
    classifier.model.eval()
    for batch in batches:
        ids, mask = _ids(classifier, batch)
        seen_lengths.add(ids.shape[1])
        (got,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
        with torch.no_grad():
            want = classifier.model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        assert got.shape == (len(batch), 2) and got.dtype == np.float32
        worst = max(worst, float(np.abs(got - want).max()))
    assert OPTIONS.max_seq_len in seen_lengths and min(seen_lengths) <= 4 and len(seen_lengths) >= 5
    assert sum(len(b) for b in batches) >= 16
    assert worst <= 1e-4, worst


# --------------------------------------------------------------------------- 3. training parity


def test_clipped_noised_gradients_match_oracle(
    exported: Exported, classifier: Classifier, tweets: LabelledTexts
) -> None:
    texts, labels = list(tweets.texts[:6]), [int(y) for y in tweets.labels[:6]]
    specs = classifier.trainable_specs()
    grads = per_example_gradients(classifier, texts, labels)
    norms = np.array([_global_norm(g) for g in grads])
    clip = float(np.median(norms))
    assert (norms > clip).any() and (norms < clip).any()  # some examples clipped, some not
    total = sum(s.numel for s in specs)
    noise = (np.random.default_rng(7).standard_normal(total) * clip).astype(np.float32)  # [P]
    scale = 1.0 / len(texts)
    trainer = OrtDpTrainer(exported.ort_dir, classifier.trainable_specs(), "sgd")

    losses = _accumulate(trainer, classifier, texts, labels, clip, noise, 2, scale)
    want = clipped_noised_sum(grads, clip, flat_to_tensors(noise, specs), scale)
    assert _max_abs_diff(trainer.gradients(), want) <= 1e-5
    for loss, text, label in zip(losses, texts, labels, strict=True):  # the TrainStep output is the loss
        ids, mask = _ids(classifier, [text])
        with torch.no_grad():
            logits = classifier.model(torch.from_numpy(ids), torch.from_numpy(mask))
        assert abs(loss - float(torch.nn.functional.cross_entropy(logits, torch.tensor([label])))) <= 1e-5

    # Huge C, no noise, scale 1: the plain sum of the per-example gradients.
    trainer.reset_gradients()
    _accumulate(trainer, classifier, texts, labels, 1e6, None, 0, 1.0)
    plain = {n: sum(g[n] for g in grads) for n in grads[0]}
    assert _max_abs_diff(trainer.gradients(), plain) <= 1e-5

    # Tiny C: each example's contribution has norm C·scale, the sum at most B·C·scale.
    tiny = 1e-3
    for text, label in zip(texts, labels, strict=True):
        trainer.reset_gradients()
        _accumulate(trainer, classifier, [text], [label], tiny, None, 0, scale)
        assert _global_norm(trainer.gradients()) <= tiny * scale * (1 + 1e-5)
    trainer.reset_gradients()
    _accumulate(trainer, classifier, texts, labels, tiny, None, 0, scale)
    assert _global_norm(trainer.gradients()) <= len(texts) * tiny * scale * (1 + 1e-5)
    zeros = {n: np.zeros_like(v) for n, v in grads[0].items()}
    assert _max_abs_diff(trainer.gradients(), clipped_noised_sum(grads, tiny, zeros, scale)) <= 1e-7


# --------------------------------------------------------------------------- 4. SGD step


def test_sgd_step_updates_exactly_the_trainables(
    exported: Exported, classifier: Classifier, tweets: LabelledTexts
) -> None:
    import onnxruntime

    texts, labels = list(tweets.texts[10:14]), [int(y) for y in tweets.labels[10:14]]
    lr = 0.05
    trainer = OrtDpTrainer(exported.ort_dir, classifier.trainable_specs(), "sgd", learning_rate=lr)
    total = sum(s.numel for s in classifier.trainable_specs())
    noise = np.random.default_rng(3).standard_normal(total).astype(np.float32)  # [P]
    before_all = trainer.get_parameters(trainable_only=False)
    before = trainer.get_parameters()
    ids, mask = _ids(classifier, texts)
    loss_before = trainer.eval_loss(ids, mask, np.array(labels))
    _accumulate(trainer, classifier, texts, labels, 1.0, noise, 1, 1.0 / len(texts))
    grads = trainer.gradients()
    trainer.step()
    after = trainer.get_parameters()
    after_all = trainer.get_parameters(trainable_only=False)

    for name in before:
        assert np.all(after[name] != before[name]), f"{name} has elements the step left unchanged"
        np.testing.assert_allclose(after[name], before[name] - lr * grads[name], rtol=0, atol=1e-6)
    for name in before_all.keys() - before.keys():
        np.testing.assert_array_equal(after_all[name], before_all[name])

    # The eval model and an inference model re-derived on the "device" both see the new adapter on
    # the unchanged frozen path: they agree with eager PyTorch holding the updated trainables.
    exported_with = classifier.trainable_state()
    classifier.load_trainable_state(after)
    try:
        with torch.no_grad():
            logits = classifier.model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        eager_loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor(labels)))
    finally:
        classifier.load_trainable_state(exported_with)
    assert abs(trainer.eval_loss(ids, mask, np.array(labels)) - eager_loss) <= 1e-5
    path = exported.ort_dir.parent / "after_sgd_inference.onnx"
    trainer.export_for_inferencing(path)
    (got,) = onnxruntime.InferenceSession(str(path)).run(["logits"], {"input_ids": ids, "attention_mask": mask})
    assert float(np.abs(got - logits).max()) <= 1e-4

    # set_parameters round-trips (float64 input is cast, not reinterpreted) and the sessions use it.
    trainer.set_parameters({n: v.astype(np.float64) for n, v in before.items()})
    assert _max_abs_diff(trainer.get_parameters(), before) == 0.0
    assert trainer.eval_loss(ids, mask, np.array(labels)) == loss_before


# --------------------------------------------------------------------------- 5. AdamW sanity


def test_adamw_steps_reduce_the_loss(exported: Exported, classifier: Classifier, tweets: LabelledTexts) -> None:
    texts, labels = list(tweets.texts[20:28]), [int(y) for y in tweets.labels[20:28]]
    trainer = OrtDpTrainer(exported.ort_dir, classifier.trainable_specs(), "adamw", learning_rate=1e-2)
    ids, mask = _ids(classifier, texts)
    start = trainer.eval_loss(ids, mask, np.array(labels))
    for _ in range(4):
        _accumulate(trainer, classifier, texts, labels, 1.0, None, 0, 1.0 / len(texts))
        trainer.step()
    end = trainer.eval_loss(ids, mask, np.array(labels))
    assert end < 0.8 * start, (start, end)
