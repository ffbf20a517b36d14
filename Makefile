# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bare-install lint typecheck bench venv tools clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/deputy demo

# Node 22, the official MCP conformance suite and the test OpenID Provider (oidc-provider), into .cache/ (npm registry only).
tools:
	scripts/install-conformance.sh >/dev/null
	scripts/install-oidc-provider.sh >/dev/null

# `pip install .` without extras into a fresh venv (not .venv), then `deputy --help` and `deputy demo`:
# what pyproject.toml declares must be enough to run Deputy (.ci/run runs it before `make test`).
bare-install:
	PYTHON=$(PYTHON) scripts/bare-install-check.sh

lint: $(STAMP)
	$(BIN)/ruff check deputy tests bench scripts examples
	$(BIN)/mypy

# Three workers on two cores, each test file whole on one of them: most of the suite waits on Deputy, identity
# provider and upstream processes, not the CPU (two workers left a third of the CPU idle).
test: $(STAMP) tools lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 3 --dist loadfile --durations=25

bench: $(STAMP)
	$(BIN)/python bench/tools_call.py

clean:
	rm -rf $(VENV) .cache .deputy
