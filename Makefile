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
	@# DP synthetic data -> base classifier -> export -> `privtune serve` -> emulated phones -> report
	@# (~20-25 min on 2 cores; every stage is cached, so a re-run resumes where it stopped).
	$(BIN)/privtune demo --out $(DEMO_DIR)
	$(BIN)/privtune verify $(DEMO_BUNDLE)
	$(BIN)/privtune classify --model $(DEMO_DIR)/synth/eps-4/classifier "have a lovely day, friend" "@user you are a disgrace, shut up"

bench: venv
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
