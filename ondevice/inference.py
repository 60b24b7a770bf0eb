"""On-device classification of texts with a bundle's inference program, through a runtime registry.

``load_classifier(bundle, runtime="ort"|"executorch", precision="fp32"|"int8")`` verifies the bundle
(every file's sha256) before any runtime opens a file, builds the ``DeviceTokenizer`` and one logits
backend; ``DeviceClassifier.classify`` tokenizes, groups texts by token length (each batch padded only
to its own longest), runs the backend and returns probabilities in input order.

The inference programs bake the exported adapter in as constants, so there is no adapter-loading
hook here: a new global adapter means a new bundle (or a training runtime's parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ondevice.bundle import BundleError, load_manifest, verify_bundle
from ondevice.ort_runtime import ATTENTION_MASK, INPUT_IDS, LOGITS
from ondevice.protocol import ArtifactManifest
from ondevice.tokenizer import DeviceTokenizer, length_batches

DEFAULT_MAX_BATCH = 32


class LogitsBackend(Protocol):
    """``(input_ids, attention_mask)`` int64 [B, T] → logits float32 [B, L]."""

    @property
    def max_batch(self) -> int | None: ...

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class InferenceRuntime:
    """One runtime: the manifest backend it reads, its precisions (→ file role) and how to open a file."""

    name: str
    backend: str
    roles: Mapping[str, str] = field(hash=False)
    load_backend: Callable[[Path, int], LogitsBackend] = field(hash=False, repr=False)

    def __post_init__(self) -> None:
        if not self.roles:
            raise ValueError(f"runtime {self.name!r} must name at least one precision")


class OrtInference:
    """``ort/inference.onnx`` in an ``onnxruntime.InferenceSession`` (CPU, ``threads`` intra-op, 1 inter-op)."""

    max_batch: int | None = None

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session: Any = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask}  # int64 [B, T]
        logits = self._session.run([LOGITS], feeds)[0]  # [B, L]
        return np.asarray(logits, dtype=np.float32)


class EtInferenceBackend:
    """An ExecuTorch inference .pte (fp32 or int8) on XNNPACK's process-wide thread pool.

    ``et_runtime.set_threads`` refuses to resize the pool while any ExecuTorch program (inference or
    training) is loaded in the process (resizing under a live program crashes the runtime): load
    every program of a process with the same thread count.
    """

    threads: int

    def __init__(self, path: Path, threads: int) -> None:
        from ondevice.et_runtime import EtInference, set_threads

        set_threads(threads)
        self.threads = threads
        self._program = EtInference(path)
        self.max_batch: int | None = self._program.max_batch
        self.max_seq_len = self._program.max_seq_len

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._program(input_ids, attention_mask)  # [B, L]


RUNTIMES: dict[str, InferenceRuntime] = {
    "ort": InferenceRuntime("ort", backend="ort", roles={"fp32": "inference_model"}, load_backend=OrtInference),
    "executorch": InferenceRuntime(
        "executorch",
        backend="executorch",
        roles={"fp32": "inference_fp32", "int8": "inference_int8"},
        load_backend=EtInferenceBackend,
    ),
}


class DeviceClassifier:
    """Texts → class probabilities with one bundle's tokenizer and one runtime's inference program.

    ``backend`` is the logits callable that ``classify`` runs once per length batch.
    """

    def __init__(
        self,
        manifest: ArtifactManifest,
        tokenizer: DeviceTokenizer,
        backend: LogitsBackend,
        *,
        runtime: str,
        precision: str,
        threads: int,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        _require_positive_int("max_batch", max_batch)
        if backend.max_batch is not None and max_batch > backend.max_batch:
            raise ValueError(f"max_batch {max_batch} exceeds the {runtime} program's limit of {backend.max_batch}")
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.backend = backend
        self.runtime = runtime
        self.precision = precision
        self.threads = threads
        self.max_batch = max_batch

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    def classify(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities float32 [N, L] in input order (softmax in float64; rows sum to 1)."""
        ids = self.tokenizer.encode(texts)  # N × int64 [T_i]; checks the texts
        probs = np.empty((len(ids), len(self.labels)), dtype=np.float32)  # [N, L]
        for batch in length_batches([len(row) for row in ids], self.max_batch):
            input_ids, mask = self.tokenizer.pad_batch([ids[i] for i in batch])  # [b, T]
            logits = np.asarray(self.backend(input_ids, mask), dtype=np.float64)  # [b, L]
            if logits.shape != (len(batch), len(self.labels)):
                raise RuntimeError(
                    f"{self.runtime} returned logits of shape {logits.shape}, expected {(len(batch), len(self.labels))}"
                )
            if not np.isfinite(logits).all():
                raise RuntimeError(f"{self.runtime} {self.precision} returned non-finite logits")
            probs[batch] = softmax(logits).astype(np.float32)
        return probs

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable label per text."""
        return [self.labels[i] for i in np.argmax(self.classify(texts), axis=1)]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 ([B, L] → [B, L])."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)  # [B, L]
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def available_precisions(manifest: ArtifactManifest, runtime: str) -> list[str]:
    """The precisions of ``runtime`` that this bundle holds a program for."""
    spec = _runtime(runtime)
    present = {(f.backend, f.role) for f in manifest.files}
    return [p for p, role in spec.roles.items() if (spec.backend, role) in present]


def load_classifier(
    bundle_dir: str | Path,
    runtime: str = "ort",
    precision: str = "fp32",
    threads: int = 1,
    max_batch: int = DEFAULT_MAX_BATCH,
    verify: bool = True,
) -> DeviceClassifier:
    """A ``DeviceClassifier`` on ``runtime``'s ``precision`` program of the bundle.

    ``verify=True`` checks every file's size and sha256 first (``BundleError`` naming the file);
    unknown runtimes, precisions or ones this bundle lacks → ``ValueError`` listing what exists.
    """
    spec = _runtime(runtime)
    if precision not in spec.roles:
        raise ValueError(f"runtime {runtime!r} has no precision {precision!r}; it has {sorted(spec.roles)}")
    _require_positive_int("threads", threads)
    _require_positive_int("max_batch", max_batch)
    root = Path(bundle_dir)
    manifest = verify_bundle(root) if verify else load_manifest(root)
    have = available_precisions(manifest, runtime)
    if precision not in have:
        raise ValueError(f"{root}: the bundle has no {runtime} {precision} program; it has {runtime} {have}")
    entry = manifest.file(spec.roles[precision], spec.backend)
    path = root / entry.path
    if not path.is_file():
        raise BundleError(f"{path}: listed in the manifest ({entry.backend}:{entry.role}) but missing")
    tokenizer = DeviceTokenizer.from_bundle(root, manifest)
    backend = spec.load_backend(path, threads)
    program_len = getattr(backend, "max_seq_len", None)
    if program_len is not None and program_len != manifest.max_seq_len:
        raise BundleError(f"{path}: program max_seq_len {program_len} != manifest's {manifest.max_seq_len}")
    return DeviceClassifier(
        manifest, tokenizer, backend, runtime=runtime, precision=precision, threads=threads, max_batch=max_batch
    )


def _runtime(name: str) -> InferenceRuntime:
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; known runtimes: {sorted(RUNTIMES)}")
    return RUNTIMES[name]


def _require_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, found {value!r}")
