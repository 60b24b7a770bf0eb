"""What happens to each emulated phone in each round: availability, dropouts, stragglers, a flaky
network, and the adversarial devices. Pure and seeded: the same (seed, device, round) always
gives the same fate, independent of every other device and of the order devices run in.

Availability is decided on the device before it checks in ("charging and idle"); the server's
Poisson selection then applies to the devices that do check in. A device that stays away in a
round cannot be included in it, so the per-round inclusion probability the server's accountant
uses (q) stays an upper bound for every device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ADVERSARY_KINDS = ("nan", "wrong_shape", "over_norm", "replay", "forged_signature", "wrong_round")
"""What an adversarial device sends instead of an honest update; the server must reject each."""

NETWORK_FAULTS = ("timeout", "reset")


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], found {value!r}")
    return float(value)


@dataclass(frozen=True)
class FleetConditions:
    """Per-round odds for every honest device, and the adversaries (device i < len(adversaries) is one)."""

    availability: float = 0.6
    """P(the device is charging, idle and online, so it checks in this round)."""
    dropout: float = 0.1
    """P(a device that trains stops mid-round: killed after a random local step, resumes next time)."""
    straggler: float = 0.1
    """P(a device that trains is so slow it misses the round's deadline)."""
    network_fault: float = 0.1
    """P(one upload attempt fails with a timeout or a connection reset; the client retries)."""
    max_network_faults: int = 3
    """Upper bound on injected consecutive failures of one upload (the next attempt goes through)."""
    adversaries: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("availability", "dropout", "straggler", "network_fault"):
            _probability(name, getattr(self, name))
        if isinstance(self.max_network_faults, bool) or not isinstance(self.max_network_faults, int):
            raise ValueError(f"max_network_faults must be an int >= 0, found {self.max_network_faults!r}")
        if self.max_network_faults < 0:
            raise ValueError(f"max_network_faults must be an int >= 0, found {self.max_network_faults!r}")
        unknown = [kind for kind in self.adversaries if kind not in ADVERSARY_KINDS]
        if not isinstance(self.adversaries, tuple) or unknown:
            raise ValueError(
                f"adversaries must be a tuple of {ADVERSARY_KINDS}, found unknown {unknown or self.adversaries!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, found {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceRound:
    """One device's fate in one round (logged by the fleet, replayable from the seed)."""

    device_index: int
    round_id: int
    adversary: str | None
    available: bool
    drops_after_step: int | None
    """Killed after this many local steps (0 = before the first); None = trains to the end."""
    straggles: bool
    network_faults: tuple[str, ...]
    """The failures its upload attempts meet, in order, before one goes through."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_round(conditions: FleetConditions, device_index: int, round_id: int, local_steps: int) -> DeviceRound:
    """The fate of device ``device_index`` in round ``round_id`` (``local_steps`` steps per round)."""
    if isinstance(device_index, bool) or not isinstance(device_index, int) or device_index < 0:
        raise ValueError(f"device_index must be an int >= 0, found {device_index!r}")
    if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 0:
        raise ValueError(f"round_id must be an int >= 0, found {round_id!r}")
    if isinstance(local_steps, bool) or not isinstance(local_steps, int) or local_steps < 1:
        raise ValueError(f"local_steps must be an int >= 1, found {local_steps!r}")
    adversary = conditions.adversaries[device_index] if device_index < len(conditions.adversaries) else None
    # One independent stream per (seed, device, round): fates do not depend on run order or fleet size.
    rng = np.random.default_rng([conditions.seed, device_index, round_id])
    u = rng.random(4)  # availability, dropout, straggler, dropout step
    available = adversary is not None or bool(u[0] < conditions.availability)  # attackers always show up
    honest_trainer = available and adversary is None
    drops = honest_trainer and bool(u[1] < conditions.dropout)
    drops_after = int(u[3] * local_steps) if drops else None  # uniform in 0..local_steps-1
    straggles = honest_trainer and not drops and bool(u[2] < conditions.straggler)
    faults: list[str] = []
    while len(faults) < conditions.max_network_faults and rng.random() < conditions.network_fault:
        faults.append(NETWORK_FAULTS[int(rng.integers(len(NETWORK_FAULTS)))])
    return DeviceRound(device_index, round_id, adversary, available, drops_after, straggles, tuple(faults))
