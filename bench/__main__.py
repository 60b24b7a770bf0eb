"""``python -m bench``: run every ``bench/bench_*.py`` module's ``main()``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main() -> int:
    modules = sorted(p.stem for p in Path(__file__).resolve().parent.glob("bench_*.py"))
    selected = [m for m in modules if not sys.argv[1:] or m in sys.argv[1:]]
    if not selected:
        print(f"no benchmark matches {sys.argv[1:]}; have {modules}", file=sys.stderr)
        return 2
    for name in selected:
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
