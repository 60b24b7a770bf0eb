"""``privtune fleet``: N emulated phones against a real aggregator, in a bounded pool of worker processes.

Per round: the operator API opens a round; every device's fate is drawn (``conditions``); the
devices that show up run in the pool (one thread each, one device-round per task, each with its
own identity, shard, ledger and checkpoints under ``state_root/<device>``); devices that died
mid-round are started once more in the same round (they resume from their checkpoint and upload
once); the round is closed; stragglers then try to upload and must be refused. Every device-round
is logged to ``state_root/fleet-log.jsonl``.

Enrolment happens once: identities and secrets are kept in ``state_root/devices.json`` (mode
0600), so a re-run reuses them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ondevice.data import LabelledTexts, load_labelled
from ondevice.durable import atomic_write_bytes
from ondevice.partition import PartitionConfig
from privtune.fleet.conditions import FleetConditions, device_round
from privtune.fleet.device import DeviceRoundResult, EmulatedDevice, deliver_late, resumed, run_device_round
from privtune.fleet.shards import device_shard_indices

RUNTIMES = ("ort", "executorch")


@dataclass(frozen=True)
class FleetConfig:
    server_url: str
    admin_token: str
    bundle_dir: Path
    data: str
    state_root: Path
    devices: int = 50
    rounds: int = 10
    workers: int = 2
    runtimes: tuple[str, ...] = ("ort",)
    """Device i runs ``runtimes[i % len(runtimes)]``."""
    conditions: FleetConditions = field(default_factory=FleetConditions)
    label_alpha: float = 0.5
    size_sigma: float = 1.0
    seed_fraction: float = 0.5
    split_seed: int = 0
    shard_seed: int = 0
    memory_cap_mb: int | None = None
    """Address-space limit of each worker process (None: no limit)."""
    noise_seed: int | None = None
    """Seed every device's local noise and sampling (tests only: NOT private). None: OS CSPRNG."""

    def __post_init__(self) -> None:
        for name in ("devices", "rounds", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, found {value!r}")
        bad = [r for r in self.runtimes if r not in RUNTIMES]
        if not self.runtimes or bad:
            raise ValueError(f"runtimes must be a non-empty tuple of {RUNTIMES}, found {self.runtimes!r}")
        if len(self.conditions.adversaries) > self.devices:
            raise ValueError(f"{len(self.conditions.adversaries)} adversaries do not fit in {self.devices} devices")
        if self.memory_cap_mb is not None and self.memory_cap_mb < 256:
            raise ValueError(f"memory_cap_mb must be None or >= 256, found {self.memory_cap_mb!r}")


def _admin(http: httpx.Client, token: str, method: str, path: str, payload: Any = None) -> Any:
    response = http.request(method, path, json=payload, headers={"Authorization": f"Bearer {token}"})
    if response.status_code >= 400:
        raise RuntimeError(f"aggregator refused {method} {path}: HTTP {response.status_code} {response.text}")
    return response.json()


def enroll_fleet(config: FleetConfig, http: httpx.Client) -> list[EmulatedDevice]:
    """The fleet's identities: read from ``devices.json``, or enrolled now and written there (0600)."""
    path = config.state_root / "devices.json"
    records: list[dict[str, str]] = json.loads(path.read_text()) if path.is_file() else []
    while len(records) < config.devices:
        device_id = f"emulated-{len(records):05d}"
        answer = _admin(http, config.admin_token, "POST", "/v1/admin/devices", {"device_id": device_id})
        records.append({"device_id": answer["device_id"], "secret": answer["secret"]})
        config.state_root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(records, indent=1).encode())
        os.chmod(path, 0o600)
    return [
        EmulatedDevice(
            r["device_id"],
            bytes.fromhex(r["secret"]),
            config.runtimes[i % len(config.runtimes)],
            config.state_root / r["device_id"],
            noise_seed=config.noise_seed,
        )
        for i, r in enumerate(records[: config.devices])
    ]


# ---------------------------------------------------------------- worker side (one process each)

_WORKER: dict[str, Any] = {}


