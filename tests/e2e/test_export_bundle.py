"""`privtune export` as a whole: manifest, hashes, tamper detection, atomicity, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from export.bundle import ExportError, check_output_dir, classifier_for_export, export_bundle
from export.bundle_types import ExportOptions
from export.classifier import Classifier
from ondevice.bundle import BundleError, file_sha256, load_manifest, verify_bundle
from ondevice.protocol import LoraSpec, ProtocolError

EXPECTED_ROLES = {
    ("ort", "training_model"),
    ("ort", "eval_model"),
    ("ort", "optimizer_adamw"),
    ("ort", "optimizer_sgd"),
    ("ort", "checkpoint"),
    ("ort", "inference_model"),
    ("executorch", "inference_fp32"),
    ("executorch", "inference_int8"),
    ("executorch", "training"),
    ("executorch", "per_example_grads"),
    ("tokenizer", "tokenizer"),
    ("common", "adapter"),
}


def test_manifest_lists_every_file_with_its_hash(bundle_dir: Path) -> None:
    manifest = verify_bundle(bundle_dir)
    roles = {(f.backend, f.role) for f in manifest.files}
    assert roles >= EXPECTED_ROLES
    on_disk = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()}
    assert on_disk == {f.path for f in manifest.files} | {"manifest.json"}
    for entry in manifest.files:
        assert file_sha256(bundle_dir / entry.path) == entry.sha256
    assert manifest.trainable_numel == 74_498 and len(manifest.trainable) == 26
    assert manifest.labels == ("safe", "unsafe") and manifest.max_seq_len == 128
    assert (bundle_dir / "tokenizer" / "vocab.txt").is_file()


def test_adapter_file_holds_the_trainable_tensors_in_manifest_shapes(bundle_dir: Path) -> None:
    manifest = load_manifest(bundle_dir)
    adapter = load_file(bundle_dir / manifest.file("adapter").path)
    assert {s.name: s.shape for s in manifest.trainable} == {k: v.shape for k, v in adapter.items()}
    lora_b = adapter["encoder.layer.0.attention.self.query.lora_B.weight"]
    assert np.abs(lora_b).max() > 0  # the session bundle was exported from a perturbed adapter


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "copy"))


def test_one_flipped_byte_is_detected_and_named(bundle_copy: Path) -> None:
    target = bundle_copy / "ort" / "training_model.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"ort/training_model.onnx: sha256 .* does not match"):
        verify_bundle(bundle_copy)


def test_missing_truncated_and_bad_manifest_are_named(bundle_copy: Path) -> None:
    (bundle_copy / "executorch" / "inference_int8.pte").unlink()
    with pytest.raises(BundleError, match=r"inference_int8.pte: listed in the manifest .* but missing"):
        verify_bundle(bundle_copy)
    shutil.copy(bundle_copy / "tokenizer" / "vocab.txt", bundle_copy / "executorch" / "inference_int8.pte")
    with pytest.raises(BundleError, match=r"inference_int8.pte: \d+ bytes, the manifest says"):
        verify_bundle(bundle_copy)
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["protocol_version"] = 999
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest.json: .*999 is not supported"):
        verify_bundle(bundle_copy)
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json: not found"):
        verify_bundle(bundle_copy)


def test_existing_out_needs_force_and_unwritable_parent_is_refused(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    with pytest.raises(ExportError, match="already exists; pass --force"):
        check_output_dir(tmp_path / "b", force=False)
    check_output_dir(tmp_path / "b", force=True)
    with pytest.raises(ExportError, match="does not exist"):
        check_output_dir(tmp_path / "no" / "b", force=False)


def test_unwritable_location_fails_before_any_export(classifier: Classifier) -> None:
    with pytest.raises(ExportError, match="cannot write in /sys"):
        export_bundle(classifier, "/sys/privtune-bundle", ExportOptions(backends=("ort",)))


class Interrupt(Exception):
    pass


def _interrupt_at(stage: str):  # type: ignore[no-untyped-def]
    def progress(message: str) -> None:
        if message == f"exporting {stage}":
            raise Interrupt(message)

    return progress


def test_failure_mid_export_leaves_no_partial_bundle(classifier: Classifier, tmp_path: Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(Interrupt):
        export_bundle(classifier, out, ExportOptions(backends=("ort",)), progress=_interrupt_at("ort"))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_failure_with_force_keeps_the_old_bundle(bundle_copy: Path, classifier: Classifier) -> None:
    before = file_sha256(bundle_copy / "manifest.json")
    with pytest.raises(Interrupt):
        export_bundle(classifier, bundle_copy, ExportOptions(), force=True, progress=_interrupt_at("adapter"))
    assert file_sha256(bundle_copy / "manifest.json") == before
    verify_bundle(bundle_copy)
    assert sorted(p.name for p in bundle_copy.parent.iterdir()) == ["copy"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "./no/such/model"}, "no such folder"),
        ({"model": None, "lora": LoraSpec(targets=("q_proj",))}, r"target module\(s\) \['q_proj'\] not found"),
        ({"model": None, "lora": LoraSpec(rank=1000)}, "exceeds the encoder's hidden size 384"),
        ({"model": None, "max_seq_len": 1024}, "max_seq_len"),
        ({"model": "someone/unknown-model"}, "not available offline"),
    ],
)
def test_bad_model_arguments_are_clear(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ExportError, match=message):
        classifier_for_export(**kwargs)  # type: ignore[arg-type]


def test_bad_lora_and_options_are_refused() -> None:
    with pytest.raises(ProtocolError, match=r"LoraSpec.rank must be >= 1, found 0"):
        LoraSpec(rank=0)
    with pytest.raises(ValueError, match=r"backends must be distinct names from \['ort', 'executorch'\]"):
        ExportOptions(backends=("tflite",))
    with pytest.raises(ValueError, match="max_seq_len must be an int in 8..512"):
        ExportOptions(max_seq_len=600)


def test_saved_classifier_keeps_its_own_spec(classifier: Classifier, tmp_path: Path) -> None:
    folder = classifier.save(tmp_path / "clf")
    clf, trained = classifier_for_export(folder)
    assert trained and clf.spec == classifier.spec
    with pytest.raises(ExportError, match="was trained with LoRA"):
        classifier_for_export(folder, lora=LoraSpec(rank=4))
    with pytest.raises(ExportError, match="has labels"):
        classifier_for_export(folder, labels=("ok", "bad"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "privtune"
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(exe), "export", *args], capture_output=True, text=True, env=env, timeout=600)


def test_cli_errors_exit_2_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "b"
    for args, message in [
        (["--backends", "tflite"], "backends must be distinct names"),
        (["--rank", "0"], "LoraSpec.rank must be >= 1"),
        (["--targets", "q_proj"], "not found in the encoder"),
        (["--model", "./missing-model"], "no such folder"),
    ]:
        result = _cli("--out", str(out), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert not out.exists()
    out.mkdir()
    result = _cli("--out", str(out))
    assert result.returncode == 2 and "pass --force" in result.stderr


def test_cli_verify_reports_ok_and_names_damage(bundle_copy: Path) -> None:
    exe = Path(sys.executable).parent / "privtune"
    good = subprocess.run([str(exe), "verify", str(bundle_copy)], capture_output=True, text=True, timeout=120)
    assert good.returncode == 0 and "ok" in good.stdout and "74498 parameters" in good.stdout
    (bundle_copy / "tokenizer" / "vocab.txt").write_text("tampered")
    bad = subprocess.run([str(exe), "verify", str(bundle_copy)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "tokenizer/vocab.txt" in bad.stderr
