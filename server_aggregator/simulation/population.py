"""A table of N virtual users, each a small non-IID set of texts from a pool (the privacy unit is the user).

User u gets a label mix p_u ~ Dirichlet(α·L·p) (p: the pool's label frequencies, L labels; so the
population's label shares match the pool's, and α = 1 on a balanced pool is Dirichlet(1, …, 1)) and
``texts_per_user`` label draws from it; each label draw takes the next text of that label from a
shuffled cycle over the pool's texts of that label. When the pool holds at least N·k texts the
users' texts are disjoint; otherwise a text is reused by ⌈N·k / pool⌉ users at most (``reuse``),
which the report states: the pool (TweetEval train minus the synth seed set, 5,958 texts at seed
fraction 0.5) is smaller than a realistic population's data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PopulationConfig:
    """How many users, how many texts each, how skewed their labels are, and the seed."""

    num_users: int = 10_000
    texts_per_user: int = 4
    label_alpha: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_users", "texts_per_user", "seed"):
            value = getattr(self, name)
            minimum = 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"PopulationConfig.{name} must be an int >= {minimum}, found {value!r}")
        if not (isinstance(self.label_alpha, int | float) and np.isfinite(self.label_alpha) and self.label_alpha > 0):
            raise ValueError(f"PopulationConfig.label_alpha must be a finite number > 0, found {self.label_alpha!r}")


@dataclass(frozen=True)
class Population:
    """User u's texts are pool positions ``members[offsets[u]:offsets[u + 1]]``."""

    offsets: np.ndarray  # [N + 1] int64
    members: np.ndarray  # [Σ n_u] int64, positions in the pool
    pool_size: int

    @property
    def num_users(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def user(self, index: int) -> np.ndarray:
        """Pool positions of user ``index`` (int64 [n_u])."""
        return self.members[self.offsets[index] : self.offsets[index + 1]]

    @property
    def reuse(self) -> float:
        """Texts held by users / pool size: ≤ 1 means disjoint users."""
        return float(self.members.shape[0] / self.pool_size)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "users": self.num_users,
            "texts": int(self.members.shape[0]),
            "pool": self.pool_size,
            "reuse": round(self.reuse, 3),
            "max_users_per_text": int(np.bincount(self.members, minlength=self.pool_size).max()),
        }


def build_population(pool_labels: np.ndarray, config: PopulationConfig) -> Population:
    """The population over a pool whose labels are ``pool_labels`` [M] (int)."""
    labels = np.asarray(pool_labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"pool_labels must be a non-empty 1-D int array, found shape {labels.shape} {labels.dtype}")
    rng = np.random.default_rng(config.seed)
    classes = np.unique(labels)
    cycles = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    cursor = dict.fromkeys(cycles, 0)
    frequencies = np.array([np.mean(labels == c) for c in classes])  # [L']
    mixes = rng.dirichlet(config.label_alpha * len(classes) * frequencies, size=config.num_users)  # [N, L']
    counts = np.stack([rng.multinomial(config.texts_per_user, p) for p in mixes])  # [N, L']
    members = np.empty(config.num_users * config.texts_per_user, dtype=np.int64)
    position = 0
    for user in range(config.num_users):
        for k, cls in enumerate(classes):
            for _ in range(int(counts[user, k])):
                cycle = cycles[int(cls)]
                members[position] = cycle[cursor[int(cls)] % cycle.shape[0]]
                cursor[int(cls)] += 1
                position += 1
    offsets = np.arange(0, members.shape[0] + 1, config.texts_per_user, dtype=np.int64)
    return Population(offsets=offsets, members=members, pool_size=int(labels.shape[0]))
