# Every target sets up what it needs: `make run` and `make test` work on a fresh machine.
#
# Python: the newest Python 3.11 or later found on PATH, or the one given as PYTHON=...
# (`make test PYTHON=python3.11`). The virtualenv (VENV, default .venv) is made again when it
# was made with another Python version than the one chosen.
PYTHON_CANDIDATES := python3.14 python3.13 python3.12 python3.11 python3
# Exits 0 for a released CPython 3.11 or later.
SUPPORTED := import sys; sys.exit(not (sys.version_info >= (3, 11) and sys.version_info.releaselevel == "final"))
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in $(PYTHON_CANDIDATES); do $$p -c '$(SUPPORTED)' >/dev/null 2>&1 && { echo $$p; break; }; done)
endif
PYTHON_VERSION := $(if $(PYTHON),$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null))
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(PYTHON_VERSION)

.PHONY: run test lint bench sim clean venv

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no Python 3.11 or later found on PATH (tried $(PYTHON_CANDIDATES)); install one, or name it: make $(MAKECMDGOALS) PYTHON=/path/to/python3.11" >&2; exit 1; }
	@$(PYTHON) -c '$(SUPPORTED)' >/dev/null 2>&1 || { echo "error: PYTHON=$(PYTHON) is not a released Python 3.11 or later" >&2; exit 1; }
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(PYTHON_VERSION)" ]; then \
		echo "$(VENV) was made with another Python version: making it again with $(PYTHON) ($(PYTHON_VERSION))"; \
		rm -rf $(VENV); \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed*
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/shoal demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

# Then the time to restore full redundancy after losing a node that held part of 1 GiB
# (bench/restore.py; RESTORE_ARGS="--size 128MiB" to shrink it).
bench: $(STAMP)
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/restore.py $(RESTORE_ARGS)

# The DHT simulation (docs/simulation.md); bench.py runs it too. SIM_ARGS="--nodes 100 --json".
sim: $(STAMP)
	$(BIN)/python -m shoal.dht.sim $(SIM_ARGS)

clean:
	rm -rf $(VENV) .venv-*/ build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
