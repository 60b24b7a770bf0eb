"""Where a cohort's local rounds run, behind one small interface.

``CohortWorker`` holds what a round needs besides the global weights (the frozen model, every
pool text's token ids, the population table) and turns a slice of the cohort into the uploads the
server would decode. ``InProcessBackend`` runs it in this process, group by group, so memory
stays bounded by ``group_size`` clients; ``RayBackend`` (optional extra ``privtune[ray]``) builds
one worker per Ray actor from the same picklable ``WorkerSpec`` and spreads the groups over them.
Both yield the same ``GroupResult`` sequence in cohort order, so the server's aggregate is the
same whichever backend ran the clients.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ondevice.dp_math import tensors_to_flat
from ondevice.protocol import DpConfig
from ondevice.randomness import SeededRandomSource
from ondevice.seed_methods import expand_from_rank
from ondevice.update import global_norm
from server_aggregator.simulation.clients import ClientExamples, client_update, run_local_steps
from server_aggregator.simulation.cohort_model import CohortModel


def client_seed(seed: int, user: int, round_id: int, step: int) -> int:
    """The seed of user ``user``'s RandomSource at (round, local step): sampling then noise, as on a device."""
    state = np.random.SeedSequence([seed, user, round_id, step]).generate_state(2, np.uint64)
    return int(state[0]) << 64 | int(state[1])


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to rebuild the simulation's clients (picklable)."""

    classifier_dir: Path
    pool_token_ids: tuple[np.ndarray, ...] = field(repr=False)
    pool_labels: np.ndarray = field(repr=False)
    offsets: np.ndarray = field(repr=False)
    members: np.ndarray = field(repr=False)
    max_rows: int = 128
    threads: int = 2


@dataclass(frozen=True)
class CohortJob:
    """One round's work: the cohort's users and the settings every device gets."""

    round_id: int
    global_flat: np.ndarray = field(repr=False)  # [P] float32
    users: np.ndarray = field(repr=False)  # [K] int64
    dp: DpConfig
    trained: np.ndarray = field(repr=False)  # [P] bool
    update_clip_norm: float
    update_dtype: str
    seed: int


@dataclass(frozen=True)
class GroupResult:
    """A slice of the cohort as the server decodes it."""

    uploads: np.ndarray = field(repr=False)  # [C, P] float64, rank-expanded, each ‖·‖ ≤ S
    sent_norms: np.ndarray  # [C] float64, global norm of each upload as sent
    delta_norms: np.ndarray  # [C] float64, norm of each client's rank-kept delta before the upload clip
    rows: int  # example-gradients computed
    loss_sum: float  # Σ per-example loss over those rows


class CohortWorker:
    """Builds the frozen cohort model once; ``run`` computes a slice of a round's cohort."""

    def __init__(self, spec: WorkerSpec, model: CohortModel | None = None) -> None:
        import torch

        from export.classifier import load_classifier

        torch.set_num_threads(spec.threads)
        self.spec = spec
        self.model = model if model is not None else CohortModel(load_classifier(spec.classifier_dir))
        self.specs = self.model.specs

    def clients(self, users: Sequence[int] | np.ndarray) -> list[ClientExamples]:
        spec = self.spec
        out = []
        for user in users:
            positions = spec.members[spec.offsets[user] : spec.offsets[user + 1]]
            out.append(
                ClientExamples(
                    tuple(spec.pool_token_ids[p] for p in positions), spec.pool_labels[positions].astype(np.int64)
                )
            )
        return out

    def run(self, job: CohortJob, users: Sequence[int] | np.ndarray) -> GroupResult:
        clients = self.clients(users)

        def source_for(c: int, step: int) -> SeededRandomSource:
            return SeededRandomSource(client_seed(job.seed, int(users[c]), job.round_id, step))

        steps = run_local_steps(
            self.model, job.global_flat, clients, job.dp, job.trained, source_for, max_rows=self.spec.max_rows
        )
        uploads = np.empty((len(clients), self.model.num_params), dtype=np.float64)  # [C, P]
        norms = np.empty(len(clients), dtype=np.float64)  # [C]
        delta_norms = np.linalg.norm(steps.parameters.astype(np.float64) - job.global_flat.astype(np.float64), axis=1)
        for c in range(len(clients)):
            sent = client_update(
                job.global_flat,
                steps.parameters[c],
                self.specs,
                train_rank=job.dp.train_rank,
                update_clip_norm=job.update_clip_norm,
                update_dtype=job.update_dtype,
            )
            norms[c] = global_norm(sent)
            expanded = expand_from_rank({k: np.asarray(v, np.float64) for k, v in sent.items()}, self.specs)
            uploads[c] = tensors_to_flat(expanded, self.specs)
        loss_sum = 0.0 if math.isnan(steps.mean_loss) else steps.mean_loss * sum(steps.rows_per_step)
        return GroupResult(
            uploads,
            norms,
            delta_norms,
            sum(steps.rows_per_step),
            loss_sum,
        )


