# Two entry points for a fresh machine with Python >= 3.11 and pip:
#   make demo   - install into .venv, run the whole pipeline on the embedded synthetic benchmark
#   make test   - install into .venv, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
CORES ?= all

.PHONY: install demo test lint report clean-results mutate pin-e2e

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/snakemake --cores $(CORES)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check ccafl tests benchmarks scripts
	$(BIN)/ruff format --check ccafl tests benchmarks scripts
	$(BIN)/snakefmt --check workflow
	$(BIN)/snakemake --lint

# Before a release: small deliberate bugs in the core modules; lists those no test catches.
mutate: install
	nice -n 19 $(BIN)/python scripts/mutate.py

# When a change is meant to move the e2e metrics: regenerate tests/e2e/pinned.json.
pin-e2e: install
	$(BIN)/python -m tests.e2e.pin

report: install
	$(BIN)/snakemake --report report.html

clean-results:
	rm -rf results/* logs .snakemake
