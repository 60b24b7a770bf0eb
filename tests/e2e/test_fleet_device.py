"""Emulated phones playing their fates against the real aggregator on loopback (ORT runtime)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ondevice.accounting import LocalPrivacyLedger
from ondevice.data import load_tweeteval
from ondevice.protocol import DpConfig
from ondevice.trainer import LEDGER_FILE
from privtune.fleet.conditions import DeviceRound
from privtune.fleet.device import EmulatedDevice, deliver_late, resumed, run_device_round
from server_aggregator.service import Aggregator
from tests.server_harness import LiveServer, admin, enroll, make_config

pytestmark = pytest.mark.slow

LOCAL_DP = DpConfig(clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.25, local_steps=2, learning_rate=0.05)


def fate(index: int, **changes: object) -> DeviceRound:
    base = {
        "device_index": index, "round_id": 0, "adversary": None, "available": True, "drops_after_step": None,
        "straggles": False, "network_faults": (),
    }  # fmt: skip
    base.update(changes)
    return DeviceRound(**base)  # type: ignore[arg-type]


def test_fates_play_out_against_the_real_server(
    tmp_path: Path, bundle_dir: Path, classifier_dir: Path, offensive_dir: Path
) -> None:
    tweets = load_tweeteval(offensive_dir, "val")
    shards = [tweets.subset(range(16 * i, 16 * (i + 1))) for i in range(5)]
    names = ["flaky", "dropper", "straggler", "sleeper", "attacker"]
    config = make_config(
        tmp_path, bundle_dir, classifier_dir, clients_per_round=len(names), epsilon_budget=100.0, local_dp=LOCAL_DP,
    )  # fmt: skip
    service = Aggregator(config)
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        devices = {}
        for name in names:
            device_id, secret = enroll(http, f"phone-{name}")
            devices[name] = EmulatedDevice(device_id, secret, "ort", tmp_path / name)
        admin(http, "POST", "/v1/admin/rounds").raise_for_status()
        fates = {
            "flaky": fate(0, network_faults=("timeout", "reset")),
            "dropper": fate(1, drops_after_step=1),
            "straggler": fate(2, straggles=True),
            "sleeper": fate(3, available=False),
            "attacker": fate(4, adversary="nan"),
        }
        no_wait = {"sleep": lambda s: None}
        results = {
            n: run_device_round(devices[n], shards[i], fates[n], server.url, bundle_dir, **no_wait)
            for i, n in enumerate(names)
        }
        assert {n: r.outcome for n, r in results.items()} == {
            "flaky": "delivered", "dropper": "dropped", "straggler": "straggled", "sleeper": "away",
            "attacker": "attacked",
        }  # fmt: skip
        assert results["dropper"].steps_done == 1 and results["attacker"].attack_statuses == (400,)
        assert results["flaky"].upload_bytes > 100_000 and results["flaky"].local_epsilon is not None
        # The dropped phone comes back later in the same round: it resumes at step 1 and uploads once.
        again = run_device_round(devices["dropper"], shards[1], resumed(fates["dropper"]), server.url, bundle_dir)
        assert again.outcome == "delivered" and again.steps_done == 2
        ledger = LocalPrivacyLedger(devices["dropper"].state_dir / LEDGER_FILE, delta=1e-5)
        assert [(s.round_id, s.step) for s in ledger.steps()] == [(0, 0), (0, 1)]  # each step counted once
        summary = admin(http, "POST", "/v1/admin/rounds/0/close").json()
        assert summary["updates"] == 2  # flaky + dropper; never the straggler or the attacker
        late = deliver_late(devices["straggler"], server.url, 0)
        assert late.outcome == "rejected" and late.detail == "round_not_open", late
        status = admin(http, "GET", "/v1/status").json()
        assert status["accepted_total"] == 2
        assert status["rejected_by_reason"]["non_finite"] == 1
        assert sum(status["rejected_by_reason"].values()) == 2, status["rejected_by_reason"]
    service.close()


def test_a_device_passed_over_by_sampling_is_not_selected_and_without_a_round_it_is_no_round(
    tmp_path: Path, bundle_dir: Path, classifier_dir: Path, offensive_dir: Path
) -> None:
    shard = load_tweeteval(offensive_dir, "val").subset(range(8))
    config = make_config(tmp_path, bundle_dir, classifier_dir, clients_per_round=1, epsilon_budget=100.0)
    service = Aggregator(config)
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        phones = [EmulatedDevice(*enroll(http, f"phone-{i}"), "ort", tmp_path / f"p{i}") for i in range(30)]
        before = run_device_round(phones[0], shard, fate(0), server.url, bundle_dir)
        assert (before.outcome, before.round_id) == ("no_round", None)
        admin(http, "POST", "/v1/admin/rounds").raise_for_status()  # q = 1/30
        passed_over = [
            r
            for r in (run_device_round(p, shard, fate(i), server.url, bundle_dir) for i, p in enumerate(phones[:12]))
            if r.outcome == "not_selected"
        ]
        assert passed_over, "with q = 1/30 at least one of 12 phones is passed over (P(fail) < 1e-15)"
        assert all(r.round_id == 0 and r.steps_done == 0 for r in passed_over)
    service.close()
