"""Publishing global adapters in PEFT form, one immutable folder per version.

``<publish_dir>/v000003/`` holds ``adapter_config.json`` + ``adapter_model.safetensors`` (the
encoder's LoRA, PEFT key names: ``PeftModel.from_pretrained(AutoModel(base), folder)`` loads it),
``head.safetensors``, ``classifier.json`` and the tokenizer files copied from the base classifier,
plus ``version.json`` (version, round, sha256 of the canonical trainable tensors). A folder is
written under a temporary name and renamed into place, so a reader never sees half a version;
publishing the same version again with the same tensors is a no-op (resumable).

Bundles: the ORT Training and ExecuTorch training programs take the adapter as parameters (the
device loads the published tensors into them), so a new adapter version needs no new bundle. A
bundle is re-exported only when the graph changes: another base model, LoRA rank/targets/alpha,
labels or max sequence length (the manifest hash then changes and old updates are refused).
The inference programs bake the adapter in; a device classifies with the current adapter through
the ORT eval graph or re-exported inference programs (issue 7's evaluation path).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import safetensors.numpy

from ondevice.bundle import BundleError
from ondevice.durable import atomic_write_bytes, new_staging_dir, replace_dir
from ondevice.protocol import ArtifactManifest, TensorSpec, canonical_json

ADAPTER_FILE = "adapter_model.safetensors"
HEAD_FILE = "head.safetensors"
CLASSIFIER_FILE = "classifier.json"
VERSION_FILE = "version.json"
PEFT_PREFIX = "base_model.model."
HEAD_PREFIX = "head."
CARD_FILE = "card.json"
_TEMPLATE_SKIP = {ADAPTER_FILE, HEAD_FILE, VERSION_FILE, CARD_FILE, "README.md"}
_PUBLIC_CARD_KEYS = ("format", "format_version", "model", "description", "privacy")
PUBLIC_CARD_NOTE = (
    "Published copy: only what the DP releases cover is kept (the privacy ledger and this model's metrics on "
    "the public test split). The seed set's size, its label counts, validation metrics, settings and "
    "baselines are left out. The ledger's sampling rates q = B/n imply the seed-set size n; that size is "
    "treated as public (add/remove accounting) and is not covered by ε."
)


def public_card(card: Mapping[str, object]) -> dict[str, object]:
    """The part of a model card that may leave the server with every published version."""
    public: dict[str, object] = {key: card[key] for key in _PUBLIC_CARD_KEYS if key in card}
    metrics = card.get("metrics")
    if isinstance(metrics, Mapping) and "real_test" in metrics:
        public["metrics"] = {"real_test": metrics["real_test"]}
    public["published_note"] = PUBLIC_CARD_NOTE
    return public


class PublishError(RuntimeError):
    """The base classifier and the bundle disagree, or a published version is damaged."""


def params_sha256(params: Mapping[str, np.ndarray]) -> str:
    """sha256 of the canonical safetensors encoding of float32 tensors in name order."""
    return hashlib.sha256(encode_params(params)).hexdigest()


def encode_params(params: Mapping[str, np.ndarray]) -> bytes:
    """Deterministic safetensors bytes (float32, names sorted) for storage and download."""
    arrays = {k: np.ascontiguousarray(params[k], dtype=np.float32) for k in sorted(params)}
    blob: bytes = safetensors.numpy.save(arrays)
    return blob


def decode_params(blob: bytes, trainable: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Inverse of ``encode_params``, checked against the manifest's trainable specs."""
    loaded = safetensors.numpy.load(blob)
    expected = {s.name: tuple(s.shape) for s in trainable}
    if set(loaded) != set(expected):
        raise PublishError(f"stored adapter keys differ from the manifest's: {sorted(set(loaded) ^ set(expected))[:3]}")
    for name, shape in expected.items():
        if tuple(loaded[name].shape) != shape:
            raise PublishError(f"stored adapter {name} has shape {loaded[name].shape}, manifest says {shape}")
    return {s.name: np.asarray(loaded[s.name], dtype=np.float32) for s in trainable}


def bundle_adapter(bundle_dir: Path, manifest: ArtifactManifest) -> dict[str, np.ndarray]:
    """The bundle's exported trainable tensors (version 0 of the global adapter)."""
    path = bundle_dir / manifest.file("adapter").path
    try:
        loaded = safetensors.numpy.load_file(str(path))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read the bundle's adapter: {exc}") from exc
    missing = [s.name for s in manifest.trainable if s.name not in loaded]
    if missing:
        raise BundleError(f"{path}: lacks trainable tensors {missing[:3]}")
    return {s.name: np.asarray(loaded[s.name], dtype=np.float32) for s in manifest.trainable}


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PublishError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PublishError(f"{path}: not a JSON object")
    return data


