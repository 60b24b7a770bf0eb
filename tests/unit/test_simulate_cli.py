"""``privtune simulate``'s planning mode and its refusals (no model is loaded for either)."""

from __future__ import annotations

import json
from pathlib import Path

import dp_accounting
import pytest
from typer.testing import CliRunner

from privtune.cli import app


def test_plan_prints_the_noise_each_cohort_allows_without_running_anything() -> None:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--plan",
            "--users",
            "10000",
            "--epsilon",
            "4",
            "--rounds",
            "30",
            "--plan-cohorts",
            "100,500,20000",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.strip() and line.split()[0] in ("100", "500")]
    assert [r[0] for r in rows] == ["100", "500"]  # a cohort above the population is left out
    for cohort, q, rounds, z, *_ in rows:
        assert float(q) == float(cohort) / 10_000 and rounds == "30"
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(float(q), dp_accounting.GaussianDpEvent(float(z))), 30
        )
        epsilon = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4).compose(event).get_epsilon(1e-6)
        assert 3.9 < epsilon <= 4.0 * 1.005  # z printed to 3 decimals


def test_a_run_without_a_classifier_is_refused_with_the_reason() -> None:
    result = CliRunner().invoke(app, ["simulate", "--users", "100"])
    assert result.exit_code == 2
    assert "needs --classifier and --out" in result.output


def test_bad_settings_are_refused_before_any_work(tmp_path: object) -> None:
    result = CliRunner().invoke(
        app,
        ["simulate", "--classifier", "nowhere", "--out", str(tmp_path), "--users", "10", "--clients-per-round", "50"],
    )
    assert result.exit_code == 2
    assert "expected_cohort" in result.output


def test_class_weights_come_from_the_card_or_the_command_line(tmp_path: Path) -> None:
    from privtune.class_weights import parse_class_weights as _class_weights

    (tmp_path / "card.json").write_text(json.dumps({"settings": {"class_weights": [0.4, 1.0]}}))
    assert _class_weights("card", tmp_path) == (0.4, 1.0)
    assert _class_weights("0.5,1", tmp_path) == (0.5, 1.0)
    assert _class_weights("none", tmp_path) is None
    (tmp_path / "card.json").write_text(json.dumps({"settings": {"class_weights": None}}))
    with pytest.raises(ValueError, match="holds no class_weights"):
        _class_weights("card", tmp_path)
    with pytest.raises(ValueError, match="none, card or comma-separated"):
        _class_weights("balanced", tmp_path)
    with pytest.raises(ValueError, match="has no card.json.*give the weights explicitly"):
        _class_weights("card", tmp_path / "elsewhere")


def test_the_train_split_is_refused_as_a_held_out_split(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--classifier",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--users",
            "10",
            "--clients-per-round",
            "5",
            "--eval-splits",
            "val,train",
        ],
    )
    assert result.exit_code == 2
    assert "train feeds the devices" in result.output
