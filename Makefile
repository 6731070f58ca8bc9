# jobbridge: `make run` starts the whole system locally; `make test` proves it.
# Needs only Python 3.11+, pip, make and git: the virtualenv and every dependency are installed
# from pyproject.toml on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST := $(PY) -m pytest

.PHONY: help install run test test-unit test-integration test-e2e check-template clean

help:
	@echo "make run             start moto server, the API, the bridge and the workers on loopback"
	@echo "make test            unit, integration and end-to-end tests"
	@echo "make check-template  cfn-lint, sam validate --lint and sam build (no AWS account needed)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/jobbridge local run

test: $(STAMP)
	$(PYTEST) tests/unit tests/integration tests/e2e

test-unit: $(STAMP)
	$(PYTEST) tests/unit

test-integration: $(STAMP)
	$(PYTEST) tests/integration

test-e2e: $(STAMP)
	$(PYTEST) tests/e2e

check-template:
	bash scripts/check-template.sh

clean:
	rm -rf $(VENV) .aws-sam .jobbridge .pytest_cache
