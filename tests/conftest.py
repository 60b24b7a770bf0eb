"""Shared fixtures. Tests run offline: models come from the packaged weights, data from
``../shared/data`` (or ``$PRIVTUNE_DATA_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def offensive_dir() -> Path:
    from ondevice.data import tweeteval_task_dir

    return tweeteval_task_dir("offensive")


@pytest.fixture(scope="session")
def hate_dir() -> Path:
    from ondevice.data import tweeteval_task_dir

    return tweeteval_task_dir("hate")


@pytest.fixture(scope="session")
def classifier():  # type: ignore[no-untyped-def]
    """One fresh classifier (packaged MiniLM + LoRA r8 on query/value + 2-label head), seed 0.

    Tests that change its weights must restore them (``trainable_state`` / ``load_trainable_state``).
    """
    import torch

    from export.classifier import build_classifier

    torch.set_num_threads(2)
    return build_classifier(seed=0)


def perturb_trainable(clf, seed: int, scale: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    """Add seeded Gaussian noise to every trainable tensor (so lora_B is non-zero)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in clf.trainable_parameters().values():
            param.add_(scale * torch.randn(param.shape, generator=generator))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full bundle (ORT + ExecuTorch, int8, AdamW + SGD) exported once per test session from
    its own classifier (packaged encoder, seed 0, trainable tensors perturbed with seed 123).

    ``PRIVTUNE_TEST_BUNDLE=<dir>`` reuses a bundle exported earlier (a developer shortcut while
    iterating; CI never sets it, so CI always tests a fresh export)."""
    import os

    import torch

    reuse = os.environ.get("PRIVTUNE_TEST_BUNDLE")
    if reuse:
        return Path(reuse)

    from export.bundle import export_bundle
    from export.bundle_types import ExportOptions
    from export.classifier import build_classifier

    torch.set_num_threads(2)
    clf = build_classifier(seed=0)
    perturb_trainable(clf, seed=123)
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    export_bundle(clf, out, ExportOptions())
    clf.save(out.parent / "classifier")  # the base classifier folder the aggregator publishes from
    return out


@pytest.fixture(scope="session")
def classifier_dir(bundle_dir: Path) -> Path:
    """The classifier folder ``bundle_dir`` was exported from (``PRIVTUNE_TEST_CLASSIFIER`` when the
    bundle is reused through ``PRIVTUNE_TEST_BUNDLE``)."""
    reuse = os.environ.get("PRIVTUNE_TEST_CLASSIFIER")
    folder = Path(reuse) if reuse else bundle_dir.parent / "classifier"
    if not (folder / "classifier.json").is_file():
        pytest.fail(f"{folder}: no classifier folder beside the bundle; set PRIVTUNE_TEST_CLASSIFIER")
    return folder


@pytest.fixture(scope="session")
def manifest(bundle_dir: Path):  # type: ignore[no-untyped-def]
    """The session bundle's verified manifest (modules may define their own ``manifest``)."""
    from ondevice.bundle import verify_bundle

    return verify_bundle(bundle_dir)


@pytest.fixture(scope="session")
def global_params(bundle_dir: Path, manifest):  # type: ignore[no-untyped-def]
    """The session bundle's exported trainable tensors (float32, canonical names, manifest order)."""
    import numpy as np
    from safetensors.numpy import load_file

    adapter = load_file(str(bundle_dir / manifest.file("adapter").path))
    return {s.name: np.asarray(adapter[s.name], dtype=np.float32) for s in manifest.trainable}


@pytest.fixture()
def tmp_config(tmp_path: Path, bundle_dir: Path, classifier_dir: Path):  # type: ignore[no-untyped-def]
    """``build(**overrides)`` → a ``ServerConfig`` in ``tmp_path`` over the session bundle (server tests)."""
    from tests.server_harness import make_config

    def build(**overrides):  # type: ignore[no-untyped-def]
        return make_config(tmp_path, bundle_dir, classifier_dir, **overrides)

    return build
