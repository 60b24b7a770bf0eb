"""Wire and artifact contracts shared by export, ondevice and server_aggregator.

Every type here is a frozen dataclass validated on construction; a bad value raises
``ProtocolError`` naming the field and the value found. Metadata travels as JSON
(lossless: Python floats round-trip exactly through ``repr``; NaN/inf are refused), tensors
as safetensors (dtype and shape travel with the data).

Only the standard library, numpy and safetensors are imported here, so a phone-side
process never needs torch to speak the protocol.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import safetensors.numpy

PROTOCOL_VERSION = 2
"""Bumped on any incompatible change to a type below or to the update encoding.

2: ``AdapterUpdate`` no longer carries ``num_examples`` (the device's example count left it in clear)."""

MAX_UPDATE_BYTES = 64 * 1024 * 1024
"""Hard cap on an encoded ``AdapterUpdate`` (the LoRA r8 adapter is ~0.3 MB in fp32)."""

# Caps on an update's safetensors header, from the real sizes: the exported bundle's update (MiniLM-L6,
# LoRA r8 on query/value + the head: 26 tensors) has a ~3.5 KB header whose metadata string is ~0.6 KB;
# a 98-tensor adapter (12 layers x 4 targets) with 128-character ids still has only a 12 KB header and
# 0.75 KB of metadata. The caps leave >5x headroom over that and bound what a device can make the server parse.
MAX_UPDATE_HEADER_BYTES = 64 * 1024
"""Largest safetensors JSON header ``decode_update`` parses (the 8-byte length prefix is checked first)."""
MAX_UPDATE_METADATA_BYTES = 4 * 1024
"""Largest ``privtune`` metadata string (the update's JSON fields) inside that header."""
MAX_UPDATE_TENSORS = 512
"""Most tensors one update may hold."""
MAX_TENSOR_DIMS = 8
"""Most dimensions one update tensor may have."""
MAX_TENSOR_NAME_CHARS = 256
INT64_MAX = 2**63 - 1
"""Every int in the contracts fits a signed 64-bit integer (the JVM side's ``long``)."""

SUPPORTED_TENSOR_DTYPES = ("float32", "float16")
FILE_BACKENDS = ("ort", "executorch", "tokenizer", "common")
OPTIMIZERS = ("sgd", "adamw")

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_NONCE_RE = re.compile(r"^[0-9a-f]{32,128}$")
_MAC_RE = re.compile(r"^[0-9a-f]{64}$")
_TENSOR_NAME_RE = re.compile(rf"^[A-Za-z0-9_.:/-]{{1,{MAX_TENSOR_NAME_CHARS}}}$")
_METADATA_KEY = "privtune"
_SAFETENSORS_METADATA = "__metadata__"
_INT64_DIGITS = len(str(INT64_MAX))
# safetensors dtype codes and their item sizes (all that the format defines; only F32/F16 are accepted)
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}


