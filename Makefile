# refign — `make help` lists the targets.
PY ?= .venv/bin/python
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: ## create .venv with the pinned stack (torch 2.12.1, mmcv 2.1.0 CPU ops, mmseg 1.2.2); idempotent
	bash scripts/install.sh

DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
demo: ## DAFormer + Refign on the embedded synthetic benchmark (~3 min): mIoU, Refign panels, prediction overview
	$(PY) -m refign.train task_name=demo trainer.max_steps=400 trainer.image_every=50 hydra.run.dir=$(DEMO_DIR)
	$(PY) -m refign.predict checkpoint=$(DEMO_DIR)/checkpoints/last.pt out_dir=$(DEMO_DIR)/predict hydra.run.dir=$(DEMO_DIR)/predict
	@echo "Refign's alignment and refinement: $(DEMO_DIR)/images/"
	@echo "predictions (image | ground truth | prediction): $(DEMO_DIR)/predict/target/overview.png"

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
