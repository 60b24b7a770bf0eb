"""The DP-SGD LoRA experiment runner: LP-FT composes the probe and the LoRA stage to the target ε
(recomputed with dp_accounting directly), a fixed head keeps the clip budget for LoRA alone, and
every evaluation carries the majority floor."""

from __future__ import annotations

import json
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant

from ondevice.data import load_tweeteval
from server_aggregator.synthetic.lora_experiment import LoraExperiment, main, run_lora_experiment

RANK, HIDDEN, LABELS = 4, 384, 2
LORA_PER_LAYER = 2 * RANK * (HIDDEN + HIDDEN)  # query + value, A [r, H] + B [H, r]


def direct_pld(ledger: dict, delta: float) -> float:  # type: ignore[type-arg]
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for release in ledger["releases"]:
        for step in release["steps"]:
            gaussian = dp_accounting.GaussianDpEvent(step["noise_multiplier"])
            q = step["sampling_rate"]
            event = gaussian if q >= 1 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
            accountant.compose(event, step["count"])
    return float(accountant.get_epsilon(delta))


def test_lp_ft_with_a_fixed_head_composes_to_the_target(offensive_dir: Path) -> None:
    train = load_tweeteval(offensive_dir, "train").subset(range(96))
    val = load_tweeteval(offensive_dir, "val").subset(range(40))
    config = LoraExperiment(
        epsilon=4.0, probe_epsilon=1.5, train_head=False, top_layers=1, optimizer="sgd", learning_rate=0.5,
        lr_schedule="linear", expected_batch_size=32, steps=3, micro_batch_size=16, lora_rank=RANK,
    )  # fmt: skip
    report = run_lora_experiment(config, train, {"val": val})
    assert report["trained_parameters"] == LORA_PER_LAYER  # LoRA of the top layer only, no head
    names = [r["name"] for r in report["ledger"]["releases"]]
    assert names == ["label-counts", "probe", "dp-sgd-lora"]
    composed = report["ledger"]["composed_epsilon"]["pld"]
    assert 3.9 <= composed <= 4.0 + 1e-9
    assert direct_pld(report["ledger"], config.delta) == pytest.approx(composed, rel=0.01)
    assert report["ledger"]["composed_epsilon"]["rdp"] >= composed
    for name in ("probe", "metrics"):
        assert 0.0 <= report[name]["val"]["macro_f1"] <= 1.0
    floor = report["floor"]["val"]
    assert floor["accuracy"] >= 0.5 and floor["macro_f1"] < 0.5  # always the majority label
    assert len(report["loss_per_10_steps"]) == 1


def test_without_a_probe_the_head_trains_and_the_cli_appends_a_line(offensive_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "task"
    data.mkdir()
    for split, count in (("train", 64), ("val", 24), ("test", 24)):
        texts = (offensive_dir / f"{split}_text.txt").read_text().splitlines()[:count]
        labels = (offensive_dir / f"{split}_labels.txt").read_text().splitlines()[:count]
        (data / f"{split}_text.txt").write_text("\n".join(texts) + "\n")
        (data / f"{split}_labels.txt").write_text("\n".join(labels) + "\n")
    (data / "mapping.txt").write_text((offensive_dir / "mapping.txt").read_text())
    out = tmp_path / "results.jsonl"
    args = ["--data", str(data), "--out", str(out), "--epsilon", "8", "--top-layers", "1", "--lora-rank", str(RANK)]
    assert main([*args, "--steps", "2", "--expected-batch-size", "16", "--threads", "1"]) == 0
    report = json.loads(out.read_text().splitlines()[-1])
    assert report["trained_parameters"] == LORA_PER_LAYER + LABELS * HIDDEN + LABELS
    assert [r["name"] for r in report["ledger"]["releases"]] == ["dp-sgd-lora"]
    assert set(report["metrics"]) == {"val", "test"} and "probe" not in report
    with pytest.raises(SystemExit):
        main([*args, "--train-head", "false"])  # a fixed head needs a probe


def test_bad_settings_name_the_value() -> None:
    with pytest.raises(ValueError, match="probe_epsilon must be in"):
        LoraExperiment(epsilon=2.0, probe_epsilon=2.0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        LoraExperiment(optimizer="adam")
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        LoraExperiment(steps=0)
