"""Types shared by the export backends and the bundle writer."""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("ort", "executorch")
QUANTIZATIONS = ("int8",)


@dataclass(frozen=True)
class ExportOptions:
    """What to export. ``max_seq_len`` bounds the dynamic sequence axis of every program."""

    max_seq_len: int = 128
    backends: tuple[str, ...] = BACKENDS
    optimizers: tuple[str, ...] = ("adamw", "sgd")
    quantize: tuple[str, ...] = ("int8",)
    dp_batch_size: int = 8
    """Fixed batch of the ExecuTorch per-example-gradient program (device pads with weight-0 rows)."""
    inference_max_batch: int = 32
    """Upper bound of the dynamic batch axis of the inference programs."""

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_seq_len, bool)
            or not isinstance(self.max_seq_len, int)
            or not 8 <= self.max_seq_len <= 512
        ):
            raise ValueError(f"max_seq_len must be an int in 8..512, found {self.max_seq_len!r}")
        if (
            not self.backends
            or any(b not in BACKENDS for b in self.backends)
            or len(set(self.backends)) != len(self.backends)
        ):
            raise ValueError(f"backends must be distinct names from {list(BACKENDS)}, found {list(self.backends)}")
        if not self.optimizers or any(o not in ("adamw", "sgd") for o in self.optimizers):
            raise ValueError(
                f"optimizers must be a non-empty subset of ['adamw', 'sgd'], found {list(self.optimizers)}"
            )
        if any(q not in QUANTIZATIONS for q in self.quantize):
            raise ValueError(f"quantize must be a subset of {list(QUANTIZATIONS)}, found {list(self.quantize)}")
        for name in ("dp_batch_size", "inference_max_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                raise ValueError(f"{name} must be an int in 1..1024, found {value!r}")


@dataclass(frozen=True)
class WrittenFile:
    """A file a backend wrote: POSIX path relative to the bundle root, backend, and role."""

    path: str
    backend: str
    role: str