class CohortBackend(Protocol):
    """Runs a round's cohort and yields its uploads group by group, in cohort order."""

    name: str

    def run(self, job: CohortJob) -> Iterator[GroupResult]: ...

    def close(self) -> None: ...


def _groups(users: np.ndarray, group_size: int) -> list[np.ndarray]:
    return [users[i : i + group_size] for i in range(0, users.shape[0], group_size)]


class InProcessBackend:
    """The default: one ``CohortWorker`` in this process, ``group_size`` clients at a time."""

    name = "inprocess"

    def __init__(self, spec: WorkerSpec, group_size: int = 128, model: CohortModel | None = None) -> None:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be an int >= 1, found {group_size!r}")
        self.worker = CohortWorker(spec, model)
        self.group_size = group_size

    def run(self, job: CohortJob) -> Iterator[GroupResult]:
        for group in _groups(job.users, self.group_size):
            yield self.worker.run(job, group)

    def close(self) -> None:
        return None


class RayBackend:
    """Optional (``pip install privtune[ray]``): one ``CohortWorker`` per Ray actor, groups spread over them."""

    name = "ray"

    def __init__(
        self, spec: WorkerSpec, *, num_workers: int = 2, group_size: int = 64, address: str | None = None
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError("the Ray backend needs Ray: pip install 'privtune[ray]'") from exc
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be an int >= 1, found {num_workers!r}")
        self._ray: Any = ray
        self._started = not ray.is_initialized()
        if self._started:
            if address is None:
                ray.init(num_cpus=num_workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        worker_spec = WorkerSpec(**{**spec.__dict__, "threads": 1})
        actor = ray.remote(num_cpus=1)(CohortWorker)
        self._actors: list[Any] = [actor.remote(worker_spec) for _ in range(num_workers)]
        self.group_size = group_size

    def run(self, job: CohortJob) -> Iterator[GroupResult]:
        ray = self._ray
        job_ref = ray.put(job)
        pending = [
            self._actors[i % len(self._actors)].run.remote(job_ref, group)
            for i, group in enumerate(_groups(job.users, self.group_size))
        ]
        for ref in pending:  # cohort order, whatever order they finish in
            yield ray.get(ref)

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        if self._started:
            self._ray.shutdown()


def make_backend(
    name: str, spec: WorkerSpec, *, workers: int = 2, group_size: int = 128, model: CohortModel | None = None
) -> CohortBackend:
    """``inprocess`` (default; reuses ``model`` when given) or ``ray`` (every actor builds its own)."""
    if name == "inprocess":
        return InProcessBackend(spec, group_size, model)
    if name == "ray":
        return RayBackend(spec, num_workers=workers, group_size=group_size)
    raise ValueError(f"unknown simulation backend {name!r}; known: ['inprocess', 'ray']")
