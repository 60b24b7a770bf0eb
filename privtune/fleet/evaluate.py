"""Evaluate a global adapter the way a phone would: through the bundle's ONNX Runtime programs.

The bundle's inference programs bake in the adapter they were exported with, so a published
adapter is evaluated by loading it into the ORT training session (CheckpointState parameters) and
exporting an inference model from it (``ExportModelForInferencing``, which phones' ORT APIs have
too), then classifying with the bundle's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ondevice.bundle import verify_bundle
from ondevice.data import LabelledTexts
from ondevice.inference import DeviceClassifier, OrtInference
from ondevice.ort_runtime import OrtDpTrainer
from ondevice.tokenizer import DeviceTokenizer
from server_aggregator.synthetic.classifier_training import macro_f1


def device_classifier_with_adapter(
    bundle_dir: Path, params: Mapping[str, np.ndarray], work_dir: Path, *, threads: int = 1
) -> DeviceClassifier:
    """An ORT ``DeviceClassifier`` whose weights are the bundle's base + ``params`` (LoRA + head)."""
    manifest = verify_bundle(bundle_dir)
    trainer = OrtDpTrainer(Path(bundle_dir) / "ort", manifest.trainable, threads=threads)
    trainer.set_parameters(params)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "inference-with-adapter.onnx"
    trainer.export_for_inferencing(path)
    tokenizer = DeviceTokenizer.from_bundle(bundle_dir, manifest)
    return DeviceClassifier(
        manifest, tokenizer, OrtInference(path, threads), runtime="ort", precision="fp32", threads=threads
    )


def evaluate_device_classifier(clf: DeviceClassifier, test: LabelledTexts) -> dict[str, Any]:
    """Accuracy and macro-F1 on ``test`` (labels must match the bundle's)."""
    if tuple(clf.labels) != tuple(test.label_names):
        raise ValueError(f"bundle labels {clf.labels} differ from the test data's {test.label_names}")
    predicted = clf.classify(list(test.texts)).argmax(axis=1)
    truth = np.asarray(test.labels)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "macro_f1": macro_f1(truth, predicted, len(test.label_names)),
        "examples": len(test),
    }
