# refign — `make help` lists the targets.
PY ?= .venv/bin/python
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: ## create .venv with the pinned stack (torch 2.12.1, mmcv 2.1.0 CPU ops, mmseg 1.2.2); idempotent
	bash scripts/install.sh

demo: ## train source-only on the embedded synthetic benchmark; prints source-val and target-val mIoU
	$(PY) -m refign.train uda=source_only task_name=demo

test: ## the test suite (CPU, < 10 min on 2 cores; `slow` tests excluded)
	$(PY) -m pytest -q

test-slow: ## the slow tests only
	$(PY) -m pytest -q -m slow

lint: ## ruff lint + format check
	$(PY) -m ruff check refign tests scripts
	$(PY) -m ruff format --check refign tests scripts

clean: ## remove run outputs and caches (keeps .venv)
	rm -rf outputs .pytest_cache .ruff_cache

.PHONY: help install demo test test-slow lint clean
