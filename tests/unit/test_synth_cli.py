"""``privtune synth``'s flags reach the preset the pipeline runs (the pipeline itself is replaced here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from privtune.cli import app
from server_aggregator.synthetic import pipeline
from server_aggregator.synthetic.config import SynthConfig


@pytest.mark.parametrize(
    ("flags", "preset", "expected"),
    [
        ([], "quick", False),
        (["--relabel-synthetic"], "quick", True),
        ([], "full", True),
        (["--no-relabel-synthetic"], "full", False),
    ],
)
def test_relabel_synthetic_flag_overrides_the_presets_choice(
    flags: list[str], preset: str, expected: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[SynthConfig] = []

    def record(config: SynthConfig, progress: Any = None) -> dict[str, Any]:
        seen.append(config)
        raise ValueError("stopped by the test before any training")

    monkeypatch.setattr(pipeline, "run_synth", record)
    args = ["synth", "--out", str(tmp_path / "run"), "--data", str(tmp_path), "--preset", preset, *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "stopped by the test" in result.output, result.output
    assert len(seen) == 1 and seen[0].preset.name == preset
    assert seen[0].preset.relabel_synthetic is expected
