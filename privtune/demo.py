"""``privtune demo``: the whole chain on one machine, every stage cached so a re-run resumes.

    synth (DP synthetic text → base classifier) → export (bundle) → serve (a real ``privtune
    serve`` process, SQLite) → fleet (emulated phones, federated rounds with DP at both levels)
    → evaluate (every published version through the phone's ORT inference program, on the real
    test split) → report (``report.json``, ``report-rounds.png``, a terminal summary)

Layout of ``out/``::

    synth/                 privtune synth output (skipped when --classifier is given)
    bundle/                privtune export output (skipped when --bundle is given)
    server/                state.db, admin-token, published/, server.log
    fleet/                 devices.json, one folder per device (ledger, checkpoints), fleet-log.jsonl
    evaluation/v<N>.json   metrics of each published version
    stages/                keyed stage records (see ``server_aggregator.synthetic.pipeline.Stages``)
    report.json, report-rounds.png

Data: the train split is split once into the central seed set (synth) and the devices' shards
(``--seed-fraction``); the test split is only evaluated on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ondevice.bundle import verify_bundle
from ondevice.data import load_labelled
from ondevice.durable import atomic_write_bytes
from ondevice.protocol import DpConfig
from privtune.class_weights import parse_class_weights
from privtune.demo_simulation import DemoSimulation, run_simulation_stage
from privtune.fleet.conditions import FleetConditions
from privtune.fleet.ledger_check import epsilon_by_round, read_ledger, recompute_epsilon
from privtune.fleet.runner import RUNTIMES, FleetConfig, run_fleet
from server_aggregator.process import spawn_until_ready, stop_process
from server_aggregator.synthetic.pipeline import Stages

Progress = Callable[[str], None]

DEMO_LOCAL_DP = DpConfig(
    clip_norm=1.0,
    noise_multiplier=1.0,
    sampling_rate=0.5,
    local_steps=4,
    learning_rate=0.5,
    local_epsilon_budget=30.0,
    local_delta=1e-5,
)
"""The devices' DP-SGD in the demo (σ, q, steps, lr, C) and each phone's own ε cap."""


@dataclass(frozen=True)
class DemoConfig:
    out_dir: Path
    data: str
    population: int = 50
    """Devices enrolled (each with its own shard); the server samples among those that check in."""
    clients_per_round: int = 20
    """Expected sampled devices per round: the Poisson rate is this / population."""
    rounds: int = 10
    workers: int = 2
    runtimes: tuple[str, ...] = ("ort",)
    synth_epsilon: float = 4.0
    seed_fraction: float = 0.5
    noise_multiplier: float = 0.5
    """z of the central DP-FedAvg noise (std z·S on the sum of clipped updates)."""
    update_clip_norm: float = 1.0
    user_epsilon_budget: float = 50.0
    """The server's hard user-level ε cap (at ``user_delta``); rounds stop when it would be passed."""
    user_delta: float = 1e-6
    local_dp: DpConfig = DEMO_LOCAL_DP
    conditions: FleetConditions = field(default_factory=FleetConditions)
    test_examples: int | None = None
    """Evaluate on the first N test tweets (None: the whole test split)."""
    classifier: Path | None = None
    """Start from this classifier folder instead of running synth."""
    bundle: Path | None = None
    """Use this exported bundle (of ``classifier``) instead of exporting."""
    export_backends: tuple[str, ...] | None = None
    """Backends to export (default: the fleet's runtimes)."""
    simulation: DemoSimulation | None = field(default_factory=DemoSimulation)
    """The simulated-population section (None: skip it)."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("population", "clients_per_round", "rounds", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, found {value!r}")
        if self.clients_per_round > self.population:
            raise ValueError(
                f"clients_per_round={self.clients_per_round} exceeds population={self.population}: "
                "the server cannot sample more devices than are enrolled"
            )
        bad = [r for r in self.runtimes if r not in RUNTIMES]
        if not self.runtimes or bad:
            raise ValueError(f"runtimes must be a non-empty tuple of {RUNTIMES}, found {self.runtimes!r}")
        if (self.bundle is None) != (self.classifier is None):
            raise ValueError("give both --classifier and --bundle (the bundle exported from it), or neither")
        if self.test_examples is not None and self.test_examples < 1:
            raise ValueError(f"test_examples must be None or >= 1, found {self.test_examples!r}")
        if not 0 < self.seed_fraction < 1:
            raise ValueError(f"seed_fraction must be in (0, 1): synth and the devices share the train split, "
                             f"found {self.seed_fraction!r}")  # fmt: skip

    @property
    def sampling_rate(self) -> float:
        return self.clients_per_round / self.population


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()


# ---------------------------------------------------------------- stages 1–2: synth, export


def run_synth_stage(config: DemoConfig, say: Progress) -> Path:
    """The base classifier folder (quick preset: the best private model, with its baselines) — cached by
    ``privtune synth``."""
    if config.classifier is not None:
        return config.classifier
    from server_aggregator.synthetic.config import SynthConfig
    from server_aggregator.synthetic.pipeline import run_synth

    synth = SynthConfig(
        out_dir=config.out_dir / "synth",
        data=config.data,
        epsilons=(config.synth_epsilon,),
        seed_fraction=config.seed_fraction,
        seed=config.seed,
        baselines=True,
    )
    run_synth(synth, progress=say)
    return synth.out_dir / f"eps-{config.synth_epsilon:g}" / "classifier"


def run_export_stage(config: DemoConfig, classifier: Path, stages: Stages, say: Progress) -> Path:
    """The bundle the phones run, exported from ``classifier`` (re-exported only if it changed)."""
    if config.bundle is not None:
        verify_bundle(config.bundle)
        return config.bundle
    from export.bundle import classifier_for_export, export_bundle
    from export.bundle_types import ExportOptions
    from ondevice.bundle import file_sha256

    out = config.out_dir / "bundle"
    backends = config.export_backends or tuple(dict.fromkeys(config.runtimes))
    key = json.dumps(
        [sorted((p.name, file_sha256(p)) for p in classifier.iterdir() if p.is_file()), list(backends)], default=str
    )

    def body() -> dict[str, Any]:
        clf, _trained = classifier_for_export(classifier)
        report = export_bundle(clf, out, ExportOptions(backends=backends), force=True, progress=say)
        return {"seconds": report.stage_seconds, "manifest_hash": report.manifest.manifest_hash()}

    stages.run("export", key, body)
    verify_bundle(out)
    return out


# ---------------------------------------------------------------- stage 3: a real server process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerHandle:
    url: str
    admin_token: str
    db_path: Path
    publish_dir: Path
    process: subprocess.Popen[bytes]


def serve_command(config: DemoConfig, classifier: Path, bundle: Path, port: int) -> list[str]:
    """The ``privtune serve`` command line of the demo's aggregator."""
    server_dir = config.out_dir / "server"
    dp = config.local_dp
    return [
        sys.executable, "-m", "privtune.cli", "serve",
        "--db", f"sqlite:///{server_dir / 'state.db'}",
        "--adapter", str(classifier), "--bundle", str(bundle), "--publish-dir", str(server_dir / "published"),
        "--admin-token-file", str(server_dir / "admin-token"),
        "--epsilon-budget", repr(config.user_epsilon_budget), "--delta", repr(config.user_delta),
        "--clients-per-round", str(config.clients_per_round),
        "--noise-multiplier", repr(config.noise_multiplier), "--update-clip-norm", repr(config.update_clip_norm),
        "--local-clip-norm", repr(dp.clip_norm), "--local-noise-multiplier", repr(dp.noise_multiplier),
        "--local-sampling-rate", repr(dp.sampling_rate), "--local-steps", str(dp.local_steps),
        "--local-learning-rate", repr(dp.learning_rate), "--local-epsilon-budget", repr(dp.local_epsilon_budget),
        "--round-duration", "3600", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def start_server(config: DemoConfig, classifier: Path, bundle: Path, port: int | None = None) -> ServerHandle:
    """Start ``privtune serve`` as a child process (log: ``server/server.log``) and wait until it is healthy."""
    server_dir = config.out_dir / "server"
    server_dir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    process = spawn_until_ready(
        serve_command(config, classifier, bundle, port), log=server_dir / "server.log", url=url, cwd=config.out_dir
    )
    token = (server_dir / "admin-token").read_text().strip()
    return ServerHandle(url, token, server_dir / "state.db", server_dir / "published", process)


def stop_server(process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """SIGTERM (a clean shutdown) or SIGKILL (a crash), then reap the process."""
    stop_process(process, kill=kill)


@contextmanager
def running_server(config: DemoConfig, classifier: Path, bundle: Path, say: Progress) -> Iterator[ServerHandle]:
    """A ``privtune serve`` process for the ``with`` block, stopped cleanly at its end."""
    server = start_server(config, classifier, bundle)
    say(f"aggregator up at {server.url} (log: {config.out_dir / 'server' / 'server.log'})")
    try:
        yield server
    finally:
        stop_server(server.process)


def server_status(server: ServerHandle) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/v1/status", headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=60
    )
    response.raise_for_status()
    return dict(response.json())


# ---------------------------------------------------------------- stages 4–5: fleet, evaluation


def _close_round(server: ServerHandle, round_id: int) -> None:
    response = httpx.post(
        f"{server.url}/v1/admin/rounds/{round_id}/close",
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=600,
    )
    response.raise_for_status()


def run_fleet_stage(config: DemoConfig, server: ServerHandle, bundle: Path, say: Progress) -> list[dict[str, Any]]:
    """Run the rounds the server has not closed yet (a re-run resumes where the last one stopped)."""
    rounds = server_status(server)["rounds"]
    for unfinished in [r["round_id"] for r in rounds if r["state"] == "open"]:
        say(f"closing round {unfinished}, left open by an interrupted run")
        _close_round(server, unfinished)
    closed = sum(r["state"] != "open" for r in rounds)
    remaining = config.rounds - closed
    if remaining <= 0:
        say(f"fleet: all {config.rounds} rounds already done")
        return []
    fleet = FleetConfig(
        server_url=server.url,
        admin_token=server.admin_token,
        bundle_dir=bundle,
        data=config.data,
        state_root=config.out_dir / "fleet",
        devices=config.population,
        rounds=remaining,
        workers=config.workers,
        runtimes=config.runtimes,
        conditions=config.conditions,
        seed_fraction=config.seed_fraction,
        shard_seed=config.seed,
    )
    say(f"fleet: {config.population} devices, {remaining} rounds, {config.workers} worker processes")
    return run_fleet(fleet, progress=say)


def evaluate_versions(
    config: DemoConfig, server: ServerHandle, classifier: Path, bundle: Path, say: Progress
) -> list[dict[str, Any]]:
    """Accuracy and macro-F1 of every published version on the real test split, via the phone's ORT program."""
    from privtune.fleet.evaluate import device_classifier_with_adapter, evaluate_device_classifier
    from server_aggregator.publish import VERSION_FILE, Publisher

    test = load_labelled(config.data, "test", empty="skip")
    if config.test_examples is not None:
        test = test.subset(range(min(config.test_examples, len(test))))
    publisher = Publisher(classifier, server.publish_dir, verify_bundle(bundle))
    versions = sorted(v["version"] for v in server_status(server)["published_versions"])
    rows = []
    for version in versions:
        path = config.out_dir / "evaluation" / f"v{version}.json"
        folder = publisher.version_dir(version)
        info = json.loads((folder / VERSION_FILE).read_text()) if folder.is_dir() else {"version": version}
        sha = str(info.get("params_sha256", "base"))
        if path.is_file() and json.loads(path.read_text()).get("params_sha256") == sha:
            rows.append(json.loads(path.read_text()))
            continue
        params = publisher.read_params(folder) if folder.is_dir() else publisher.base_params()
        say(f"evaluating version {version} on {len(test)} test tweets (ORT inference program)")
        clf = device_classifier_with_adapter(bundle, params, config.out_dir / "evaluation" / f"v{version}")
        row = {"version": version, "params_sha256": sha, **evaluate_device_classifier(clf, test)}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, _json_bytes(row))
        rows.append(row)
    return rows


