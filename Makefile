# The command contract: CI and humans call these targets, nothing else.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv demo test unit integration lint format typecheck bench lock clean

help:
	@echo "make demo    set up, then run the pipeline on the bundled sample (embedded local default)"
	@echo "make test    set up, then lint, type-check and run every test suite"
	@echo "make bench   print the benchmark figures (bench/)"

# The virtualenv is rebuilt whenever the pinned dependencies change.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sluice demo

test: lint typecheck
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench.training
	$(PY) -m bench.predict
	$(PY) -m bench.pipeline

# Re-pin every transitive dependency after changing pyproject.toml.
lock:
	rm -rf /tmp/sluice-lock && $(PYTHON) -m venv /tmp/sluice-lock
	/tmp/sluice-lock/bin/pip install --quiet -e '.[dev]'
	/tmp/sluice-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
