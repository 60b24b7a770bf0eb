"""A DP recipe learns at small size: the DP linear probe on 3,000 real tweets against the majority floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.classifier import ClassifierSpec, build_classifier
from ondevice.data import load_labelled
from ondevice.randomness import make_random_source
from server_aggregator.synthetic.classifier_training import majority_floor, metrics_from_predictions
from server_aggregator.synthetic.config import ProbeRecipe
from server_aggregator.synthetic.probe import embed_texts, head_state, install_head, predict
from server_aggregator.synthetic.recipes import train_probe_release

MACRO_F1_MARGIN = 0.20  # over the floor's 0.42 on TweetEval offensive test


@pytest.mark.slow
def test_dp_probe_on_3000_tweets_beats_the_majority_floor(offensive_dir: Path) -> None:
    train = load_labelled(str(offensive_dir), "train", None, empty="skip").subset(list(range(3000)))
    test = load_labelled(str(offensive_dir), "test", None, empty="skip")
    clf = build_classifier(None, ClassifierSpec(labels=train.label_names), seed=0)
    x_train, x_test = embed_texts(clf, list(train.texts)), embed_texts(clf, list(test.texts))
    y_train, y_test = np.asarray(train.labels), np.asarray(test.labels)
    trained = train_probe_release(
        x_train,
        y_train,
        2,
        ProbeRecipe(expected_batch_size=512, steps=300),
        prior=(),
        total_epsilon=4.0,
        delta=1e-6,
        init=head_state(clf),
        random_source=make_random_source("seeded", 1),
    )
    assert trained.noise_multiplier > 1.0  # a real DP run, not a near-noiseless one
    metrics = metrics_from_predictions(y_test, predict(trained.result.weight, trained.result.bias, x_test), 2)
    floor = majority_floor(y_test, 2)
    assert metrics["macro_f1"] >= floor["macro_f1"] + MACRO_F1_MARGIN, (metrics, floor)
    assert metrics["accuracy"] > floor["accuracy"], (metrics, floor)
    # The head installed in the classifier predicts exactly what the probe predicted (LoRA B = 0).
    install_head(clf, trained.result.weight, trained.result.bias)
    probs = clf.classify(list(test.texts[:64]))
    np.testing.assert_array_equal(
        probs.argmax(axis=1), predict(trained.result.weight, trained.result.bias, x_test[:64])
    )
