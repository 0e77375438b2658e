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

.PHONY: setup test demo bench lint screenshots services azurite

setup: $(VENV)/.installed

# Redone only when the lock or the packaging changes, or the venv is new. Debian's python3 ships venv without
# ensurepip: install python3-venv when the first attempt fails (and drop the half-made venv).
$(VENV)/.installed: requirements-dev.txt pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  $(PYTHON) -m venv $(VENV) || { \
	    rm -rf $(VENV); echo "setup: installing python3-venv" >&2; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	    $(PYTHON) -m venv $(VENV); }; \
	fi
	@[ -x $(UV) ] || $(PY) -m pip install -q --disable-pip-version-check uv
	$(UV) pip install -q --python $(PY) -r requirements-dev.txt
	$(UV) pip install -q --python $(PY) --no-deps -e .
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
	$(PY) -m pytest -q tests

demo: setup
	scripts/demo.sh

# Peer-comparable numbers (bench.py), then the scale tests marked slow (exit 5 = none collected yet).
bench: setup services
	$(PY) scripts/bench.py $(BENCH_ARGS)
	$(PY) -m pytest -q -m slow tests || [ $$? -eq 5 ]

lint: setup
	$(VENV)/bin/ruff check engine rivet_tui tests

screenshots: setup
	$(PY) -m rivet_tui.screenshots
