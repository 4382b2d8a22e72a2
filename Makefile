# Two entry points for a fresh machine with Python >= 3.11 and pip:
#   make demo   - install into .venv, run the whole pipeline on the embedded synthetic benchmark,
#                 then print its figures beside the range measured for them
#   make test   - install into .venv, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
CORES ?= all

.PHONY: install demo test lint report show-report clean-results mutate pin-e2e

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/python -m ccafl demo-summary --results results/synthetic --expected docs/demo-spread.json

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

# The finished demo's front page (results/synthetic/report/index.html), in the browser.
show-report: install
	$(BIN)/python -m ccafl open-report --results results/synthetic

clean-results:
	rm -rf results/* logs .snakemake