class RejectionReason(StrEnum):
    """Reason codes for rejected uploads (the aggregator returns them in 4xx bodies)."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_DEVICE = "unknown_device"
    REVOKED_DEVICE = "revoked_device"
    STALE_TIMESTAMP = "stale_timestamp"
    REPLAYED_NONCE = "replayed_nonce"
    NOT_SELECTED = "not_selected"
    ROUND_NOT_OPEN = "round_not_open"
    WRONG_ROUND = "wrong_round"
    WRONG_MANIFEST = "wrong_manifest"
    WRONG_KEYS = "wrong_keys"
    WRONG_SHAPE = "wrong_shape"
    WRONG_DTYPE = "wrong_dtype"
    NON_FINITE = "non_finite"
    NORM_EXCEEDED = "norm_exceeded"
    DUPLICATE_CONFLICT = "duplicate_conflict"


class ProtocolError(ValueError):
    """A contract value is malformed; the message names the field and the value found.

    ``reason`` is the rejection code an aggregator answers with when the value came from a device
    (``malformed`` unless a more precise code applies: ``unsupported_version``, ``wrong_dtype``,
    ``non_finite``, ``too_large``).
    """

    def __init__(self, message: str, *, reason: RejectionReason = RejectionReason.MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- validators


def _fail(owner: str, name: str, message: str, value: object) -> ProtocolError:
    return ProtocolError(f"{owner}.{name} {message}, found {value!r}")


def _require_int(owner: str, name: str, value: object, *, minimum: int, maximum: int = INT64_MAX) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(owner, name, "must be an int", value)
    if value < minimum:
        raise _fail(owner, name, f"must be >= {minimum}", value)
    if value > maximum:
        raise _fail(owner, name, f"must be <= {maximum}", value)


def _require_float(
    owner: str,
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(owner, name, "must be a number", value)
    if isinstance(value, int) and not -INT64_MAX <= value <= INT64_MAX:
        raise _fail(owner, name, "must be a number within the signed 64-bit range", value)
    if not math.isfinite(value):
        raise _fail(owner, name, "must be finite", value)
    if low is not None and (value <= low if low_open else value < low):
        raise _fail(owner, name, f"must be {'>' if low_open else '>='} {low}", value)
    if high is not None and value > high:
        raise _fail(owner, name, f"must be <= {high}", value)


def _require_str(owner: str, name: str, value: object, *, pattern: re.Pattern[str] | None = None) -> None:
    if not isinstance(value, str) or not value:
        raise _fail(owner, name, "must be a non-empty string", value)
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(owner, name, f"must match {pattern.pattern}", value)


def _require_sha256(owner: str, name: str, value: object) -> None:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise _fail(owner, name, "must be a lowercase hex sha256 (64 characters)", value)


def _require_choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(owner, name, f"must be one of {list(choices)}", value)


def _require_str_tuple(owner: str, name: str, value: object, *, unique: bool = True) -> None:
    if not isinstance(value, tuple) or not value:
        raise _fail(owner, name, "must be a non-empty tuple of strings", value)
    for item in value:
        if not isinstance(item, str) or not item:
            raise _fail(owner, name, "must hold non-empty strings only", value)
    if unique and len(set(value)) != len(value):
        raise _fail(owner, name, "must not repeat entries", value)


def _require_version(owner: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(owner, "protocol_version", "must be an int", value)
    if value != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{owner}.protocol_version {value!r} is not supported by this build "
            f"(speaks {PROTOCOL_VERSION}); update privtune on the older side"
        )


def _check_keys(
    owner: str, data: Mapping[str, Any], required: set[str], optional: frozenset[str] = frozenset()
) -> None:
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{owner} must be a JSON object, found {type(data).__name__}")
    missing = sorted(required - data.keys())
    unknown = sorted(data.keys() - required - optional)
    if missing:
        raise ProtocolError(f"{owner} is missing field(s) {missing}")
    if unknown:
        raise ProtocolError(f"{owner} has unknown field(s) {unknown}")


def canonical_json(data: Mapping[str, Any]) -> str:
    """JSON with sorted keys and no whitespace: the form that is hashed and signed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _parse_json(text: str | bytes, owner: str) -> Any:
    """Strict JSON: no NaN/Infinity or float overflow, ints within signed 64 bits (checked on the digits,
    before Python converts them), no repeated key in an object; ``ProtocolError`` for anything else
    that does not parse (bad UTF-8, nesting deep enough to exhaust the parser's recursion)."""

    def refuse_constant(name: str) -> None:
        raise ProtocolError(f"{owner} JSON holds the non-finite number {name}")

    def bounded_int(digits: str) -> int:
        if len(digits.lstrip("-")) > _INT64_DIGITS:
            raise ProtocolError(
                f"{owner} JSON holds an integer of {len(digits)} characters, over the signed 64-bit range"
            )
        value = int(digits)
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ProtocolError(f"{owner} JSON holds the integer {value}, outside the signed 64-bit range")
        return value

    def finite_float(digits: str) -> float:
        value = float(digits)
        if not math.isfinite(value):
            raise ProtocolError(f"{owner} JSON holds a number that overflows a float: {digits[:40]!r}")
        return value

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ProtocolError(f"{owner} JSON repeats the key {key[:80]!r} in one object")
            out[key] = value
        return out

    try:
        return json.loads(
            text,
            parse_constant=refuse_constant,
            parse_int=bounded_int,
            parse_float=finite_float,
            object_pairs_hook=unique_keys,
        )
    except RecursionError as exc:
        raise ProtocolError(f"{owner} JSON is nested too deeply") from exc
    except ProtocolError:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and int-conversion limits are ValueErrors
        raise ProtocolError(f"{owner} is not valid UTF-8 JSON: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    """Lowercase hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# --------------------------------------------------------------------------- LoRA + tensors


def canonical_name(parameter_name: str) -> str:
    """``encoder.base_model.model.encoder.layer.0...lora_A.default.weight`` → ``encoder.layer.0...lora_A.weight``."""
    name = parameter_name.removeprefix("encoder.base_model.model.")
    return name.replace(".default.", ".")


@dataclass(frozen=True)
class LoraSpec:
    """Low-rank adapter shape: ``W' = W + (alpha / rank) · B A`` on each target module."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("query", "value")
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _require_int("LoraSpec", "rank", self.rank, minimum=1)
        _require_float("LoraSpec", "alpha", self.alpha, low=0.0, low_open=True)
        _require_str_tuple("LoraSpec", "targets", self.targets)
        _require_float("LoraSpec", "dropout", self.dropout, low=0.0, high=0.99)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets), "dropout": self.dropout}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoraSpec:
        _check_keys("LoraSpec", data, {"rank", "alpha", "targets", "dropout"})
        return cls(rank=data["rank"], alpha=data["alpha"], targets=_as_tuple(data["targets"]), dropout=data["dropout"])


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one trainable tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _require_str("TensorSpec", "name", self.name)
        if not isinstance(self.shape, tuple) or not self.shape:
            raise _fail("TensorSpec", "shape", f"of {self.name!r} must be a non-empty tuple of ints", self.shape)
        for dim in self.shape:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise _fail("TensorSpec", "shape", f"of {self.name!r} must hold ints >= 1", self.shape)
        _require_choice("TensorSpec", "dtype", self.dtype, SUPPORTED_TENSOR_DTYPES)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        _check_keys("TensorSpec", data, {"name", "shape", "dtype"})
        return cls(name=data["name"], shape=_as_tuple(data["shape"]), dtype=data["dtype"])


@dataclass(frozen=True)
class ArtifactFile:
    """One file of a bundle: path relative to the bundle root, its sha256, backend and role."""

    path: str
    sha256: str
    backend: str
    role: str
    size_bytes: int

    def __post_init__(self) -> None:
        _require_str("ArtifactFile", "path", self.path)
        if self.path.startswith("/") or ".." in self.path.split("/") or "\\" in self.path:
            raise _fail("ArtifactFile", "path", "must be a relative POSIX path inside the bundle", self.path)
        _require_sha256("ArtifactFile", "sha256", self.sha256)
        _require_choice("ArtifactFile", "backend", self.backend, FILE_BACKENDS)
        _require_str("ArtifactFile", "role", self.role)
        _require_int("ArtifactFile", "size_bytes", self.size_bytes, minimum=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "backend": self.backend,
            "role": self.role,
            "size_bytes": self.size_bytes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtifactFile:
        _check_keys("ArtifactFile", data, {"path", "sha256", "backend", "role", "size_bytes"})
        return cls(**data)


@dataclass(frozen=True)
class ArtifactManifest:
    """What an exported bundle holds; its hash pins rounds and updates to one bundle."""

    base_model_id: str
    base_model_sha256: str
    lora: LoraSpec
    trainable: tuple[TensorSpec, ...]
    max_seq_len: int
    labels: tuple[str, ...]
    tokenizer_sha256: str
    files: tuple[ArtifactFile, ...]
    privtune_version: str
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _require_version("ArtifactManifest", self.protocol_version)
        _require_str("ArtifactManifest", "base_model_id", self.base_model_id)
        _require_sha256("ArtifactManifest", "base_model_sha256", self.base_model_sha256)
        if not isinstance(self.lora, LoraSpec):
            raise _fail("ArtifactManifest", "lora", "must be a LoraSpec", self.lora)
        if not isinstance(self.trainable, tuple) or not self.trainable:
            raise _fail("ArtifactManifest", "trainable", "must be a non-empty tuple of TensorSpec", self.trainable)
        if not all(isinstance(t, TensorSpec) for t in self.trainable):
            raise _fail("ArtifactManifest", "trainable", "must hold TensorSpec only", self.trainable)
        names = [t.name for t in self.trainable]
        if len(set(names)) != len(names):
            raise _fail("ArtifactManifest", "trainable", "must not repeat tensor names", names)
        _require_int("ArtifactManifest", "max_seq_len", self.max_seq_len, minimum=2)
        _require_str_tuple("ArtifactManifest", "labels", self.labels)
        if len(self.labels) < 2:
            raise _fail("ArtifactManifest", "labels", "must name at least two classes", self.labels)
        _require_sha256("ArtifactManifest", "tokenizer_sha256", self.tokenizer_sha256)
        if not isinstance(self.files, tuple) or not all(isinstance(f, ArtifactFile) for f in self.files):
            raise _fail("ArtifactManifest", "files", "must be a tuple of ArtifactFile", self.files)
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise _fail("ArtifactManifest", "files", "must not list a path twice", paths)
        _require_str("ArtifactManifest", "privtune_version", self.privtune_version)

    @property
    def trainable_numel(self) -> int:
        return sum(t.numel for t in self.trainable)

    def file(self, role: str, backend: str | None = None) -> ArtifactFile:
        """The one file with this role (and backend); ``KeyError`` naming what exists otherwise."""
        hits = [f for f in self.files if f.role == role and (backend is None or f.backend == backend)]
        if len(hits) != 1:
            have = sorted(f"{f.backend}:{f.role}" for f in self.files)
            raise KeyError(f"bundle has {len(hits)} file(s) with role {role!r} backend {backend!r}; it has {have}")
        return hits[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol_version": self.protocol_version,
            "base_model_id": self.base_model_id,
            "base_model_sha256": self.base_model_sha256,
            "lora": self.lora.to_dict(),
            "trainable": [t.to_dict() for t in self.trainable],
            "max_seq_len": self.max_seq_len,
            "labels": list(self.labels),
            "tokenizer_sha256": self.tokenizer_sha256,
            "files": [f.to_dict() for f in self.files],
            "privtune_version": self.privtune_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtifactManifest:
        _check_keys(
            "ArtifactManifest",
            data,
            {
                "protocol_version",
                "base_model_id",
                "base_model_sha256",
                "lora",
                "trainable",
                "max_seq_len",
                "labels",
                "tokenizer_sha256",
                "files",
                "privtune_version",
            },
        )
        _require_version("ArtifactManifest", data["protocol_version"])
        if not isinstance(data["trainable"], list) or not isinstance(data["files"], list):
            raise ProtocolError("ArtifactManifest.trainable and .files must be JSON arrays")
        return cls(
            protocol_version=data["protocol_version"],
            base_model_id=data["base_model_id"],
            base_model_sha256=data["base_model_sha256"],
            lora=LoraSpec.from_dict(data["lora"]),
            trainable=tuple(TensorSpec.from_dict(t) for t in data["trainable"]),
            max_seq_len=data["max_seq_len"],
            labels=_as_tuple(data["labels"]),
            tokenizer_sha256=data["tokenizer_sha256"],
            files=tuple(ArtifactFile.from_dict(f) for f in data["files"]),
            privtune_version=data["privtune_version"],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> ArtifactManifest:
        return cls.from_dict(_parse_json(text, "ArtifactManifest"))

    def manifest_hash(self) -> str:
        """sha256 of the canonical JSON: the identity rounds and updates refer to."""
        return sha256_hex(canonical_json(self.to_dict()).encode("utf-8"))


# --------------------------------------------------------------------------- DP + rounds


@dataclass(frozen=True)
class DpConfig:
    """Local DP-SGD parameters the server dictates for a round (a device never picks its own).

    Each local step Poisson-samples the device's examples with rate ``sampling_rate``, clips
    every per-example gradient to ``clip_norm``, sums, adds N(0, (noise_multiplier·clip_norm)²)
    per coordinate and divides by the expected batch size.

    Seed methods (all post-processing of already-private quantities, so no extra privacy cost):
    ``dp_sat_rho`` > 0 turns on DP-SAT (the ascent direction is the previous step's noised
    gradient, radius ρ); ``unit_sparsity`` = p masks the gradient of the p-fraction least
    important input/output units of every LoRA matrix (importance from |W| of the current,
    already private weights); ``train_rank`` = r' trains and uploads only the first r' rank
    components (None: the bundle's full rank). The server fixes all three for the round.

    ``class_weights`` (one per label, each in (0, 1]; None: all 1) multiplies each *clipped*
    per-example gradient by the weight of its label: Σ_i w_{y_i}·clip(g_i). Because w ≤ 1, one
    example still moves the sum by at most C, so the local accounting is unchanged. Balanced
    weights (w_y = min_c π_c / π_y for a label prior π that is public or already released, such
    as synth's DP label counts) make the local objective class-balanced cross-entropy. Sent only
    when set, so rounds without it keep the wire form older devices accept.
    """

    clip_norm: float
    noise_multiplier: float
    sampling_rate: float
    local_steps: int
    learning_rate: float
    optimizer: str = "sgd"
    local_epsilon_budget: float = 8.0
    local_delta: float = 1e-5
    dp_sat_rho: float = 0.0
    unit_sparsity: float = 0.0
    train_rank: int | None = None
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _require_float("DpConfig", "clip_norm", self.clip_norm, low=0.0, low_open=True)
        _require_float("DpConfig", "noise_multiplier", self.noise_multiplier, low=0.0)
        _require_float("DpConfig", "sampling_rate", self.sampling_rate, low=0.0, high=1.0, low_open=True)
        _require_int("DpConfig", "local_steps", self.local_steps, minimum=1)
        _require_float("DpConfig", "learning_rate", self.learning_rate, low=0.0, low_open=True)
        _require_choice("DpConfig", "optimizer", self.optimizer, OPTIMIZERS)
        _require_float("DpConfig", "local_epsilon_budget", self.local_epsilon_budget, low=0.0, low_open=True)
        _require_float("DpConfig", "local_delta", self.local_delta, low=0.0, high=0.1, low_open=True)
        _require_float("DpConfig", "dp_sat_rho", self.dp_sat_rho, low=0.0)
        _require_float("DpConfig", "unit_sparsity", self.unit_sparsity, low=0.0, high=0.95)
        if self.train_rank is not None:
            _require_int("DpConfig", "train_rank", self.train_rank, minimum=1)
        if self.class_weights is not None:
            if not isinstance(self.class_weights, tuple) or len(self.class_weights) < 2:
                raise _fail(
                    "DpConfig", "class_weights", "must be a tuple with one weight per label (>= 2)", self.class_weights
                )
            for weight in self.class_weights:
                _require_float("DpConfig", "class_weights", weight, low=0.0, high=1.0, low_open=True)

    def label_weights(self, labels: np.ndarray) -> np.ndarray | None:
        """float64 [n] weight of each label in ``labels`` (None when the round sets no class weights);
        ValueError for a label the weights do not cover."""
        if self.class_weights is None:
            return None
        labels = np.asarray(labels, dtype=np.int64)
        uncovered = labels[(labels < 0) | (labels >= len(self.class_weights))]
        if uncovered.size:
            raise ValueError(
                f"the round's class_weights cover labels 0..{len(self.class_weights) - 1}, "
                f"found label {int(uncovered[0])}"
            )
        weights: np.ndarray = np.asarray(self.class_weights, dtype=np.float64)[labels]
        return weights

    def to_dict(self) -> dict[str, Any]:
        optional: dict[str, Any] = {}
        if self.class_weights is not None:
            optional["class_weights"] = list(self.class_weights)
        return {
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "sampling_rate": self.sampling_rate,
            "local_steps": self.local_steps,
            "learning_rate": self.learning_rate,
            "optimizer": self.optimizer,
            "local_epsilon_budget": self.local_epsilon_budget,
            "local_delta": self.local_delta,
            "dp_sat_rho": self.dp_sat_rho,
            "unit_sparsity": self.unit_sparsity,
            "train_rank": self.train_rank,
        } | optional

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DpConfig:
        optional = frozenset({"class_weights"})
        _check_keys("DpConfig", data, set(cls.__dataclass_fields__) - optional, optional)
        values = dict(data)
        if isinstance(values.get("class_weights"), list):
            values["class_weights"] = tuple(values["class_weights"])
        return cls(**values)


@dataclass(frozen=True)
class RoundConfig:
    """One federated round as the server announces it."""

    round_id: int
    manifest_hash: str
    global_adapter_version: int
    dp: DpConfig
    update_clip_norm: float
    deadline_unix: float
    update_dtype: str = "float32"
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _require_version("RoundConfig", self.protocol_version)
        _require_int("RoundConfig", "round_id", self.round_id, minimum=0)
        _require_sha256("RoundConfig", "manifest_hash", self.manifest_hash)
        _require_int("RoundConfig", "global_adapter_version", self.global_adapter_version, minimum=0)
        if not isinstance(self.dp, DpConfig):
            raise _fail("RoundConfig", "dp", "must be a DpConfig", self.dp)
        _require_float("RoundConfig", "update_clip_norm", self.update_clip_norm, low=0.0, low_open=True)
        _require_float("RoundConfig", "deadline_unix", self.deadline_unix, low=0.0, low_open=True)
        _require_choice("RoundConfig", "update_dtype", self.update_dtype, SUPPORTED_TENSOR_DTYPES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol_version": self.protocol_version,
            "round_id": self.round_id,
            "manifest_hash": self.manifest_hash,
            "global_adapter_version": self.global_adapter_version,
            "dp": self.dp.to_dict(),
            "update_clip_norm": self.update_clip_norm,
            "deadline_unix": self.deadline_unix,
            "update_dtype": self.update_dtype,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundConfig:
        _check_keys("RoundConfig", data, set(cls.__dataclass_fields__))
        _require_version("RoundConfig", data["protocol_version"])
        return cls(**{**data, "dp": DpConfig.from_dict(data["dp"])})

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> RoundConfig:
        return cls.from_dict(_parse_json(text, "RoundConfig"))


# --------------------------------------------------------------------------- updates


def _tensor_dtype_name(array: np.ndarray) -> str:
    return str(array.dtype)


UPDATE_METADATA_FIELDS = frozenset(
    {
        "protocol_version",
        "round_id",
        "device_id",
        "manifest_hash",
        "global_adapter_version",
        "dp",
        "local_epsilon",
        "local_delta",
        "nonce",
    }
)


@dataclass(frozen=True)
class AdapterUpdate:
    """A device's clipped adapter delta for one round, with the DP parameters it used.

    ``tensors`` maps trainable names to numpy arrays (float32 or float16, finite). Encoded
    as one safetensors blob whose header metadata carries the JSON fields; the HMAC over
    the encoded bytes travels beside it (``update_mac``). The device's example count is not
    sent: the server's DP aggregation does not use it and it would leave the device in clear.
    """

    round_id: int
    device_id: str
    manifest_hash: str
    global_adapter_version: int
    tensors: Mapping[str, np.ndarray] = field(repr=False)
    dp: DpConfig
    local_epsilon: float
    local_delta: float
    nonce: str
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _require_version("AdapterUpdate", self.protocol_version)
        _require_int("AdapterUpdate", "round_id", self.round_id, minimum=0)
        _require_str("AdapterUpdate", "device_id", self.device_id, pattern=_ID_RE)
        _require_sha256("AdapterUpdate", "manifest_hash", self.manifest_hash)
        _require_int("AdapterUpdate", "global_adapter_version", self.global_adapter_version, minimum=0)
        if not isinstance(self.dp, DpConfig):
            raise _fail("AdapterUpdate", "dp", "must be a DpConfig", self.dp)
        _require_float("AdapterUpdate", "local_epsilon", self.local_epsilon, low=0.0)
        _require_float("AdapterUpdate", "local_delta", self.local_delta, low=0.0, high=1.0)
        _require_str("AdapterUpdate", "nonce", self.nonce, pattern=_NONCE_RE)
        self._check_tensors()

    def _check_tensors(self) -> None:
        if not isinstance(self.tensors, Mapping) or not self.tensors:
            raise _fail("AdapterUpdate", "tensors", "must be a non-empty mapping name -> ndarray", type(self.tensors))
        if len(self.tensors) > MAX_UPDATE_TENSORS:
            raise _fail(
                "AdapterUpdate", "tensors", f"must hold at most {MAX_UPDATE_TENSORS} tensors", len(self.tensors)
            )
        dtypes = set()
        for name, array in self.tensors.items():
            _require_str("AdapterUpdate", "tensors", name, pattern=_TENSOR_NAME_RE)
            if not isinstance(array, np.ndarray):
                raise _fail("AdapterUpdate", "tensors", f"[{name!r}] must be a numpy array", type(array))
            if _tensor_dtype_name(array) not in SUPPORTED_TENSOR_DTYPES:
                raise ProtocolError(
                    f"AdapterUpdate.tensors[{name!r}] dtype must be float32 or float16, found {str(array.dtype)!r}",
                    reason=RejectionReason.WRONG_DTYPE,
                )
            if not 1 <= array.ndim <= MAX_TENSOR_DIMS:
                raise _fail(
                    "AdapterUpdate",
                    "tensors",
                    f"[{name!r}] must have at least one dimension and at most {MAX_TENSOR_DIMS}",
                    array.shape,
                )
            if not np.all(np.isfinite(array)):
                raise ProtocolError(
                    f"AdapterUpdate.tensors[{name!r}] must be finite, found NaN or inf",
                    reason=RejectionReason.NON_FINITE,
                )
            dtypes.add(_tensor_dtype_name(array))
        if len(dtypes) != 1:
            raise _fail("AdapterUpdate", "tensors", "must all share one dtype", sorted(dtypes))

    @property
    def dtype(self) -> str:
        return _tensor_dtype_name(next(iter(self.tensors.values())))

    def l2_norm(self) -> float:
        """Global L2 norm over all tensors, computed in float64."""
        return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in self.tensors.values()))

    def metadata_dict(self) -> dict[str, Any]:
        return {
            "protocol_version": self.protocol_version,
            "round_id": self.round_id,
            "device_id": self.device_id,
            "manifest_hash": self.manifest_hash,
            "global_adapter_version": self.global_adapter_version,
            "dp": self.dp.to_dict(),
            "local_epsilon": self.local_epsilon,
            "local_delta": self.local_delta,
            "nonce": self.nonce,
        }


def encode_update(update: AdapterUpdate) -> bytes:
    """Serialise to safetensors bytes; deterministic for equal updates.

    ``ProtocolError`` if the result breaks a cap ``decode_update`` enforces (so a device never
    stores an update the aggregator would refuse as malformed)."""
    arrays = {name: np.ascontiguousarray(a) for name, a in update.tensors.items()}
    metadata = canonical_json(update.metadata_dict())
    if len(metadata) > MAX_UPDATE_METADATA_BYTES or not metadata.isascii():
        raise ProtocolError(
            f"AdapterUpdate metadata must be ASCII of at most {MAX_UPDATE_METADATA_BYTES} characters, "
            f"found {len(metadata)} characters"
        )
    blob: bytes = safetensors.numpy.save(arrays, metadata={_METADATA_KEY: metadata})
    if len(blob) > MAX_UPDATE_BYTES:
        raise ProtocolError(f"encoded AdapterUpdate is {len(blob)} bytes, over the cap of {MAX_UPDATE_BYTES}")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > MAX_UPDATE_HEADER_BYTES:
        raise ProtocolError(
            f"encoded AdapterUpdate has a {header_len}-byte header, over the cap of {MAX_UPDATE_HEADER_BYTES}"
        )
    return blob


@dataclass(frozen=True)
class _TensorEntry:
    """One tensor of a safetensors header, checked: name, dtype code, shape and byte range in the data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _read_safetensors_header(blob: bytes) -> tuple[dict[str, Any], int]:
    """(the header JSON object, where the tensor data starts), with the header's length capped first."""
    if len(blob) < 8:
        raise ProtocolError(f"AdapterUpdate body is {len(blob)} bytes: too short for a safetensors header")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > MAX_UPDATE_HEADER_BYTES:
        raise ProtocolError(
            f"AdapterUpdate safetensors header claims {header_len} bytes, over the cap of {MAX_UPDATE_HEADER_BYTES}"
        )
    if header_len > len(blob) - 8:
        raise ProtocolError(f"AdapterUpdate safetensors header claims {header_len} bytes, body has {len(blob) - 8}")
    raw = blob[8 : 8 + header_len]
    if not raw.isascii():
        raise ProtocolError("AdapterUpdate safetensors header holds non-ASCII bytes (names and metadata are ASCII)")
    header = _parse_json(raw, "AdapterUpdate safetensors header")
    if not isinstance(header, dict):
        raise ProtocolError(f"AdapterUpdate safetensors header must be a JSON object, found {type(header).__name__}")
    return header, 8 + header_len


def _metadata_string(header: Mapping[str, Any]) -> str:
    """The ``privtune`` string of the header's ``__metadata__``, the only entry allowed there."""
    metadata = header.get(_SAFETENSORS_METADATA)
    if not isinstance(metadata, dict) or not isinstance(metadata.get(_METADATA_KEY), str):
        raise ProtocolError(f"AdapterUpdate safetensors metadata lacks the {_METADATA_KEY!r} entry")
    unknown = sorted(metadata.keys() - {_METADATA_KEY})
    if unknown:
        raise ProtocolError(f"AdapterUpdate safetensors metadata has unknown entries {[k[:40] for k in unknown[:3]]}")
    text: str = metadata[_METADATA_KEY]
    if len(text) > MAX_UPDATE_METADATA_BYTES:
        raise ProtocolError(
            f"AdapterUpdate metadata is {len(text)} characters, over the cap of {MAX_UPDATE_METADATA_BYTES}"
        )
    if not text.isascii():
        raise ProtocolError("AdapterUpdate metadata holds non-ASCII characters (every field is ASCII)")
    return text


def _update_metadata(text: str) -> dict[str, Any]:
    """The update's JSON fields: version first (an older device's update is ``unsupported_version``), then
    exactly the known keys (an unknown or missing key is malformed)."""
    meta = _parse_json(text, "AdapterUpdate metadata")
    if not isinstance(meta, dict):
        raise ProtocolError(f"AdapterUpdate metadata must be a JSON object, found {type(meta).__name__}")
    version = meta.get("protocol_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"AdapterUpdate.protocol_version {version!r} is not supported by this build (speaks {PROTOCOL_VERSION}); "
            "update privtune on the older side",
            reason=RejectionReason.UNSUPPORTED_VERSION,
        )
    _check_keys("AdapterUpdate metadata", meta, set(UPDATE_METADATA_FIELDS))
    _require_version("AdapterUpdate", meta["protocol_version"])
    return meta


def _int_list(value: object, where: str, *, max_len: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > max_len:
        raise ProtocolError(f"{where} must be a JSON array of at most {max_len} ints, found {str(value)[:80]}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ProtocolError(f"{where} must hold ints >= 0, found {str(value)[:80]}")
    return tuple(value)


def _tensor_entry(name: str, entry: object) -> _TensorEntry:
    where = f"AdapterUpdate safetensors tensor {name[:80]!r}"
    if not _TENSOR_NAME_RE.fullmatch(name):
        raise ProtocolError(f"{where}: the name must match {_TENSOR_NAME_RE.pattern}")
    if not isinstance(entry, dict) or entry.keys() != {"dtype", "shape", "data_offsets"}:
        raise ProtocolError(f"{where} must be an object with exactly dtype, shape and data_offsets")
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in _SAFETENSORS_ITEMSIZE:
        raise ProtocolError(f"{where} has the unknown dtype {str(dtype)[:20]!r}")
    shape = _int_list(entry["shape"], f"{where} shape", max_len=MAX_TENSOR_DIMS)
    offsets = _int_list(entry["data_offsets"], f"{where} data_offsets", max_len=2)
    if len(offsets) != 2 or offsets[0] > offsets[1]:
        raise ProtocolError(f"{where} data_offsets must be [begin, end] with begin <= end, found {list(offsets)}")
    return _TensorEntry(name, dtype, shape, offsets[0], offsets[1])


def _tensor_layout(header: Mapping[str, Any], data_len: int) -> list[_TensorEntry]:
    """The header's tensors in data order, after checking that their byte ranges tile the data exactly
    (contiguous from 0, each as long as dtype x shape needs, the last ending at the end of the body)."""
    names = [k for k in header if k != _SAFETENSORS_METADATA]
    if not 1 <= len(names) <= MAX_UPDATE_TENSORS:
        raise ProtocolError(f"AdapterUpdate must hold 1..{MAX_UPDATE_TENSORS} tensors, found {len(names)}")
    entries = sorted((_tensor_entry(n, header[n]) for n in names), key=lambda e: (e.begin, e.end))
    position = 0
    for e in entries:
        needed = math.prod(e.shape) * _SAFETENSORS_ITEMSIZE[e.dtype]
        if e.begin != position:
            raise ProtocolError(f"AdapterUpdate tensor {e.name!r} starts at byte {e.begin}, expected {position}")
        if e.end - e.begin != needed:
            raise ProtocolError(
                f"AdapterUpdate tensor {e.name!r} spans {e.end - e.begin} bytes, its {e.dtype} shape "
                f"{list(e.shape)} needs {needed}"
            )
        position = e.end
    if position != data_len:
        raise ProtocolError(f"AdapterUpdate tensors cover {position} bytes of data, the body has {data_len}")
    return entries


def _tensor_arrays(blob: bytes, data_start: int, entries: list[_TensorEntry]) -> dict[str, np.ndarray]:
    """Copies of the tensors' bytes as float32/float16 arrays (``wrong_dtype`` for any other dtype)."""
    view = memoryview(blob)
    arrays: dict[str, np.ndarray] = {}
    for e in entries:
        dtype = _NUMPY_DTYPES.get(e.dtype)
        if dtype is None:
            raise ProtocolError(
                f"AdapterUpdate tensor {e.name!r} has dtype {e.dtype}, not F32/F16 (float32/float16)",
                reason=RejectionReason.WRONG_DTYPE,
            )
        count = (e.end - e.begin) // dtype.itemsize
        flat = np.frombuffer(view, dtype=dtype, count=count, offset=data_start + e.begin)
        arrays[e.name] = flat.astype(dtype.newbyteorder("="), copy=True).reshape(e.shape)
    return arrays


def decode_update(blob: bytes) -> AdapterUpdate:
    """Parse and validate bytes from ``encode_update``; ``ProtocolError`` (with its ``reason``) on anything
    malformed, and nothing else, whatever the bytes.

    The safetensors header is parsed here, not by the safetensors library, so every bound is checked
    before anything is allocated: the header length (``MAX_UPDATE_HEADER_BYTES``), strict JSON (no
    repeated key, ints within 64 bits, no NaN/inf, bounded nesting), the metadata string's length
    (``MAX_UPDATE_METADATA_BYTES``) and exact key set, the tensor count (``MAX_UPDATE_TENSORS``), and
    byte ranges that tile the data exactly as dtype x shape requires.
    """
    if not isinstance(blob, bytes | bytearray):
        raise ProtocolError(f"AdapterUpdate body must be bytes, found {type(blob).__name__}")
    if len(blob) > MAX_UPDATE_BYTES:
        raise ProtocolError(
            f"AdapterUpdate body is {len(blob)} bytes, over the cap of {MAX_UPDATE_BYTES}",
            reason=RejectionReason.TOO_LARGE,
        )
    body = bytes(blob)
    header, data_start = _read_safetensors_header(body)
    meta = _update_metadata(_metadata_string(header))
    entries = _tensor_layout(header, len(body) - data_start)
    tensors = _tensor_arrays(body, data_start, entries)
    fields = {k: v for k, v in meta.items() if k != "dp"}
    return AdapterUpdate(**fields, dp=DpConfig.from_dict(meta["dp"]), tensors=tensors)


def update_mac(body: bytes, secret: bytes) -> str:
    """HMAC-SHA256 (hex) of an encoded update under the device's secret."""
    if len(secret) < 16:
        raise ProtocolError(f"device secret must be at least 16 bytes, found {len(secret)}")
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_update_mac(body: bytes, secret: bytes, mac: object) -> bool:
    """Constant-time check of ``update_mac``; False (never an exception) for a ``mac`` that is not
    64 lowercase hex characters, e.g. a header value with non-ASCII characters."""
    if not isinstance(mac, str) or not _MAC_RE.fullmatch(mac):
        return False
    return hmac.compare_digest(update_mac(body, secret), mac)


# --------------------------------------------------------------------------- receipts + errors


@dataclass(frozen=True)
class UpdateReceipt:
    """What the aggregator returns for an accepted update (the same bytes again → the same receipt)."""

    round_id: int
    device_id: str
    update_sha256: str
    accepted_at_unix: float
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _require_version("UpdateReceipt", self.protocol_version)
        _require_int("UpdateReceipt", "round_id", self.round_id, minimum=0)
        _require_str("UpdateReceipt", "device_id", self.device_id, pattern=_ID_RE)
        _require_sha256("UpdateReceipt", "update_sha256", self.update_sha256)
        _require_float("UpdateReceipt", "accepted_at_unix", self.accepted_at_unix, low=0.0, low_open=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol_version": self.protocol_version,
            "round_id": self.round_id,
            "device_id": self.device_id,
            "update_sha256": self.update_sha256,
            "accepted_at_unix": self.accepted_at_unix,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UpdateReceipt:
        _check_keys("UpdateReceipt", data, set(cls.__dataclass_fields__))
        return cls(**data)


@dataclass(frozen=True)
class ErrorBody:
    """A 4xx response body: a machine-readable reason code and a human message."""

    reason: RejectionReason
    message: str

    def __post_init__(self) -> None:
        if not isinstance(self.reason, RejectionReason):
            raise _fail("ErrorBody", "reason", f"must be one of {[r.value for r in RejectionReason]}", self.reason)
        _require_str("ErrorBody", "message", self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason.value, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorBody:
        _check_keys("ErrorBody", data, {"reason", "message"})
        try:
            reason = RejectionReason(data["reason"])
        except ValueError as exc:
            raise ProtocolError(f"ErrorBody.reason is not a known reason code, found {data['reason']!r}") from exc
        return cls(reason=reason, message=data["message"])