def _init_worker(data: str, shards: Sequence[Sequence[int]], memory_cap_mb: int | None) -> None:
    if memory_cap_mb is not None:
        cap = memory_cap_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    train = load_labelled(data, "train", empty="skip")
    _WORKER["shards"] = [train.subset(list(s), source=f"{train.source}[device {k}]") for k, s in enumerate(shards)]


def _play(
    device: EmulatedDevice, index: int, fate: Any, server_url: str, bundle_dir: Path, again: bool
) -> DeviceRoundResult:
    shard: LabelledTexts = _WORKER["shards"][index]
    try:
        return run_device_round(device, shard, resumed(fate) if again else fate, server_url, bundle_dir)
    except Exception as exc:  # one broken phone must not stop the fleet; it is logged and counted as "error"
        return DeviceRoundResult(device.device_id, fate.round_id, "error", detail=f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- coordinator


def run_fleet(config: FleetConfig, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run ``config.rounds`` rounds; returns one summary per round (also appended to the log)."""
    say = progress or (lambda message: None)
    train = load_labelled(config.data, "train", empty="skip")
    shards = device_shard_indices(
        train.labels,
        PartitionConfig(config.devices, label_alpha=config.label_alpha, size_sigma=config.size_sigma),
        seed_fraction=config.seed_fraction,
        split_seed=config.split_seed,
        seed=config.shard_seed,
    )
    log_path = config.state_root / "fleet-log.jsonl"
    summaries: list[dict[str, Any]] = []
    with (
        httpx.Client(base_url=config.server_url, timeout=120) as http,
        ProcessPoolExecutor(
            max_workers=config.workers,
            mp_context=multiprocessing.get_context("spawn"),  # no forked copies of the caller's threads
            initializer=_init_worker,
            initargs=(config.data, [s.tolist() for s in shards], config.memory_cap_mb),
        ) as pool,
    ):
        devices = enroll_fleet(config, http)
        for _ in range(config.rounds):
            opened = _admin(http, config.admin_token, "POST", "/v1/admin/rounds")
            round_id = int(opened["round_id"])
            local_steps = int(opened["dp"]["local_steps"])
            fates = [device_round(config.conditions, i, round_id, local_steps) for i in range(config.devices)]
            say(f"round {round_id}: {sum(f.available for f in fates)} of {config.devices} devices check in")
            jobs = [
                (i, pool.submit(_play, devices[i], i, fates[i], config.server_url, config.bundle_dir, False))
                for i in range(config.devices)
            ]
            results = {i: job.result() for i, job in jobs}
            dropped = [i for i, r in results.items() if r.outcome == "dropped"]
            restarts = {
                i: pool.submit(_play, devices[i], i, fates[i], config.server_url, config.bundle_dir, True)
                for i in dropped
            }
            restarted = {i: job.result() for i, job in restarts.items()}
            closed = _admin(http, config.admin_token, "POST", f"/v1/admin/rounds/{round_id}/close")
            late = {
                i: deliver_late(devices[i], config.server_url, round_id)
                for i, r in results.items()
                if r.outcome == "straggled"
            }
            lines = [
                json.dumps({"round_id": round_id, "fate": asdict(fates[i]), "result": r.to_dict(), "phase": phase})
                for phase, group in (("round", results), ("restart", restarted), ("late", late))
                for i, r in group.items()
            ]
            with log_path.open("a", encoding="utf-8") as log:
                log.write("\n".join(lines) + "\n")
            counts: dict[str, int] = {}
            for r in results.values():
                counts[r.outcome] = counts.get(r.outcome, 0) + 1
            summary = {
                "round_id": round_id,
                "outcomes": counts,
                "restarted_delivered": sum(r.outcome == "delivered" for r in restarted.values()),
                "late_rejected": sum(r.outcome == "rejected" for r in late.values()),
                "merged_updates": closed.get("updates"),
                "version": closed.get("version"),
                "upload_bytes": [r.upload_bytes for r in [*results.values(), *restarted.values()] if r.upload_bytes],
            }
            summaries.append(summary)
            for i, r in [*results.items(), *restarted.items()]:
                if r.outcome == "error":
                    say(f"round {round_id}: device {devices[i].device_id} FAILED: {r.detail}")
            say(f"round {round_id}: {counts}, merged {summary['merged_updates']} → version {summary['version']}")
    return summaries
