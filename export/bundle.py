"""Write a phone bundle atomically: backends' artifacts + tokenizer + adapter + manifest.json.

Layout::

    BUNDLE/
      manifest.json                 ArtifactManifest: every file below with sha256, backend, role
      tokenizer/                    tokenizer.json, vocab.txt, tokenizer_config.json
      adapter/adapter.safetensors   the trainable tensors the bundle was exported with (canonical names)
      ort/...                       ONNX Runtime Training artifacts + inference model
      executorch/...                ExecuTorch inference (fp32/int8), training and per-example programs

Everything is built in a hidden sibling folder and renamed into place at the end, so a
failure or an interrupt never leaves a half bundle at ``--out``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from export.bundle_types import ExportOptions, WrittenFile
from export.classifier import DEFAULT_LABELS, Classifier, ClassifierFormatError
from ondevice.bundle import MANIFEST_FILE, TOKENIZER_ROLE, file_sha256
from ondevice.durable import new_staging_dir, replace_dir
from ondevice.protocol import ArtifactFile, ArtifactManifest, LoraSpec, ProtocolError

ADAPTER_PATH = "adapter/adapter.safetensors"
TOKENIZER_DIR = "tokenizer"

Progress = Callable[[str], None]


class ExportError(ValueError):
    """The export cannot run as asked; the message says what to change. Nothing was written."""


@dataclass(frozen=True)
class ExportReport:
    """What ``export_bundle`` produced and how long each stage took (seconds)."""

    manifest: ArtifactManifest
    bundle_dir: Path
    stage_seconds: dict[str, float]


def classifier_for_export(
    model: str | Path | None,
    *,
    lora: LoraSpec | None = None,
    labels: tuple[str, ...] | None = None,
    max_seq_len: int = 128,
    seed: int = 0,
) -> tuple[Classifier, bool]:
    """The classifier to export and whether its head is trained.

    ``model`` is a saved classifier folder (its own LoRA spec and labels win; conflicting
    ``lora``/``labels`` are refused), or an encoder (``None``/``packaged``, a folder, a hub
    id) that gets a fresh LoRA adapter and an untrained head.
    """
    from export.classifier import CONFIG_FILE, ClassifierSpec, build_classifier, load_classifier
    from export.model_store import ModelNotFoundError

    try:
        if model is not None and (Path(model) / CONFIG_FILE).is_file():
            clf = load_classifier(model)
            if lora is not None and lora != clf.spec.lora:
                raise ExportError(
                    f"{model} was trained with LoRA {clf.spec.lora}; --rank/--alpha/--targets differ ({lora})"
                )
            if labels is not None and labels != clf.spec.labels:
                raise ExportError(f"{model} has labels {list(clf.spec.labels)}; --labels says {list(labels)}")
            return clf, True
        if model is not None and _looks_like_path(str(model)) and not Path(model).exists():
            raise ExportError(
                f"--model {model}: no such folder (give a classifier folder, an encoder folder, or 'packaged')"
            )
        spec = ClassifierSpec(labels=labels or DEFAULT_LABELS, lora=lora or LoraSpec(), max_seq_len=max_seq_len)
        encoder = None if model is None or str(model) == "packaged" else model
        return build_classifier(encoder, spec, seed=seed), False
    except (ModelNotFoundError, ClassifierFormatError, ProtocolError) as exc:
        raise ExportError(str(exc)) from exc
    except ValueError as exc:
        if isinstance(exc, ExportError):
            raise
        raise ExportError(str(exc)) from exc


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text


def check_output_dir(out: Path, *, force: bool) -> None:
    """Refuse an existing ``out`` without ``force`` and an unwritable parent, before any work."""
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; remove it or choose another --out")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ExportError(f"{parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"{parent} is not writable; choose another --out")


def _write_tokenizer(clf: Classifier, staging: Path) -> list[WrittenFile]:
    target = staging / TOKENIZER_DIR
    clf.tokenizer.save_pretrained(target)
    vocab = clf.base_model_path / "vocab.txt"
    if vocab.is_file() and not (target / "vocab.txt").is_file():
        shutil.copy2(vocab, target / "vocab.txt")  # the Android WordPiece tokenizer reads it
    if not (target / "tokenizer.json").is_file():
        raise ExportError(f"the tokenizer of {clf.base_model_id} has no fast tokenizer.json; it cannot run on a phone")
    files = []
    for item in sorted(target.iterdir()):
        role = TOKENIZER_ROLE if item.name == "tokenizer.json" else f"tokenizer_{item.stem}"
        files.append(WrittenFile(f"{TOKENIZER_DIR}/{item.name}", "tokenizer", role))
    return files


def _write_adapter(clf: Classifier, staging: Path) -> WrittenFile:
    path = staging / ADAPTER_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: np.ascontiguousarray(value) for name, value in clf.trainable_state().items()}
    save_file(state, str(path), metadata={"base_model_sha256": clf.base_model_sha256})
    return WrittenFile(ADAPTER_PATH, "common", "adapter")


def _run_backend(name: str, clf: Classifier, staging: Path, options: ExportOptions) -> list[WrittenFile]:
    if name == "ort":
        from export.ort_backend import export_ort

        return export_ort(clf, staging, options)
    if name == "executorch":
        from export.executorch_backend import export_executorch

        return export_executorch(clf, staging, options)
    raise ExportError(f"unknown backend {name!r}")  # ExportOptions already refuses these


def build_manifest(
    clf: Classifier, options: ExportOptions, staging: Path, files: list[WrittenFile]
) -> ArtifactManifest:
    """Hash every written file and describe the bundle."""
    from privtune import __version__

    entries = []
    for written in sorted(files, key=lambda f: f.path):
        path = staging / written.path
        if not path.is_file():
            raise ExportError(f"backend {written.backend} reported {written.path} but did not write it")
        entries.append(
            ArtifactFile(written.path, file_sha256(path), written.backend, written.role, path.stat().st_size)
        )
    return ArtifactManifest(
        base_model_id=clf.base_model_id,
        base_model_sha256=clf.base_model_sha256,
        lora=clf.spec.lora,
        trainable=clf.trainable_specs(),
        max_seq_len=options.max_seq_len,
        labels=clf.spec.labels,
        tokenizer_sha256=file_sha256(staging / TOKENIZER_DIR / "tokenizer.json"),
        files=tuple(entries),
        privtune_version=__version__,
    )


def export_bundle(
    clf: Classifier, out: str | Path, options: ExportOptions, *, force: bool = False, progress: Progress | None = None
) -> ExportReport:
    """Export ``clf`` for every backend in ``options`` into ``out`` (atomic; see module docstring)."""
    out = Path(out).absolute()
    check_output_dir(out, force=force)
    if options.max_seq_len > clf.spec.max_seq_len:
        raise ExportError(
            f"--max-seq-len {options.max_seq_len} exceeds the classifier's max_seq_len {clf.spec.max_seq_len}"
        )
    if clf.spec.lora.dropout != 0.0:
        raise ExportError(
            f"LoRA dropout must be 0 for export (per-example DP gradients), found {clf.spec.lora.dropout}"
        )
    say = progress or (lambda _message: None)
    try:
        staging = new_staging_dir(out)
    except OSError as exc:
        raise ExportError(f"cannot write in {out.parent} ({exc.strerror}); choose another --out") from exc
    seconds: dict[str, float] = {}
    try:
        files: list[WrittenFile] = []
        for stage in ("tokenizer", "adapter", *options.backends):
            say(f"exporting {stage}")
            start = time.perf_counter()
            if stage == "tokenizer":
                files.extend(_write_tokenizer(clf, staging))
            elif stage == "adapter":
                files.append(_write_adapter(clf, staging))
            else:
                files.extend(_run_backend(stage, clf, staging, options))
            seconds[stage] = time.perf_counter() - start
        say("hashing files and writing manifest.json")
        manifest = build_manifest(clf, options, staging, files)
        (staging / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportReport(manifest, out, seconds)
