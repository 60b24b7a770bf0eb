"""The pins `privtune info` checks agree with constraints.txt, and the venv matches them."""

from __future__ import annotations

import re

from privtune.components import PINNED, component_versions
from tests.conftest import REPO_ROOT


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_every_pinned_component_is_in_constraints_with_the_same_version() -> None:
    constraints = _constraints()
    for name, version in PINNED.items():
        assert name in constraints, f"{name} missing from constraints.txt"
        if version.endswith(".*"):
            assert constraints[name].startswith(version[:-1]), (name, constraints[name])
        else:
            assert constraints[name] == version, (name, constraints[name])


def test_installed_versions_match_the_pins() -> None:
    bad = [(c.name, c.installed, c.pinned) for c in component_versions() if not c.ok]
    assert bad == []


def test_plain_onnxruntime_is_not_in_constraints() -> None:
    assert "onnxruntime" not in _constraints()