class Publisher:
    """Writes versions of the global adapter as PEFT folders next to the base classifier's files."""

    def __init__(self, base_dir: Path, publish_dir: Path, manifest: ArtifactManifest) -> None:
        self.base_dir = Path(base_dir)
        self.publish_dir = Path(publish_dir)
        self.manifest = manifest
        self._check_base()

    def _check_base(self) -> None:
        """The base classifier must be the one the bundle was exported from (same weights, spec, labels)."""
        for name in (CLASSIFIER_FILE, "adapter_config.json", ADAPTER_FILE, HEAD_FILE):
            if not (self.base_dir / name).is_file():
                raise PublishError(
                    f"{self.base_dir / name}: missing; --adapter must be a classifier folder saved by privtune"
                )
        config = _read_json(self.base_dir / CLASSIFIER_FILE)
        m = self.manifest
        mismatches = [
            (key, config.get(key), want)
            for key, want in (
                ("base_model_sha256", m.base_model_sha256),
                ("labels", list(m.labels)),
                ("lora", m.lora.to_dict()),
            )
            if config.get(key) != want
        ]
        if mismatches:
            key, found, want = mismatches[0]
            raise PublishError(
                f"{self.base_dir / CLASSIFIER_FILE}: {key} is {found!r} but the bundle was exported with {want!r}; "
                "pass the classifier folder the bundle was exported from"
            )
        base = self.read_params(self.base_dir)
        expected = {s.name for s in self.manifest.trainable}
        if set(base) != expected:
            raise PublishError(
                f"{self.base_dir}: trainable tensors {sorted(set(base) ^ expected)[:3]} differ from the bundle's"
            )

    def read_params(self, folder: Path) -> dict[str, np.ndarray]:
        """The canonical trainable tensors stored in a classifier or published folder."""
        lora = safetensors.numpy.load_file(str(folder / ADAPTER_FILE))
        head = safetensors.numpy.load_file(str(folder / HEAD_FILE))
        params = {k.removeprefix(PEFT_PREFIX): v for k, v in lora.items()}
        params.update(head)
        return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}

    def base_params(self) -> dict[str, np.ndarray]:
        return self.read_params(self.base_dir)

    def remove_partials(self) -> list[Path]:
        """Delete staging folders a crash mid-publish left behind (``.v000003.partial-…``); the removed paths."""
        if not self.publish_dir.is_dir():
            return []
        removed = [p for p in self.publish_dir.iterdir() if p.is_dir() and ".partial-" in p.name]
        for path in removed:
            shutil.rmtree(path)
        return removed

    def file_hashes(self, version: int) -> dict[str, str]:
        """sha256 of every file in a published version folder (what start-up re-checks)."""
        folder = self.version_dir(version)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}

    def damaged_files(self, version: int, expected: Mapping[str, str]) -> list[str]:
        """Files of a published version that are missing, extra or differ from ``expected``."""
        folder = self.version_dir(version)
        if not folder.is_dir():
            return ["<folder missing>"]
        found = self.file_hashes(version)
        return sorted(name for name in set(found) | set(expected) if found.get(name) != expected.get(name))

    def version_dir(self, version: int) -> Path:
        return self.publish_dir / f"v{version:06d}"

    def publish(self, version: int, round_id: int | None, params: Mapping[str, np.ndarray]) -> Path:
        """Write version ``version`` (idempotent for the same tensors); returns its folder."""
        digest = params_sha256(params)
        target = self.version_dir(version)
        if target.exists():
            info = _read_json(target / VERSION_FILE)
            if info.get("params_sha256") != digest:
                raise PublishError(f"{target}: already published with other tensors (sha {info.get('params_sha256')})")
            return target
        self.publish_dir.mkdir(parents=True, exist_ok=True)
        staging = new_staging_dir(target)
        try:
            for item in sorted(self.base_dir.iterdir()):
                if item.is_file() and item.name not in _TEMPLATE_SKIP:
                    shutil.copy2(item, staging / item.name)
            if (self.base_dir / CARD_FILE).is_file():
                card = public_card(_read_json(self.base_dir / CARD_FILE))
                atomic_write_bytes(staging / CARD_FILE, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
            lora = {
                PEFT_PREFIX + k: np.ascontiguousarray(v, dtype=np.float32)
                for k, v in params.items()
                if not k.startswith(HEAD_PREFIX)
            }
            head = {
                k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items() if k.startswith(HEAD_PREFIX)
            }
            atomic_write_bytes(staging / ADAPTER_FILE, safetensors.numpy.save(lora, metadata={"format": "pt"}))
            atomic_write_bytes(staging / HEAD_FILE, safetensors.numpy.save(head, metadata={"format": "pt"}))
            info = {
                "version": version,
                "round_id": round_id,
                "params_sha256": digest,
                "manifest_hash": self.manifest.manifest_hash(),
            }
            atomic_write_bytes(staging / VERSION_FILE, (canonical_json(info) + "\n").encode())
            replace_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target
