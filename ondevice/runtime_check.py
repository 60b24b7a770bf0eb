"""Start-up check that ONNX Runtime is the training build and nothing overwrote it.

``onnxruntime-training-cpu`` and plain ``onnxruntime`` (or -gpu, -openvino, ...) install into
the same ``onnxruntime`` module folder: whichever was installed last silently wins, and
the training API disappears or half-works. We refuse to start in that state.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

TRAINING_DISTRIBUTION = "onnxruntime-training-cpu"
TRAINING_VERSION = "1.19.2"
REPAIR_HINT = (
    "repair with: pip uninstall -y {conflicts} && "
    f"pip install --force-reinstall --no-deps {TRAINING_DISTRIBUTION}=={TRAINING_VERSION}"
)


class OnnxRuntimeInstallError(RuntimeError):
    """The installed ONNX Runtime cannot serve privtune; the message says how to repair it."""


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed_onnxruntime_distributions(path: Iterable[str] | None = None) -> dict[str, str]:
    """Every installed distribution whose name starts with ``onnxruntime`` → its version."""
    found: dict[str, str] = {}
    dists = (
        importlib.metadata.distributions(path=list(path)) if path is not None else importlib.metadata.distributions()
    )
    for dist in dists:
        name = dist.metadata["Name"]
        if name and _normalise(name).startswith("onnxruntime"):
            found[_normalise(name)] = dist.version
    return found


def check_onnxruntime_install(path: Iterable[str] | None = None) -> str:
    """Raise ``OnnxRuntimeInstallError`` unless exactly the pinned training build is installed.

    ``path`` restricts the search to given site directories (tests); by default ``sys.path``.
    Returns the installed training version.
    """
    found = installed_onnxruntime_distributions(path)
    conflicts = sorted(name for name in found if name != TRAINING_DISTRIBUTION)
    if conflicts:
        listed = ", ".join(f"{name} {found[name]}" for name in conflicts)
        raise OnnxRuntimeInstallError(
            f"{listed} is installed beside {TRAINING_DISTRIBUTION}: they share the 'onnxruntime' "
            "module folder, so the training API is overwritten or mixed. "
            + REPAIR_HINT.format(conflicts=" ".join(conflicts))
        )
    version = found.get(TRAINING_DISTRIBUTION)
    if version is None:
        raise OnnxRuntimeInstallError(
            f"{TRAINING_DISTRIBUTION} is not installed; run `make test` or `bash scripts/bootstrap.sh` "
            f"(or pip install {TRAINING_DISTRIBUTION}=={TRAINING_VERSION} on CPython 3.11)"
        )
    if version != TRAINING_VERSION:
        raise OnnxRuntimeInstallError(
            f"{TRAINING_DISTRIBUTION} {version} is installed, privtune is pinned to {TRAINING_VERSION} "
            f"(ONNX IR <= 10, opset <= 21); pip install {TRAINING_DISTRIBUTION}=={TRAINING_VERSION}"
        )
    return version
