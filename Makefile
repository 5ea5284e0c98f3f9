# leadflow: `make run` runs the whole system, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
RUN_ARGS ?=
DEMO_ARGS ?=

.PHONY: install run test unit integration faults lint demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

run: install
	$(BIN)/leadflow run $(RUN_ARGS)

demo: install
	$(BIN)/leadflow demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q -m "not integration and not faults" $(PYTEST_ARGS)

integration: install
	$(BIN)/pytest -q -m "integration and not faults" $(PYTEST_ARGS)

faults: install
	$(BIN)/pytest -q -m faults $(PYTEST_ARGS)

test: lint unit integration faults

# Benchmarks (not part of `make test`): each stage beside its raw limit, ~30 min on 2 cores.
# BENCH_ARGS="--cases ingest_batch,scoring --quick" for a short run; see docs/benchmarks.md.
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf .leadflow .pytest_cache .mypy_cache .ruff_cache
