"""The device's privacy ledger: persistence, idempotency across restarts, budget refusal, corruption, atomicity."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from ondevice.accounting import (
    LedgerCorrupted,
    LedgerStep,
    LocalPrivacyLedger,
    PrivacyBudgetExceeded,
    StepEvent,
    make_accountant,
)
from ondevice.protocol import DpConfig
from ondevice.trainer import check_round_budget

DELTA = 1e-5
Q, SIGMA = 0.02, 1.1


def _ledger(tmp_path: Path) -> LocalPrivacyLedger:
    return LocalPrivacyLedger(tmp_path / "ledger.json", DELTA)


def _fill(ledger: LocalPrivacyLedger, rounds: int = 2, steps: int = 5) -> None:
    for r in range(rounds):
        for s in range(steps):
            assert ledger.record_step(r, s, Q, SIGMA) is True


def test_fresh_ledger_is_empty_and_writes_nothing(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert ledger.steps() == []
    assert ledger.epsilon() == 0.0
    assert not (tmp_path / "ledger.json").exists()


def test_steps_persist_across_reopen(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _fill(ledger)
    reopened = _ledger(tmp_path)
    assert reopened.steps() == ledger.steps()
    assert reopened.steps()[3] == LedgerStep(0, 3, Q, SIGMA)
    assert reopened.epsilon() == ledger.epsilon() > 0
    assert reopened.epsilon("rdp") == ledger.epsilon("rdp")


def test_epsilon_is_the_accountants_epsilon_of_the_recorded_steps(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=3, steps=4)
    ledger.record_step(3, 0, 0.05, 0.9)
    expected = [StepEvent(Q, SIGMA, 12), StepEvent(0.05, 0.9)]
    for name in ("pld", "rdp"):
        assert ledger.epsilon(name) == make_accountant(name).epsilon(expected, DELTA)
    assert ledger.epsilon("rdp") >= ledger.epsilon("pld")


def test_record_step_is_idempotent_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=1, steps=3)
    before_bytes, before_eps = path.read_bytes(), ledger.epsilon()
    assert ledger.record_step(0, 2, Q, SIGMA) is False  # same process
    restarted = _ledger(tmp_path)  # simulated crash + restart: the round is replayed from step 0
    assert [restarted.record_step(0, s, Q, SIGMA) for s in range(3)] == [False, False, False]
    assert restarted.record_step(0, 3, Q, SIGMA) is True  # the first genuinely new step counts
    assert len(restarted.steps()) == 4
    assert _ledger(tmp_path).epsilon() == make_accountant("pld").epsilon([StepEvent(Q, SIGMA, 4)], DELTA)
    assert before_eps < restarted.epsilon()
    assert before_bytes != path.read_bytes()


def test_conflicting_rerecord_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = _ledger(tmp_path)
    ledger.record_step(7, 0, Q, SIGMA)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="round 7 step 0 is already recorded"):
        ledger.record_step(7, 0, Q, SIGMA * 2)
    with pytest.raises(ValueError, match="already recorded"):
        _ledger(tmp_path).record_step(7, 0, Q / 2, SIGMA)
    assert path.read_bytes() == before
    assert ledger.steps() == [LedgerStep(7, 0, Q, SIGMA)]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1, 0, Q, SIGMA), "round_id"),
        ((0, 1.0, Q, SIGMA), "step"),
        ((0, 0, 0.0, SIGMA), "sampling_rate"),
        ((0, 0, Q, -0.5), "noise_multiplier"),
        ((0, 0, Q, float("nan")), "noise_multiplier"),
    ],
)
def test_bad_steps_are_refused_before_recording(tmp_path: Path, args: tuple[object, ...], field: str) -> None:
    ledger = _ledger(tmp_path)
    with pytest.raises(ValueError, match=field):
        ledger.record_step(*args)  # type: ignore[arg-type]
    assert ledger.steps() == []
    assert not (tmp_path / "ledger.json").exists()


def test_projected_epsilon_adds_the_planned_steps(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=1, steps=10)
    extra = [StepEvent(Q, SIGMA, 10)]
    projected = ledger.projected_epsilon(extra)
    assert projected == make_accountant("pld").epsilon([StepEvent(Q, SIGMA, 20)], DELTA)
    assert projected > ledger.epsilon()
    assert ledger.projected_epsilon([]) == ledger.epsilon()
    assert len(ledger.steps()) == 10  # projecting records nothing


def test_budget_check_passes_within_budget_and_refuses_past_it(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=2, steps=10)
    extra = [StepEvent(Q, SIGMA, 30)]  # planned ε ≠ spent ε, so each number is checked separately
    spent, projected = ledger.epsilon(), ledger.projected_epsilon(extra)
    planned = make_accountant("pld").epsilon(extra, DELTA)
    assert ledger.check_budget(extra, projected * 1.01) == projected
    budget = (spent + projected) / 2
    with pytest.raises(PrivacyBudgetExceeded) as info:
        ledger.check_budget(extra, budget)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert (err.spent, err.planned, err.projected, err.budget) == (spent, planned, projected, budget)
    message = str(err)
    for number in (spent, planned, projected, budget):
        assert f"{number:.4f}" in message
    assert len({f"{x:.4f}" for x in (spent, planned, projected, budget)}) == 4
    assert "20 recorded steps" in message and "30 planned steps" in message
    assert len(ledger.steps()) == 20  # refusing records nothing


def test_budget_already_spent_refuses_even_an_empty_plan(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=1, steps=5)
    with pytest.raises(PrivacyBudgetExceeded, match=re.escape(f"spent ε={ledger.epsilon():.4f}")):
        ledger.check_budget([], ledger.epsilon() / 2)
    with pytest.raises(ValueError, match="budget"):
        ledger.check_budget([], 0.0)


def test_budget_check_can_use_rdp(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=1, steps=5)
    extra = [StepEvent(Q, SIGMA, 5)]
    pld, rdp = ledger.projected_epsilon(extra), ledger.projected_epsilon(extra, "rdp")
    assert pld < rdp
    assert ledger.check_budget(extra, (pld + rdp) / 2) == pld
    with pytest.raises(PrivacyBudgetExceeded, match="rdp"):
        ledger.check_budget(extra, (pld + rdp) / 2, accountant="rdp")


def _valid_document(tmp_path: Path) -> dict[str, object]:
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=1, steps=2)
    doc = json.loads((tmp_path / "ledger.json").read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize(
    "corrupt",
    [
        "garbage",
        "truncated",
        "empty",
        "not_an_object",
        "wrong_format",
        "wrong_relation",
        "steps_missing",
        "bad_step_value",
        "extra_step_key",
        "duplicate_step",
    ],
)
def test_corrupted_ledger_raises_naming_the_path(tmp_path: Path, corrupt: str) -> None:
    path = tmp_path / "ledger.json"
    doc = _valid_document(tmp_path)
    steps = doc["steps"]
    assert isinstance(steps, list)
    text = json.dumps(doc)
    if corrupt == "garbage":
        path.write_bytes(b"\x00\xff\xfe not json")
    elif corrupt == "truncated":
        path.write_text(text[: len(text) // 2])
    elif corrupt == "empty":
        path.write_bytes(b"")
    elif corrupt == "not_an_object":
        path.write_text(json.dumps(steps))
    elif corrupt == "wrong_format":
        path.write_text(json.dumps({**doc, "format": "something-else"}))
    elif corrupt == "wrong_relation":
        path.write_text(json.dumps({**doc, "neighbouring_relation": "substitution"}))
    elif corrupt == "steps_missing":
        path.write_text(json.dumps({k: v for k, v in doc.items() if k != "steps"}))
    elif corrupt == "bad_step_value":
        path.write_text(json.dumps({**doc, "steps": [{**steps[0], "sampling_rate": 2.0}]}))
    elif corrupt == "extra_step_key":
        path.write_text(json.dumps({**doc, "steps": [{**steps[0], "weight": 1}]}))
    elif corrupt == "duplicate_step":
        path.write_text(json.dumps({**doc, "steps": [steps[0], steps[0]]}))
    before = path.read_bytes()
    with pytest.raises(LedgerCorrupted, match=re.escape(str(path))) as info:
        _ledger(tmp_path)
    assert "refusing to start a fresh ledger" in str(info.value)
    assert path.read_bytes() == before  # the evidence is left in place


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.json"
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=2, steps=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"]
    before = path.read_bytes()

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        ledger.record_step(5, 0, Q, SIGMA)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old ledger is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"]  # the temporary file was removed
    assert len(ledger.steps()) == 6  # the failed step is not counted in memory either
    assert ledger.record_step(5, 0, Q, SIGMA) is True  # and can be recorded once the disk recovers
    assert len(_ledger(tmp_path).steps()) == 7


def test_ledger_file_records_relation_and_sampling(tmp_path: Path) -> None:
    doc = _valid_document(tmp_path)
    assert doc["neighbouring_relation"] == "add_remove"
    assert doc["sampling"] == "poisson"
    assert doc["steps"] == [
        {"round_id": 0, "step": 0, "sampling_rate": Q, "noise_multiplier": SIGMA},
        {"round_id": 0, "step": 1, "sampling_rate": Q, "noise_multiplier": SIGMA},
    ]


def test_report_lets_a_privacy_engineer_recompute(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=2, steps=10)
    ledger.record_step(2, 0, 0.05, 0.9)
    report = ledger.report()
    assert report["epsilon_pld"] == ledger.epsilon("pld")
    assert report["epsilon_rdp"] == ledger.epsilon("rdp")
    assert report["epsilon_rdp"] >= report["epsilon_pld"] > 0
    assert report["delta"] == DELTA
    assert report["num_steps"] == 21
    assert report["neighbouring_relation"] == "add_remove"
    assert report["sampling"] == "poisson"
    assert "example-level" in report["guarantee"]
    inputs = report["accountant_inputs"]
    assert inputs["library"] == "dp_accounting 0.6.0"
    assert inputs["delta"] == DELTA
    events = inputs["events"]
    assert sorted((e["sampling_rate"], e["noise_multiplier"], e["count"]) for e in events) == [
        (Q, SIGMA, 20),
        (0.05, 0.9, 1),
    ]
    composed = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(
                    e["sampling_rate"], dp_accounting.GaussianDpEvent(e["noise_multiplier"])
                ),
                e["count"],
            )
            for e in events
        ]
    )
    pld = pld_privacy_accountant.PLDAccountant(
        value_discretization_interval=inputs["pld"]["value_discretization_interval"]
    )
    pld.compose(composed)
    rdp = rdp_privacy_accountant.RdpAccountant(inputs["rdp"]["orders"])
    rdp.compose(composed)
    assert pld.get_epsilon(inputs["delta"]) == pytest.approx(report["epsilon_pld"], rel=1e-9)
    assert rdp.get_epsilon(inputs["delta"]) == pytest.approx(report["epsilon_rdp"], rel=1e-9)
    json.dumps(report, allow_nan=False)  # serialisable as it stands


def test_empty_report(tmp_path: Path) -> None:
    report = _ledger(tmp_path).report()
    assert (report["epsilon_pld"], report["epsilon_rdp"], report["num_steps"]) == (0.0, 0.0, 0)


def test_bad_delta_is_refused(tmp_path: Path) -> None:
    for delta in (0.0, 1.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="delta"):
            LocalPrivacyLedger(tmp_path / "ledger.json", delta)


def test_budget_refusal_survives_pickling_with_its_numbers() -> None:
    import pickle

    from ondevice.accounting import PrivacyBudgetExceeded

    error = PrivacyBudgetExceeded(1.0, 2.0, 3.0, 2.5, "projected 3.0 > budget 2.5")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, PrivacyBudgetExceeded) and str(copy) == "projected 3.0 > budget 2.5"
    assert (copy.spent, copy.planned, copy.projected, copy.budget) == (1.0, 2.0, 3.0, 2.5)


# ---------------------------------------------------------------- the round's server-fixed local_delta


def test_epsilon_and_budget_at_an_explicit_delta(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=1, steps=10)
    extra = [StepEvent(Q, SIGMA, 10)]
    for name in ("pld", "rdp"):
        at_loose = make_accountant(name).epsilon(ledger.step_events(), 1e-3)
        assert ledger.epsilon(name, delta=1e-3) == at_loose < ledger.epsilon(name)
    loose = ledger.projected_epsilon(extra, delta=1e-3)
    assert loose == make_accountant("pld").epsilon([StepEvent(Q, SIGMA, 20)], 1e-3) < ledger.projected_epsilon(extra)
    budget = (loose + ledger.projected_epsilon(extra)) / 2  # enough at δ = 1e-3, not at the ledger's 1e-5
    assert ledger.check_budget(extra, budget, delta=1e-3) == loose
    with pytest.raises(PrivacyBudgetExceeded, match=re.escape("δ=1e-05")):
        ledger.check_budget(extra, budget)
    with pytest.raises(ValueError, match="delta"):
        ledger.epsilon(delta=0.0)


def _round_dp(local_delta: float, steps: int = 10) -> DpConfig:
    return DpConfig(
        clip_norm=1.0,
        noise_multiplier=SIGMA,
        sampling_rate=Q,
        local_steps=steps,
        learning_rate=0.1,
        local_epsilon_budget=100.0,
        local_delta=local_delta,
    )


def test_the_trainer_budget_check_uses_the_rounds_local_delta(tmp_path: Path) -> None:
    """The device ledger was opened at δ = 1e-5; a round fixing local_delta = 1e-3 must be checked at 1e-3
    (an ε budget that fits only at 1e-3 passes), and one fixing 1e-7 at 1e-7 (it is refused)."""
    ledger = _ledger(tmp_path)
    _fill(ledger, rounds=1, steps=10)
    planned = [StepEvent(Q, SIGMA, 10)]
    at = {d: ledger.projected_epsilon(planned, delta=d) for d in (1e-3, DELTA, 1e-7)}
    assert at[1e-3] < at[DELTA] < at[1e-7]
    between_loose = (at[1e-3] + at[DELTA]) / 2
    check_round_budget(ledger, _round_dp(1e-3), 0, between_loose)  # ignoring local_delta would refuse this
    with pytest.raises(PrivacyBudgetExceeded, match=re.escape("δ=0.001")):
        check_round_budget(ledger, _round_dp(1e-3), 0, at[1e-3] * 0.99)
    between_strict = (at[DELTA] + at[1e-7]) / 2
    with pytest.raises(PrivacyBudgetExceeded, match=re.escape("δ=1e-07")):  # ignoring it would pass this
        check_round_budget(ledger, _round_dp(1e-7), 0, between_strict)
    check_round_budget(ledger, _round_dp(1e-7), 10, between_strict)  # every step already recorded: nothing planned
    assert len(ledger.steps()) == 10
