# privtune: `make demo` (the main job) and `make test` set everything up themselves.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PACKAGES := privtune export ondevice server_aggregator bench
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv test lint typecheck pytest demo bench clean

venv:
	@bash scripts/bootstrap.sh

lint: venv
	$(BIN)/ruff check $(PACKAGES) tests

typecheck: venv
	$(BIN)/mypy

# pytest exit code 5 means "no tests collected": reported, not treated as a pass of anything.
pytest: venv
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test: lint typecheck pytest

DEMO_DIR ?= build/demo
DEMO_BUNDLE ?= $(DEMO_DIR)/bundle

demo: venv
	$(BIN)/privtune info
	@# DP synthetic data -> the base classifier (quick preset, ~10 min; every stage is cached: a re-run resumes).
	$(BIN)/privtune synth --out $(DEMO_DIR)/synth --preset quick --epsilon 4
	$(BIN)/privtune classify --model $(DEMO_DIR)/synth/eps-4/classifier "have a lovely day, friend" "@user you are a disgrace, shut up"
	@# Export once (several minutes: ExecuTorch lowering); later runs only re-verify the cached bundle.
	@if [ -f $(DEMO_BUNDLE)/manifest.json ]; then echo "reusing $(DEMO_BUNDLE)"; \
	else $(BIN)/privtune export --model $(DEMO_DIR)/synth/eps-4/classifier --out $(DEMO_BUNDLE); fi
	$(BIN)/privtune verify $(DEMO_BUNDLE)

bench: venv
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
