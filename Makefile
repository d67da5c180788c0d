# vitlab — `make help` lists the targets. Every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow lint clean study-posemb study-posemb-tuned study-hybrid report bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

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

# Reduced studies on the offline digits, CPU: each < 30 min on 2 idle cores. Full versions:
# `python src/train.py experiment=posemb_ablation` / `experiment=posemb_tuned` / `experiment=hybrid_vs_pure`
# (any data=, trainer=).
STUDY = $(PY) src/train.py trainer=cpu trainer.enable_progress_bar=false
study-posemb study-posemb-tuned: SEEDS ?= 0,1,2
study-hybrid: SEEDS ?= 0,1
POSEMB_EPOCHS ?= 20
TUNED_EPOCHS ?= 12
TUNED_TRIALS ?= 5
HYBRID_EPOCHS ?= 30
study-posemb: install ## positional-embedding ablation, reduced: all 7 variants x 3 seeds x 20 epochs (SEEDS=, POSEMB_EPOCHS=); then its report
	dir=outputs/studies/posemb_$$(date +%Y-%m-%d_%H-%M-%S); \
	$(STUDY) experiment=posemb_ablation seed=$(SEEDS) \
		trainer.max_epochs=$(POSEMB_EPOCHS) hydra.sweep.dir=$$dir $(ARGS) || echo "some runs failed: listed in the report"; \
	$(PY) -m vitlab.report $$dir

study-posemb-tuned: install ## the same, fair: lr and weight decay tuned per variant on val (Optuna, 5 trials), best x 3 seeds, all 12 epochs (TUNED_TRIALS=, TUNED_EPOCHS=, SEEDS=); then its report
	dir=outputs/studies/posemb_tuned_$$(date +%Y-%m-%d_%H-%M-%S); \
	$(STUDY) experiment=posemb_tuned seed=$(SEEDS) trainer.max_epochs=$(TUNED_EPOCHS) \
		hydra.sweeper.optuna.n_trials=$(TUNED_TRIALS) hydra.sweep.dir=$$dir $(ARGS) || echo "some runs failed: listed in the report"; \
	$(PY) -m vitlab.report $$dir

study-hybrid: install ## pure vs hybrid x data fraction 0.1-1.0, reduced: 2 seeds x 30 epochs (SEEDS=, HYBRID_EPOCHS=); then its report
	dir=outputs/studies/hybrid_$$(date +%Y-%m-%d_%H-%M-%S); \
	$(STUDY) experiment=hybrid_vs_pure seed=$(SEEDS) trainer.max_epochs=$(HYBRID_EPOCHS) hydra.sweep.dir=$$dir $(ARGS) \
		|| echo "some runs failed: listed in the report"; \
	$(PY) -m vitlab.report $$dir

report: install ## table and plots of a sweep folder: make report SWEEP=outputs/train/multiruns/<time>
	$(PY) -m vitlab.report $(SWEEP)

bench: install ## vitlab vs timm training and inference speed (ARGS="model=vit_small img_size=224 batch_size=16")
	$(PY) src/bench.py $(ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check src tests

clean: ## remove run outputs (keeps .venv)
	rm -rf outputs multirun .pytest_cache
