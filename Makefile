# jobbridge: `make run` starts the whole system locally; `make test` proves it.
# Needs only Python 3.11+, pip, make and git: the virtualenv and every dependency are installed
# from pyproject.toml on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST := $(PY) -m pytest

.PHONY: help install lint run test test-unit test-integration test-e2e check-template check-openapi clean check-security fuzz soak bench bench-quick

help:
	@echo "make run             start moto server, the API, the bridge and the workers on loopback"
	@echo "make test            unit, integration and end-to-end tests"
	@echo "make lint            ruff over the whole tree"
	@echo "make check-template  cfn-lint, sam validate --lint and sam build (no AWS account needed)"
	@echo "make check-security  checkov over template.yaml: no finding left unexplained"
	@echo "make check-openapi   the published OpenAPI documents generate clients that work (openapi-python-client)"
	@echo "make fuzz            schemathesis, long run (FUZZ_EXAMPLES=1000)"
	@echo "make soak            the local stack under faults and load (SOAK_ARGS=\"--jobs 2000 --fault-rate 0.05\")"
	@echo "make bench           cold starts, hot path, AWS calls and cost per job, latency and CPU vs Celery (< 15 min)"
	@echo "make bench-quick     the same, fewer runs and jobs (about 5 min)"

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' -e './clients/python[cli]'
	@touch $(STAMP)

install: $(STAMP)

# ruff over the whole tree (rules in pyproject.toml); ruff comes with the dev extra.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

run: $(STAMP)
	$(VENV)/bin/jobbridge local run

# tests/security attacks the make-run API over HTTP; tests/fuzz is a short bounded schemathesis run.
test: $(STAMP)
	$(PYTEST) tests/unit tests/integration tests/e2e tests/security tests/fuzz

test-unit: $(STAMP)
	$(PYTEST) tests/unit

test-integration: $(STAMP)
	$(PYTEST) tests/integration

test-e2e: $(STAMP)
	$(PYTEST) tests/e2e

check-template:
	bash scripts/check-template.sh

check-security:
	bash scripts/check-security.sh

check-openapi: $(STAMP)
	bash scripts/check-openapi.sh

FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	JOBBRIDGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) tests/fuzz -p no:cacheprovider --timeout 3600

SOAK_ARGS ?=
soak: $(STAMP)
	$(PY) -m soak $(SOAK_ARGS)

# make bench: one table, every figure beside its baseline (docs/PERFORMANCE.md); bench/results.json.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench

bench-quick: $(BENCH_STAMP)
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) .aws-sam .jobbridge .pytest_cache
