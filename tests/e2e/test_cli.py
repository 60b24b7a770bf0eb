"""The installed `privtune` command, run as a user would (subprocess, real models and data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PRIVTUNE = Path(sys.executable).parent / "privtune"


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    if not PRIVTUNE.is_file():
        pytest.fail(f"{PRIVTUNE} is missing; install with `make test` (pip install -e .)")
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(PRIVTUNE), *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_info_json_reports_pins_models_and_data() -> None:
    result = run("info", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    components = {c["name"]: c for c in report["components"]}
    assert components["onnxruntime-training-cpu"]["installed"] == "1.19.2"
    assert components["torch"]["installed"].startswith("2.13.0")
    assert all(c["ok"] for c in components.values())
    assert report["models"]["encoder"]["packaged_dir"].endswith("model")
    assert report["models"]["generator"]["packaged_gguf"].endswith(".gguf")
    assert report["data"]["tweeteval"]["offensive"] == {"train": 11916, "val": 1324, "test": 860}


def test_info_table_is_readable() -> None:
    result = run("info")
    assert result.returncode == 0, result.stderr
    assert "onnxruntime-training-cpu" in result.stdout and "MISMATCH" not in result.stdout


def test_classify_packaged_encoder_smoke() -> None:
    result = run("classify", "--json", "have a lovely day", "you are a disgrace")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["text"] for r in rows] == ["have a lovely day", "you are a disgrace"]
    for row in rows:
        assert abs(row["safe"] + row["unsafe"] - 1.0) < 1e-5
    assert "head is untrained" in result.stderr


def test_classify_saved_model_and_file_input(classifier, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = classifier.save(tmp_path / "clf")
    texts = tmp_path / "texts.txt"
    texts.write_text("first line\n\nsecond line\n", encoding="utf-8")
    result = run("classify", "--json", "--model", str(folder), "--file", str(texts))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    expected = classifier.classify(["first line", "second line"])
    assert [r["text"] for r in rows] == ["first line", "second line"]
    for row, probs in zip(rows, expected, strict=True):
        assert abs(row["unsafe"] - float(probs[1])) < 1e-5
    assert "untrained" not in result.stderr


def test_classify_errors_are_clear(tmp_path: Path) -> None:
    result = run("classify")
    assert result.returncode == 2 and "give texts" in result.stderr
    result = run("classify", "--model", str(tmp_path), "hello")
    assert result.returncode == 2 and "not a privtune classifier" in result.stderr
    result = run("classify", "--file", str(tmp_path / "missing.txt"))
    assert result.returncode == 2 and "not found" in result.stderr


def test_classify_through_a_bundle_matches_the_device_classifier(bundle_dir: Path) -> None:
    from ondevice.inference import load_classifier

    texts = ["have a lovely day", "you are a disgrace 🤡", "Café crème, naïve — CJK 日本語 https://x.org"]
    for runtime, precision, extra in (
        ("executorch", "int8", ["--runtime", "executorch", "--precision", "int8"]),
        ("ort", "fp32", []),  # no --runtime/--precision: ORT fp32
    ):
        result = run("classify", "--json", "--bundle", str(bundle_dir), *extra, "--threads", "1", *texts)
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        device = load_classifier(bundle_dir, runtime, precision, threads=1, verify=False)
        expected = device.classify(texts)
        assert [r["text"] for r in rows] == texts
        for row, probs in zip(rows, expected, strict=True):
            assert set(row) == {"text", *device.labels}
            for label, p in zip(device.labels, probs, strict=True):
                assert abs(row[label] - float(p)) < 1e-6, (runtime, precision, row)
        assert "untrained" not in result.stderr


def test_classify_bundle_errors_are_clear(bundle_dir: Path, tmp_path: Path) -> None:
    result = run("classify", "--bundle", str(bundle_dir), "--runtime", "ort", "--precision", "int8", "hi")
    assert result.returncode == 2 and "has no precision 'int8'; it has ['fp32']" in result.stderr
    result = run("classify", "--bundle", str(bundle_dir), "--runtime", "tflite", "hi")
    assert result.returncode == 2 and "known runtimes: ['executorch', 'ort']" in result.stderr
    result = run("classify", "--runtime", "executorch", "hi")
    assert result.returncode == 2 and "need --bundle" in result.stderr
    result = run("classify", "--bundle", str(bundle_dir), "--model", str(tmp_path), "hi")
    assert result.returncode == 2 and "not both" in result.stderr
    result = run("classify", "--bundle", str(tmp_path), "hi")
    assert result.returncode == 2 and "manifest.json: not found" in result.stderr
    result = run("classify", "--bundle", str(bundle_dir), "fine", " ")
    assert result.returncode == 2 and "text 1 is empty" in result.stderr


def test_serve_refuses_class_weights_that_do_not_fit_the_bundle(bundle_dir: Path, tmp_path: Path) -> None:
    common = ("serve", "--db", f"sqlite:///{tmp_path / 'state.db'}", "--bundle", str(bundle_dir))
    common += ("--adapter", str(tmp_path), "--admin-token-file", str(tmp_path / "token"))
    result = run(*common, "--class-weights", "0.5,0.5,1")
    assert result.returncode == 2 and "gives 3 weights; the bundle has labels" in result.stderr
    result = run(*common, "--class-weights", "0.5,2")
    assert result.returncode == 2 and "DpConfig.class_weights must be <= 1.0, found 2.0" in result.stderr
    result = run(*common, "--class-weights", "card")
    assert result.returncode == 2 and "has no card.json" in result.stderr
    assert not (tmp_path / "state.db").exists(), "serve must refuse before it creates any state"
