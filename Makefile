# vitlab — `make help` lists the targets. Every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install vitlab with its dev tools (idempotent)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

train: install ## train the default model on the offline default dataset (ARGS="model=vit_hybrid ...")
	$(PY) src/train.py $(ARGS)

test: install ## run the fast test suite (< 10 min on 2 CPU cores)
	$(PY) -m pytest -q $(ARGS)

test-slow: install ## run the slow tests only
	$(PY) -m pytest -q -m slow $(ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check src tests

clean: ## remove run outputs (keeps .venv)
	rm -rf outputs multirun .pytest_cache
