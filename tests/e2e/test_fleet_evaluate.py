"""A global adapter evaluated through the phone's ORT programs equals PyTorch with the same adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ondevice.data import LabelledTexts, load_tweeteval
from privtune.fleet.evaluate import device_classifier_with_adapter, evaluate_device_classifier

pytestmark = pytest.mark.slow


def test_adapter_on_the_ort_program_matches_pytorch(
    tmp_path: Path, bundle_dir: Path, classifier_dir: Path, offensive_dir: Path
) -> None:
    from export.classifier import load_classifier

    reference = load_classifier(classifier_dir)
    rng = np.random.default_rng(5)
    params = {
        k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for k, v in reference.trainable_state().items()
    }
    reference.load_trainable_state(params)
    tweets = load_tweeteval(offensive_dir, "test").subset(range(60))
    want = reference.classify(list(tweets.texts))  # [60, 2]

    device = device_classifier_with_adapter(bundle_dir, params, tmp_path / "eval")
    got = device.classify(list(tweets.texts))
    assert float(np.abs(got - want).max()) < 1e-5
    base = device_classifier_with_adapter(bundle_dir, load_classifier(classifier_dir).trainable_state(), tmp_path / "b")
    assert float(np.abs(base.classify(list(tweets.texts)) - want).max()) > 1e-3  # the adapter really changed it

    relabelled = LabelledTexts(tweets.texts, tweets.labels, tuple(device.labels), source="test")
    metrics = evaluate_device_classifier(device, relabelled)
    predicted = want.argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(predicted == np.asarray(tweets.labels))))
    with pytest.raises(ValueError, match="differ from the test data's"):
        evaluate_device_classifier(device, tweets)