# ---------------------------------------------------------------- stage 6: report


def device_privacy(fleet_dir: Path, delta: float) -> dict[str, Any]:
    """Each device's example-level ε from its own ledger (PLD), with min/median/max."""
    from ondevice.accounting import LocalPrivacyLedger
    from ondevice.trainer import LEDGER_FILE

    per_device: dict[str, float] = {}
    for ledger_path in sorted(fleet_dir.glob(f"*/{LEDGER_FILE}")):
        ledger = LocalPrivacyLedger(ledger_path, delta=delta)
        if ledger.steps():
            per_device[ledger_path.parent.name] = ledger.epsilon("pld")
    values = np.asarray(list(per_device.values()) or [0.0])
    return {
        "delta": delta,
        "devices_that_trained": len(per_device),
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "per_device": per_device,
    }


def fleet_log_totals(fleet_dir: Path) -> dict[str, Any]:
    """Bytes uploaded per device and outcome counts, summed over every logged device-round."""
    uploaded: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    path = fleet_dir / "fleet-log.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        entry = json.loads(line)
        result = entry["result"]
        key = f"{entry['phase']}:{result['outcome']}"
        outcomes[key] = outcomes.get(key, 0) + 1
        if result["upload_bytes"]:
            uploaded[result["device_id"]] = uploaded.get(result["device_id"], 0) + int(result["upload_bytes"])
    values = np.asarray(list(uploaded.values()) or [0])
    return {
        "outcomes": outcomes,
        "upload_bytes": {
            "devices_that_uploaded": len(uploaded),
            "total": int(values.sum()),
            "per_device_mean": float(values.mean()),
            "per_device_max": int(values.max()),
            "per_device": uploaded,
        },
    }


