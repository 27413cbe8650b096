# histoxai: `make help` lists the targets. The README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MPLBACKEND := Agg

.DEFAULT_GOAL := help
.PHONY: help install demo repro test test-fast lint format tune dashboard bench mlflow-ui docker stack clean thesis

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## install Debian packages (chromium, postgresql) and the .venv with histoxai
	@scripts/setup.sh

demo: install ## main job: install, then `dvc repro` the whole pipeline on the embedded phantom
	@echo "Pipeline stages (dvc.yaml; each runs when its code, params or inputs changed):"
	@dvc stage list | sed 's/^/  /'
	@echo
	dvc repro
	@scripts/where.sh

repro: ## `dvc repro` the pipeline (no install step)
	dvc repro

test: install ## install, then run the whole test suite (slow, browser and PostgreSQL tests included)
	$(BIN)/pytest -q -p no:cacheprovider

test-fast: ## run the tests that are not marked slow
	$(BIN)/pytest -q -m "not slow"

lint: ## ruff lint and format check
	$(BIN)/ruff check src tuning dashboard tests benchmarks
	$(BIN)/ruff format --check src tuning dashboard tests benchmarks

format: ## ruff format and autofix
	$(BIN)/ruff format src tuning dashboard tests benchmarks
	$(BIN)/ruff check --fix src tuning dashboard tests benchmarks

tune: ## run a CPU-sized Optuna study on the phantom (tuning/spaces/; thesis.yaml is the thesis' Table 3.2)
	$(BIN)/histoxai tune --space tuning/spaces/phantom.yaml --study-name phantom-mdfa --n-trials 10

thesis: ## reproduce the thesis on MICROMEN (MICROMEN_ROOT=... WEIGHTS=... [PER_SAMPLE=1]; tracked: dvc repro thesis/dvc.yaml)
	@scripts/thesis.sh

dashboard: ## serve the dashboard on http://127.0.0.1:8050 for the last pipeline run
	$(BIN)/histoxai dashboard

mlflow-ui: ## browse runs and the model registry at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

bench: ## run the benchmarks (each prints a table and a ratio against its floor or peer)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

docker: ## build the histoxai image (CPU torch of the pinned version)
	docker build -t histoxai:latest .

stack: ## docker compose: MLflow server (PostgreSQL + MinIO), pipeline, dashboard (needs HISTOXAI_DASH_USERS)
	docker compose up -d

clean: ## remove pipeline outputs (data/, models/, reports/); the DVC cache stays
	rm -rf data models reports
