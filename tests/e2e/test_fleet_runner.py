"""A small fleet in a pool of worker processes against the real aggregator on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ondevice.protocol import DpConfig
from privtune.fleet.conditions import FleetConditions
from privtune.fleet.runner import FleetConfig, run_fleet
from server_aggregator.service import Aggregator
from tests.server_harness import ADMIN_TOKEN, LiveServer, make_config
from tests.tiny_data import tiny_tweeteval

pytestmark = pytest.mark.slow

PRIVTUNE = Path(sys.executable).with_name("privtune")

LOCAL_DP = DpConfig(clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.25, local_steps=2, learning_rate=0.05)


def test_a_fleet_with_dropouts_stragglers_faults_and_attackers(
    tmp_path: Path, bundle_dir: Path, classifier_dir: Path, offensive_dir: Path
) -> None:
    data = tiny_tweeteval(offensive_dir, tmp_path / "data", train=200)
    devices = 6
    config = make_config(
        tmp_path, bundle_dir, classifier_dir, clients_per_round=devices, epsilon_budget=100.0, local_dp=LOCAL_DP,
    )  # fmt: skip
    service = Aggregator(config)
    conditions = FleetConditions(
        availability=0.8, dropout=0.4, straggler=0.3, network_fault=0.4, adversaries=("nan", "replay"), seed=5
    )
    with LiveServer(service) as server:
        fleet = FleetConfig(
            server_url=server.url, admin_token=ADMIN_TOKEN, bundle_dir=bundle_dir, data=str(data),
            state_root=tmp_path / "fleet", devices=devices, rounds=2, workers=2, runtimes=("ort", "executorch"),
            conditions=conditions,
        )  # fmt: skip
        summaries = run_fleet(fleet)
        status = service.status()
    log = [json.loads(line) for line in (tmp_path / "fleet" / "fleet-log.jsonl").read_text().splitlines()]
    assert len(summaries) == 2
    for summary in summaries:
        rid = summary["round_id"]
        rows = [r for r in log if r["round_id"] == rid]
        delivered = sum(r["result"]["outcome"] == "delivered" for r in rows)
        replays = sum(r["fate"]["adversary"] == "replay" and r["phase"] == "round" for r in rows)
        assert summary["merged_updates"] == delivered + replays, (summary, rows)
        dropped = [r for r in rows if r["result"]["outcome"] == "dropped"]
        restarted = [r for r in rows if r["phase"] == "restart"]
        assert len(restarted) == len(dropped) and all(r["result"]["outcome"] == "delivered" for r in restarted)
        late = [r for r in rows if r["phase"] == "late"]
        assert all(r["result"]["detail"] == "round_not_open" for r in late)
    outcomes = [r["result"]["outcome"] for r in log]
    # seed 5 was chosen so that every condition happens at least once (drawn by the pure conditions)
    assert {"delivered", "attacked", "dropped", "straggled", "away", "rejected"} <= set(outcomes), outcomes
    assert any(r["fate"]["network_faults"] and r["result"]["outcome"] == "delivered" for r in log)
    rejected = status["rejected_by_reason"]
    assert rejected.get("non_finite") == 2 and rejected.get("replayed_nonce") == 2
    assert rejected.get("round_not_open", 0) == sum(r["phase"] == "late" for r in log)
    assert (tmp_path / "fleet" / "devices.json").stat().st_mode & 0o777 == 0o600
    service.close()


def test_privtune_fleet_command(tmp_path: Path, bundle_dir: Path, classifier_dir: Path, offensive_dir: Path) -> None:
    data = tiny_tweeteval(offensive_dir, tmp_path / "data", train=120)
    config = make_config(
        tmp_path, bundle_dir, classifier_dir, clients_per_round=3, epsilon_budget=100.0, local_dp=LOCAL_DP
    )
    service = Aggregator(config)
    env = {**os.environ, "PRIVTUNE_ADMIN_TOKEN": ADMIN_TOKEN, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    with LiveServer(service) as server:
        args = [
            "fleet", "--url", server.url, "--bundle", str(bundle_dir), "--state", str(tmp_path / "fleet"),
            "--data", str(data), "--devices", "3", "--rounds", "1", "--workers", "1", "--availability", "1",
            "--dropout", "0", "--straggler", "0", "--network-fault", "0", "--adversaries", "wrong_round",
        ]  # fmt: skip
        result = subprocess.run([str(PRIVTUNE), *args], capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr
        assert "attacked 1" in result.stdout and "delivered 2" in result.stdout, result.stdout
        assert service.status()["rejected_by_reason"] == {"wrong_round": 1}
        bad = subprocess.run(
            [str(PRIVTUNE), *args[:-2], "--adversaries", "ddos"], capture_output=True, text=True, timeout=600, env=env
        )
        assert bad.returncode == 2 and "ddos" in bad.stderr, bad.stderr
    service.close()