def build_report(
    config: DemoConfig, status: dict[str, Any], evaluations: list[dict[str, Any]], synth_card: dict[str, Any] | None,
    wall: dict[str, float], db_path: Path, synth_evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The demo's report: accuracy before/after, ε (server + independent recomputation), devices, bytes, time."""
    ledger = read_ledger(db_path)
    recomputed = recompute_epsilon(ledger, config.user_delta)
    server_privacy = status["privacy"]
    eps_curve = [0.0, *epsilon_by_round(ledger, config.user_delta)]
    round_of_version = {v["version"]: v["round_id"] for v in status["published_versions"]}
    rows = []
    for row in evaluations:
        done = sum(1 for r in ledger if round_of_version.get(row["version"]) is not None
                   and r.round_id <= round_of_version[row["version"]])  # fmt: skip
        rows.append({**{k: v for k, v in row.items() if k != "params_sha256"}, "user_epsilon": eps_curve[done]})
    return {
        "settings": {
            "population": config.population,
            "clients_per_round": config.clients_per_round,
            "sampling_rate": config.sampling_rate,
            "rounds": config.rounds,
            "central": {"noise_multiplier": config.noise_multiplier, "update_clip_norm": config.update_clip_norm},
            "local_dp": config.local_dp.to_dict(),
            "conditions": asdict(config.conditions),
            "runtimes": list(config.runtimes),
            "workers": config.workers,
            "seed_fraction": config.seed_fraction,
            "data": config.data,
        },
        "synthetic_stage": None
        if synth_card is None
        else {
            "epsilon": synth_card["privacy"]["epsilon"],
            "delta": synth_card["privacy"]["delta"],
            "metrics_pytorch": synth_card["metrics"]["real_test"],
        },
        "before": rows[0] if rows else None,
        "after": rows[-1] if rows else None,
        "comparison": comparison_rows(synth_evaluation, rows),
        "by_version": rows,
        "user_level_privacy": {
            "server": server_privacy,
            "recomputed_from_ledger": recomputed,
            "recomputed_unamplified": recompute_epsilon(ledger, config.user_delta, amplified=False),
            "note": "user-level (device-level) DP-FedAvg; 'amplified' assumes the server's Poisson sampling "
            "among the devices that checked in is the only selection",
        },
        "device_level_privacy": device_privacy(config.out_dir / "fleet", config.local_dp.local_delta),
        "rejected_by_reason": status["rejected_by_reason"],
        "accepted_total": status["accepted_total"],
        "rounds": [
            {k: r[k] for k in ("round_id", "state", "population", "sampling_rate", "selected", "accepted")}
            for r in status["rounds"]
        ],
        **fleet_log_totals(config.out_dir / "fleet"),
        "wall_seconds": wall,
    }


def comparison_rows(synth_evaluation: dict[str, Any] | None, versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The floor and every baseline of the synth stage (PyTorch, real test split) beside v0 and the final
    version (phone ORT program), so nobody reads a number without its floor."""
    rows: list[dict[str, Any]] = []
    if synth_evaluation is not None:
        for row in synth_evaluation["common_rows"]:
            eps = float("inf") if row["model"] == "non_private" else 0.0
            rows.append(
                {
                    "model": row["label"],
                    "accuracy": row["test"]["accuracy"],
                    "macro_f1": row["test"]["macro_f1"],
                    "epsilon": eps,
                    "privacy_unit": "seed example",
                }
            )
        for result in synth_evaluation["epsilons"]:
            for row in result["rows"]:
                shipped = " = v0" if row["model"] == result["shipped"] else ""
                rows.append(
                    {
                        "model": row["label"] + shipped,
                        "accuracy": row["test"]["accuracy"],
                        "macro_f1": row["test"]["macro_f1"],
                        "epsilon": row["epsilon_pld"],
                        "privacy_unit": "seed example",
                    }
                )
    for label, row in (
        ("v0 on the phone (ORT)", versions[0] if versions else None),
        ("final version on the phone (ORT)", versions[-1] if len(versions) > 1 else None),
    ):
        if row is not None:
            rows.append(
                {
                    "model": f"{label}: v{row['version']}",
                    "accuracy": row["accuracy"],
                    "macro_f1": row["macro_f1"],
                    "epsilon": row["user_epsilon"],
                    "privacy_unit": "user (federated rounds; v0's seed-set ε is separate)",
                }
            )
    return rows


def write_round_plots(report: dict[str, Any], path: Path) -> None:
    """macro-F1 and accuracy vs version (left) and user-level ε vs round (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["by_version"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    versions = [r["version"] for r in rows]
    left.plot(versions, [r["macro_f1"] for r in rows], marker="o", label="macro-F1")
    left.plot(versions, [r["accuracy"] for r in rows], marker="s", label="accuracy")
    left.set_xlabel("global model version (0 = the private base model)")
    floor = next((r for r in report["comparison"] if r["model"].startswith("always the majority")), None)
    if floor is not None:
        left.axhline(floor["macro_f1"], color="red", linestyle="--", label="majority floor (macro-F1)")
    left.set_ylabel("real test split")
    left.set_title("phone ORT inference program")
    left.legend()
    right.plot(versions, [r["user_epsilon"] for r in rows], marker="o", color="tab:red")
    right.set_xlabel("global model version")
    right.set_ylabel(f"user-level ε (PLD, δ={report['user_level_privacy']['server']['delta']:g})")
    right.set_title("privacy spent")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(config: DemoConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Every stage (cached); writes and returns the report."""
    say = progress or (lambda message: None)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stages = Stages(config.out_dir, say)
    wall: dict[str, float] = {}

    def timed(name: str, body: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = body()
        wall[name] = round(time.perf_counter() - start, 1)
        return result

    classifier = timed("synth", lambda: run_synth_stage(config, say))
    if config.simulation is not None:  # refuse unusable class weights now, not after the fleet
        parse_class_weights(config.simulation.class_weights, classifier)
    bundle = timed("export", lambda: run_export_stage(config, classifier, stages, say))
    card_path = classifier / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else None
    start = time.perf_counter()
    with running_server(config, classifier, bundle, say) as server:
        wall["serve_start"] = round(time.perf_counter() - start, 1)
        summaries = timed("fleet", lambda: run_fleet_stage(config, server, bundle, say))
        evaluations = timed("evaluate", lambda: evaluate_versions(config, server, classifier, bundle, say))
        status = server_status(server)
    evaluation_path = config.out_dir / "synth" / "evaluation.json"
    synth_evaluation = (
        json.loads(evaluation_path.read_text()) if config.classifier is None and evaluation_path.is_file() else None
    )
    report = build_report(config, status, evaluations, card, wall, server.db_path, synth_evaluation)
    report["fleet_rounds_this_run"] = summaries
    if config.simulation is not None:
        settings = config.simulation
        report["simulated_population"] = timed(
            "simulate",
            lambda: run_simulation_stage(
                settings, classifier, config.data, config.out_dir / "simulation", stages,
                seed_fraction=config.seed_fraction, test_examples=config.test_examples,
            ),
        )  # fmt: skip
        report["wall_seconds"] = wall
    atomic_write_bytes(config.out_dir / "report.json", _json_bytes(report))
    write_round_plots(report, config.out_dir / "report-rounds.png")
    os.chmod(config.out_dir / "report.json", 0o644)
    return report
