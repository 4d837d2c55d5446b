# Esteira: `make demo` runs the belt on the embedded stack, `make test` runs the tests.
# Everything is created on demand: a clean clone needs only Python 3.11+ on PATH.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV := $(BIN)/uv
PYTEST := $(BIN)/pytest
ESTEIRA := $(BIN)/esteira

.DEFAULT_GOAL := help
.PHONY: help setup up down status demo demo-short test test-unit test-integration test-e2e \
        test-production up-production down-production lint bench browser constraints clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

# Bytecode: uv compiles nothing by default (with --compile-bytecode, only what that run
# installs), and where PYTHONDONTWRITEBYTECODE is set nothing is ever cached, so every task
# process compiled mlflow, sklearn, evidently and Airflow again (imports 2-4x slower).
# compileall skips what is already compiled: about a minute on a new venv, ~6 s after.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) pip install --quiet --python $(BIN)/python -r requirements-dev.txt -e .
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the pinned requirements (quick when nothing changed)

up: setup  ## start the embedded stack: Airflow, MLflow, model server (safe to repeat)
	$(ESTEIRA) up

down:  ## stop every process of the embedded stack
	@test -x $(ESTEIRA) && $(ESTEIRA) down || echo "nothing to stop (no .venv)"

status: setup  ## show each service of the stack and its health
	$(ESTEIRA) status

demo: up  ## run the whole belt through the scheduler, then leave the stack running
	$(ESTEIRA) demo

demo-short: up  ## the demo over fewer days (what CI runs)
	$(ESTEIRA) demo --short

lint: setup  ## ruff, with Airflow's AIR rules
	$(BIN)/ruff check .

test: setup lint  ## ruff + unit, DAG and integration tests (the CI gate)
	$(PYTEST) -m "not e2e and not production" tests

test-unit: setup
	$(PYTEST) tests/unit tests/dags

test-integration: setup
	$(PYTEST) -m "integration" tests

browser:  ## Debian's chromium for the UI test (never a downloaded browser)
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test-e2e: setup browser  ## the running stack through its REST API and a real browser
	$(PYTEST) -m e2e tests

test-production: setup  ## CeleryExecutor on Postgres + Redis, fault injection
	$(PYTEST) -m production tests

up-production: setup  ## the production topology natively: CeleryExecutor on Postgres + Redis, MLflow on Postgres
	$(BIN)/python -m esteira.stack.production up

down-production:  ## stop every process of the native production topology
	@test -x $(BIN)/python && $(BIN)/python -m esteira.stack.production down || echo "nothing to stop (no .venv)"

bench: setup  ## benchmarks: each prints its ratio against a baseline measured in the same run
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

constraints: setup  ## re-freeze constraints.txt after changing requirements*.txt
	$(UV) pip freeze --python $(BIN)/python --exclude-editable > constraints.tmp
	(echo "# Every package of the resolved set, dev tools included, pinned exactly."; \
	 echo "# Regenerate: make constraints (after changing requirements*.txt)."; \
	 cat constraints.tmp) > constraints.txt && rm constraints.tmp

clean: down  ## remove the venv and all local state (.esteira/)
	rm -rf $(VENV) .esteira
