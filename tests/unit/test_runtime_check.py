"""The ONNX Runtime install guard, on crafted site folders and on the real environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ondevice.runtime_check import (
    TRAINING_DISTRIBUTION,
    TRAINING_VERSION,
    OnnxRuntimeInstallError,
    check_onnxruntime_install,
    installed_onnxruntime_distributions,
)


def fake_dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_real_environment_has_exactly_the_training_build() -> None:
    assert check_onnxruntime_install() == TRAINING_VERSION
    from onnxruntime.training import api, artifacts  # the training API really is there

    assert hasattr(artifacts, "generate_artifacts") and hasattr(api, "Module")


def test_plain_onnxruntime_beside_training_is_refused_with_repair_command(tmp_path: Path) -> None:
    fake_dist(tmp_path, TRAINING_DISTRIBUTION, TRAINING_VERSION)
    fake_dist(tmp_path, "onnxruntime", "1.20.1")
    with pytest.raises(OnnxRuntimeInstallError) as info:
        check_onnxruntime_install([str(tmp_path)])
    message = str(info.value)
    assert "onnxruntime 1.20.1 is installed beside onnxruntime-training-cpu" in message
    assert "pip uninstall -y onnxruntime &&" in message
    assert f"--force-reinstall --no-deps {TRAINING_DISTRIBUTION}=={TRAINING_VERSION}" in message


def test_other_builds_also_count_as_conflicts(tmp_path: Path) -> None:
    fake_dist(tmp_path, TRAINING_DISTRIBUTION, TRAINING_VERSION)
    fake_dist(tmp_path, "onnxruntime_gpu", "1.19.0")
    assert set(installed_onnxruntime_distributions([str(tmp_path)])) == {TRAINING_DISTRIBUTION, "onnxruntime-gpu"}
    with pytest.raises(OnnxRuntimeInstallError, match="onnxruntime-gpu 1.19.0"):
        check_onnxruntime_install([str(tmp_path)])


def test_missing_or_wrong_training_version(tmp_path: Path) -> None:
    with pytest.raises(OnnxRuntimeInstallError, match="is not installed"):
        check_onnxruntime_install([str(tmp_path)])
    fake_dist(tmp_path, TRAINING_DISTRIBUTION, "1.18.0")
    with pytest.raises(OnnxRuntimeInstallError, match="1.18.0 is installed, privtune is pinned to 1.19.2"):
        check_onnxruntime_install([str(tmp_path)])


def test_cli_refuses_to_start_when_plain_onnxruntime_is_present(tmp_path: Path) -> None:
    fake_dist(tmp_path, "onnxruntime", "1.20.1")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "privtune.cli", "info"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 3
    assert "onnxruntime 1.20.1 is installed beside" in result.stderr
