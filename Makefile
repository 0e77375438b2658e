# One command each: setup, test, demo, bench, lint. Works on a fresh Debian 12 with python3 (3.11).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
AZURITE := .ci/node/node_modules/.bin/azurite-blob
AZURITE_VERSION := 3.37.0
BENCH_ARGS ?=
# Test processes: most of the suite waits on servers and subprocesses, so 3 keep 2 cores busy (one test file
# per worker: a file's tests share its fixtures and run in order).
TEST_WORKERS ?= 3

.PHONY: setup test demo bench lint screenshots services azurite

# Bytecode is compiled here, once: this machine sets PYTHONDONTWRITEBYTECODE=1, so without it every `rivet` process
# compiled every module it imports from source (about 1.6 s each; docs/performance.md). Ours is recompiled each time
# (compileall skips files whose .pyc is current, so that is cheap).
setup: $(VENV)/.installed $(VENV)/.bytecode
	@$(PY) -m compileall -q engine rivet_tui

# The project itself is installed editable as a plain path (.pth, editable_mode=compat): setuptools' default import
# hook costs every Python process ~15 ms to install at start-up (docs/performance.md, sixth session).
# Redone only when the lock, the packaging or this file changes, or the venv is new. Debian's python3 ships venv without
# ensurepip: install python3-venv when the first attempt fails (and drop the half-made venv).
$(VENV)/.installed: requirements-dev.txt pyproject.toml Makefile
	@if [ ! -x $(PY) ]; then \
	  $(PYTHON) -m venv $(VENV) || { \
	    rm -rf $(VENV); echo "setup: installing python3-venv" >&2; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	    $(PYTHON) -m venv $(VENV); }; \
	fi
	@[ -x $(UV) ] || $(PY) -m pip install -q --disable-pip-version-check uv
	$(UV) pip install -q --python $(PY) --compile-bytecode -r requirements-dev.txt
	$(UV) pip install -q --python $(PY) --no-deps -C editable_mode=compat -e .
	@touch $@

# The dependencies' bytecode for a venv whose packages were installed before --compile-bytecode was (uv compiles
# only when it installs something): about 16 s once; files already compiled are skipped.
$(VENV)/.bytecode: $(VENV)/.installed
	$(PY) -m compileall -q -j 0 $(VENV)/lib/python*/site-packages >/dev/null
	@touch $@

services:
	scripts/services.sh

# The Azure Blob emulator for the object-store tests, into the git-ignored .ci/node/ (~30 s the first time).
# npm 11 blocks install scripts anyway and Azurite works without them.
azurite:
	@if [ -x $(AZURITE) ]; then :; \
	elif command -v npm >/dev/null; then \
	  mkdir -p .ci/node; \
	  npm install --no-audit --no-fund --ignore-scripts --no-package-lock --prefix .ci/node azurite@$(AZURITE_VERSION) >/dev/null; \
	else echo "azurite: npm not found; the Azure emulator tests cannot run" >&2; fi

test: setup services azurite
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

demo: setup
	scripts/demo.sh

# Peer-comparable numbers (bench.py), then the scale tests marked slow (exit 5 = none collected yet).
bench: setup services
	$(PY) scripts/bench.py $(BENCH_ARGS)
	$(PY) -m pytest -q -m slow tests || [ $$? -eq 5 ]

# Style (ruff), the layering contracts (import-linter: engine never imports the UI, no cycles in the run layer)
# and the engine's types (mypy; [tool.mypy] in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check engine rivet_tui tests scripts
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

screenshots: setup
	$(PY) -m rivet_tui.screenshots
