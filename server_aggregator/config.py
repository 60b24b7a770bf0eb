"""The aggregator's configuration: what the operator sets once, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ondevice.protocol import MAX_UPDATE_BYTES, SUPPORTED_TENSOR_DTYPES, DpConfig
from server_aggregator.aggregation import AdaptiveClipping, delta_noise_multiplier

BUDGET_MODES = ("amplified", "unamplified")

DEFAULT_LOCAL_DP = DpConfig(
    clip_norm=1.0,
    noise_multiplier=1.0,
    sampling_rate=0.1,
    local_steps=10,
    learning_rate=0.05,
    optimizer="sgd",
    local_epsilon_budget=8.0,
    local_delta=1e-5,
)
"""Local DP-SGD parameters sent to devices unless the operator overrides them."""


TARGET_UPDATES_UNDER_DP = (
    "target_updates (closing a round at K updates) is refused with noise on: the cohort is then not "
    "Poisson-sampled and replace-one sensitivity is 2S, so the ledger's PoissonSampled(q, Gaussian(z)) "
    "would overstate the privacy; close rounds by deadline instead (or run without noise, z = 0)"
)


def _positive(name: str, value: float, *, allow_inf: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, found {value!r}")
    if not allow_inf and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, found {value!r}")


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``privtune serve`` needs.

    User-level DP-FedAvg: each round Poisson-samples devices at rate q = clients_per_round / N
    (N = enrolled, non-revoked devices when the round opens), every update is clipped to
    ``update_clip_norm`` S, the sum gets N(0, (z·S)²) noise with z = ``noise_multiplier`` and is
    divided by the expected count q·N. The budget (ε at ``delta``) is enforced on the
    ``budget_mode`` estimate: "amplified" (Poisson sampling as the accountant models it) or
    "unamplified" (every round a plain Gaussian release; use it when check-in is far from uniform).

    ``adaptive_clipping`` (optional, Andrew et al. 2021): S then follows a target quantile of the
    update norms, starting at ``adaptive_clipping.initial_clip_norm``; the noised unclipped count
    is a second Gaussian release, paid for inside the same z (the update sum gets z_Δ > z), so the
    ledger still records one Gaussian(z) per round.

    ``device_key`` (32 bytes, kept outside the database) seals the devices' signing secrets at
    rest. ``target_updates`` (close a round at K updates) is refused with noise on: stopping at K
    is not Poisson sampling and doubles the replace-one sensitivity, so the ledger's
    PoissonSampled(q, Gaussian(z)) entry would overstate the privacy. ``update_retention_s``: an
    update's body is emptied this long after its round is published (its digest stays, so a retry
    still gets its receipt).
    """

    db_url: str
    adapter_dir: Path
    bundle_dir: Path
    publish_dir: Path
    admin_token: str
    device_key: bytes
    epsilon_budget: float = 8.0
    delta: float = 1e-6
    clients_per_round: int = 10
    noise_multiplier: float = 1.0
    update_clip_norm: float = 1.0
    update_dtype: str = "float32"
    server_learning_rate: float = 1.0
    budget_mode: str = "amplified"
    round_duration_s: float = 600.0
    target_updates: int | None = None
    local_dp: DpConfig = field(default_factory=lambda: DEFAULT_LOCAL_DP)
    max_body_bytes: int = MAX_UPDATE_BYTES
    max_skew_s: float = 300.0
    norm_slack: float = 1e-4
    close_poll_s: float = 1.0
    adaptive_clipping: AdaptiveClipping | None = None
    update_retention_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.db_url, str) or "://" not in self.db_url:
            raise ValueError(f"db_url must be a SQLAlchemy URL like sqlite:///state.db, found {self.db_url!r}")
        for name in ("adapter_dir", "bundle_dir", "publish_dir"):
            if not isinstance(getattr(self, name), Path):
                raise ValueError(f"{name} must be a pathlib.Path, found {getattr(self, name)!r}")
        if not isinstance(self.admin_token, str) or len(self.admin_token) < 16:
            raise ValueError("admin_token must be a string of at least 16 characters (use `secrets.token_hex(16)`)")
        if not isinstance(self.device_key, bytes) or len(self.device_key) != 32:
            raise ValueError(
                "device_key must be 32 bytes (`secrets.token_bytes(32)`; privtune serve keeps it in a file)"
            )
        _positive("epsilon_budget", self.epsilon_budget)
        if not (isinstance(self.delta, float) and 0 < self.delta <= 0.1):
            raise ValueError(f"delta must be a float in (0, 0.1], found {self.delta!r}")
        if isinstance(self.clients_per_round, bool) or not isinstance(self.clients_per_round, int):
            raise ValueError(f"clients_per_round must be an int >= 1, found {self.clients_per_round!r}")
        if self.clients_per_round < 1:
            raise ValueError(f"clients_per_round must be an int >= 1, found {self.clients_per_round!r}")
        if isinstance(self.noise_multiplier, bool) or not isinstance(self.noise_multiplier, int | float):
            raise ValueError(f"noise_multiplier must be a number >= 0, found {self.noise_multiplier!r}")
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"noise_multiplier must be a finite number >= 0, found {self.noise_multiplier!r}")
        _positive("update_clip_norm", self.update_clip_norm)
        if self.update_dtype not in SUPPORTED_TENSOR_DTYPES:
            raise ValueError(f"update_dtype must be one of {SUPPORTED_TENSOR_DTYPES}, found {self.update_dtype!r}")
        _positive("server_learning_rate", self.server_learning_rate)
        if self.budget_mode not in BUDGET_MODES:
            raise ValueError(f"budget_mode must be one of {BUDGET_MODES}, found {self.budget_mode!r}")
        _positive("round_duration_s", self.round_duration_s)
        if self.target_updates is not None and (
            isinstance(self.target_updates, bool) or not isinstance(self.target_updates, int) or self.target_updates < 1
        ):
            raise ValueError(f"target_updates must be None or an int >= 1, found {self.target_updates!r}")
        if self.target_updates is not None and self.noise_multiplier > 0:
            raise ValueError(TARGET_UPDATES_UNDER_DP)
        if not isinstance(self.local_dp, DpConfig):
            raise ValueError(f"local_dp must be a DpConfig, found {self.local_dp!r}")
        if isinstance(self.max_body_bytes, bool) or not isinstance(self.max_body_bytes, int):
            raise ValueError(f"max_body_bytes must be an int > 0, found {self.max_body_bytes!r}")
        if not 0 < self.max_body_bytes <= MAX_UPDATE_BYTES:
            raise ValueError(f"max_body_bytes must be in 1..{MAX_UPDATE_BYTES}, found {self.max_body_bytes!r}")
        _positive("max_skew_s", self.max_skew_s)
        if not (isinstance(self.norm_slack, float) and 0 <= self.norm_slack <= 1e-2):
            raise ValueError(f"norm_slack must be a float in [0, 0.01], found {self.norm_slack!r}")
        _positive("close_poll_s", self.close_poll_s)
        if isinstance(self.update_retention_s, bool) or not isinstance(self.update_retention_s, int | float):
            raise ValueError(f"update_retention_s must be a number >= 0, found {self.update_retention_s!r}")
        if not (self.update_retention_s >= 0 and math.isfinite(self.update_retention_s)):
            raise ValueError(f"update_retention_s must be a finite number >= 0, found {self.update_retention_s!r}")
        if self.adaptive_clipping is not None:
            if not isinstance(self.adaptive_clipping, AdaptiveClipping):
                raise ValueError(f"adaptive_clipping must be an AdaptiveClipping, found {self.adaptive_clipping!r}")
            if self.noise_multiplier > 0:
                delta_noise_multiplier(self.noise_multiplier, self.adaptive_clipping.bit_noise_std)  # σ_b > z/2
