"""``privtune demo`` end to end on a small fleet: a real ``privtune serve`` process, real phones' code,
the report's numbers checked against independent recomputations.

synth and export are skipped here (``--classifier``/``--bundle`` with the session's exported
bundle; their own tests cover them, and ``make demo`` runs the whole chain).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant
from typer.testing import CliRunner

from ondevice.protocol import DpConfig
from privtune.cli import app
from privtune.demo import DemoConfig, run_demo
from privtune.demo_simulation import DemoSimulation
from privtune.fleet.conditions import FleetConditions
from tests.tiny_data import tiny_tweeteval

pytestmark = pytest.mark.slow

LOCAL_DP = DpConfig(
    clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.5, local_steps=2, learning_rate=0.5, local_epsilon_budget=30.0
)

SMALL_SIMULATION = DemoSimulation(
    users=60, expected_cohort=20.0, rounds=2, epsilon=50.0, delta=1e-5, texts_per_user=2, class_weights="0.6,1"
)  # the session classifier has no synth card, so its weights are given

NO_FAULTS = FleetConditions(availability=1.0, dropout=0.0, straggler=0.0, network_fault=0.0, adversaries=("nan",))


def pld_epsilon(events: list[tuple[float, float, int]], delta: float) -> float:
    """Independent PLD: compose (q, z) × count with dp_accounting directly."""
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    for q, z, count in events:
        gaussian = dp_accounting.GaussianDpEvent(z)
        event = gaussian if q >= 1 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
        accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, classifier_dir: Path, offensive_dir: Path
) -> tuple[DemoConfig, dict]:
    tmp = tmp_path_factory.mktemp("demo")
    data = tiny_tweeteval(offensive_dir, tmp / "data", train=300, test=40)
    (data / "mapping.txt").write_text("0\tsafe\n1\tunsafe\n")  # the session bundle's label names
    config = DemoConfig(
        out_dir=tmp / "out", data=str(data), population=6, clients_per_round=6, rounds=2, workers=2,
        noise_multiplier=0.8, user_epsilon_budget=500.0, local_dp=LOCAL_DP,
        conditions=NO_FAULTS, classifier=classifier_dir, bundle=bundle_dir, test_examples=40,
        simulation=SMALL_SIMULATION,
    )  # fmt: skip
    return config, run_demo(config)


def test_report_covers_every_version_and_the_fleet(demo_run: tuple[DemoConfig, dict]) -> None:
    config, report = demo_run
    assert (config.out_dir / "report.json").is_file()
    assert (config.out_dir / "report-rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["version"] for r in report["by_version"]] == [0, 1, 2]
    assert report["before"]["version"] == 0 and report["after"]["version"] == 2
    for row in report["by_version"]:
        assert row["examples"] == 40 and 0 <= row["macro_f1"] <= 1 and 0 <= row["accuracy"] <= 1
    assert report["by_version"][0]["user_epsilon"] == 0.0
    assert 0 < report["by_version"][1]["user_epsilon"] < report["by_version"][2]["user_epsilon"]
    # the NaN device is refused every round and counted; the 5 honest devices are merged
    assert report["rejected_by_reason"].get("non_finite") == 2
    assert [r["accepted"] for r in report["rounds"]] == [5, 5]
    uploads = report["upload_bytes"]
    assert uploads["devices_that_uploaded"] == 5 and uploads["per_device_max"] > 0
    assert set(report["wall_seconds"]) >= {"synth", "export", "serve_start", "fleet", "evaluate"}


def test_report_user_epsilon_equals_an_independent_recomputation_from_the_ledger(
    demo_run: tuple[DemoConfig, dict],
) -> None:
    config, report = demo_run
    db = sqlite3.connect(config.out_dir / "server" / "state.db")
    rows = db.execute("SELECT sampling_rate, noise_multiplier FROM ledger ORDER BY round_id").fetchall()
    db.close()
    assert rows == [(1.0, 0.8), (1.0, 0.8)]
    independent = pld_epsilon([(q, z, 1) for q, z in rows], config.user_delta)
    privacy = report["user_level_privacy"]
    assert privacy["server"]["epsilon_amplified_pld"] == pytest.approx(independent, rel=0.01)
    assert privacy["recomputed_from_ledger"]["pld"] == pytest.approx(independent, rel=0.01)
    assert privacy["recomputed_from_ledger"]["rdp"] >= privacy["recomputed_from_ledger"]["pld"]
    assert report["after"]["user_epsilon"] == pytest.approx(independent, rel=0.01)


def test_report_device_epsilons_equal_each_ledger_recomputed(demo_run: tuple[DemoConfig, dict]) -> None:
    config, report = demo_run
    devices = report["device_level_privacy"]
    assert devices["devices_that_trained"] == 5
    for device_id, epsilon in devices["per_device"].items():
        steps = json.loads((config.out_dir / "fleet" / device_id / "ledger.json").read_text())["steps"]
        assert len(steps) == 2 * LOCAL_DP.local_steps  # two rounds, every step counted once
        independent = pld_epsilon([(s["sampling_rate"], s["noise_multiplier"], 1) for s in steps], 1e-5)
        assert epsilon == pytest.approx(independent, rel=0.01)


def test_the_simulated_population_section_reports_its_epsilon_and_both_models(
    demo_run: tuple[DemoConfig, dict],
) -> None:
    config, report = demo_run
    simulated = report["simulated_population"]
    assert simulated["users"] == 60 and simulated["rounds"] == 2 and simulated["stopped"] is None
    q, z = simulated["sampling_rate"], simulated["noise_multiplier"]
    assert q == pytest.approx(20 / 60)
    independent = pld_epsilon([(q, z, 2)], 1e-5)
    assert simulated["epsilon_pld"] == pytest.approx(independent, rel=0.01) and simulated["epsilon_pld"] <= 50.0
    assert simulated["epsilon_recomputed_dp_accounting"] == pytest.approx(simulated["epsilon_pld"], rel=0.005)
    assert simulated["sent_params_per_update"] == 12 * 384 * 2 + 2 * 384 + 2  # train_rank 1 + head
    for row in (simulated["v0"], simulated["final"], simulated["floor"]):
        assert 0 <= row["macro_f1"] <= 1 and 0 <= row["accuracy"] <= 1
    assert [r["round"] for r in simulated["by_round"]] == [0, 2]
    assert simulated["local_dp"]["class_weights"] == [0.6, 1.0]  # what the simulated devices applied
    assert (config.out_dir / "simulation" / "report.json").is_file()
    assert "simulate" in report["wall_seconds"]


def test_a_rerun_resumes_without_new_rounds(demo_run: tuple[DemoConfig, dict]) -> None:
    config, report = demo_run
    result = CliRunner().invoke(
        app,
        [
            "demo", "--out", str(config.out_dir), "--data", config.data, "--population", "6",
            "--clients-per-round", "6", "--rounds", "2", "--classifier", str(config.classifier),
            "--bundle", str(config.bundle), "--test-examples", "40", "--adversaries", "nan",
            "--noise-multiplier", "0.8", "--epsilon-budget", "500", "--local-steps", "2", "--simulated-users", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    again = json.loads((config.out_dir / "report.json").read_text())
    assert again["fleet_rounds_this_run"] == []
    assert [r["macro_f1"] for r in again["by_version"]] == [r["macro_f1"] for r in report["by_version"]]
    assert "user-level ε spent" in result.output


def test_demo_refuses_bad_settings_with_reasons(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--population", "5", "--clients-per-round", "9"])
    assert result.exit_code == 2
    assert "clients_per_round=9 exceeds population=5" in result.output
    with pytest.raises(ValueError, match="give both --classifier and --bundle"):
        DemoConfig(out_dir=tmp_path, data="x", classifier=tmp_path)
