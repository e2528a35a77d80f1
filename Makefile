# Flywheel: the two commands are `make demo` and `make test`. Both create/update .venv themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
# uv does not read pip's find-links setting: hand it the same location (the local CPU torch wheel) when set.
export UV_FIND_LINKS ?= $(PIP_FIND_LINKS)
export UV_LINK_MODE ?= copy
STAMP := $(VENV)/.installed

.PHONY: help venv lock lint typecheck test test-fast demo stop bench clean audit

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q "uv==$(UV_VERSION)"

# --compile-bytecode: write the .pyc files at install time. Where PYTHONDONTWRITEBYTECODE is set (as on
# the CI machines) Python never writes them, and every `ml-tasks` process then recompiles torch, feast,
# mlflow... on import (torch 4.4 s -> 2.0 s once compiled); the install takes ~2 min longer instead.
$(STAMP): $(UV) pyproject.toml requirements.lock
	@start=$$(date +%s); \
	$(UV) pip install --compile-bytecode --python $(PY) -c requirements.lock -e '.[dev]' && \
	echo "venv ready in $$(( $$(date +%s) - start )) s"
	@touch $(STAMP)

venv: $(STAMP)  ## create or update .venv from the lock

lock: $(UV)  ## re-resolve requirements.lock from pyproject.toml
	scripts/lock.sh

lint: venv  ## ruff + mypy + the import layers (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	scripts/check_secrets.sh

test: venv lint  ## lint, type-check, then the whole test suite (unit, integration, dags, e2e)
	scripts/run_tests.sh

audit: venv  ## known vulnerabilities of requirements.lock (pip-audit; policy in scripts/audit_lock.py)
	$(PY) scripts/audit_lock.py

test-fast: venv  ## unit + dag tests only, on two cores
	$(VENV)/bin/pytest -q -n 2 --durations=10 tests/unit tests/dags

demo: venv  ## start the local platform (Airflow, PostgreSQL, MLflow server, Redis), run the demo stages
	$(PY) -m scripts.demo

stop:  ## stop the local platform started by `make demo` (Airflow, MLflow, Redis, PostgreSQL)
	$(PY) -m scripts.airflow_local stop

# each bench writes bench/results/parts/<bench>.json; one that fails still lets the others run (-), and
# bench/report.py merges the parts into bench/results/latest.json + the README table (exit 1 above a bound)
bench: venv  ## benchmarks (ratios against floors measured in the same run), one table in the README
	rm -f bench/results/parts/*.json
	-$(PY) bench/dag_parse.py
	-$(PY) bench/step_startup.py
	-$(PY) bench/etl_throughput.py
	-$(PY) bench/feature_materialize.py --mem-limit-gb 6
	-$(PY) bench/feature_training_set.py
	-$(PY) bench/train_throughput.py
	-$(PY) bench/predict_throughput.py
	-$(PY) bench/monitor_scale.py
	-$(PY) bench/demo_stages.py
	$(PY) bench/report.py --readme README.md

clean: stop  ## stop, then remove local state (.flywheel: metadata DBs, runs, data) but keep the venv
	rm -rf .flywheel

.PHONY: images tools helm-check

images:  ## build the ml-tasks and airflow images with buildah (root; docs/deploy.md)
	scripts/images/build.sh

tools:  ## fetch the pinned helm and checkov into .tools/ (git-ignored)
	scripts/tools/fetch.sh

helm-check: venv tools  ## the chart checks, offline: lint, render, validate, checkov, the contract
	$(VENV)/bin/pytest -q -p no:xdist tests/deploy/test_charts.py tests/deploy/test_contract.py
