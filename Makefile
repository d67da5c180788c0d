# vitlab — `make help` lists the targets. Every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow lint clean study-posemb study-posemb-tuned study-hybrid study-inductive-bias study-transfer study-distill study-mae report bench gpu-check gpu-carry docs docs-serve results

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

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
study-posemb-tuned: SEEDS ?= 0,1,2
# The flagship digit studies as kept in docs/results/ (issue 37's rules: equal optimiser steps at every
# data size, 35 full-data epochs, at least 3 seeds, 2 jobs side by side at one thread each).
PACK = hydra/launcher=pack hydra.launcher.cpu_jobs=2 hydra.launcher.threads_per_process=1
POSEMB_SEEDS ?= 0,1,2
HYBRID_SEEDS ?= 0,1,2,3,4
HYBRID_FRACTIONS ?= 0.1,0.25,1.0
BIAS_SEEDS ?= 0,1,2
BIAS_ARMS ?= mlp,rnn,pure,mimetic,spt_lsa,hybrid,cnn_small
BIAS_FRACTIONS ?= 0.1,1.0
DISTILL_SEEDS ?= 0,1,2
DISTILL_FRACTION ?= 0.1
DISTILL_TEACHER ?= cnn_small
TUNED_EPOCHS ?= 20
TUNED_TRIALS ?= 5
study-posemb: install ## positional-embedding ablation: 7 variants x 3 seeds (POSEMB_SEEDS=), 35 epochs, each probed at 24/40/48 px; about 15 min on 2 cores; then its report
	dir=outputs/studies/posemb_$$(date +%Y-%m-%d_%H-%M-%S); \
	$(STUDY) experiment=posemb_ablation seed=$(POSEMB_SEEDS) $(PACK) hydra.sweep.dir=$$dir $(ARGS) \
		|| echo "some runs failed: listed in the report"; \
	$(PY) -m vitlab.runs.report $$dir

study-posemb-tuned: install ## the same, fair: lr and weight decay tuned per variant on val (Optuna, 5 trials), best x 3 seeds, all 20 epochs (TUNED_TRIALS=, TUNED_EPOCHS=, SEEDS=); then its report
	dir=outputs/studies/posemb_tuned_$$(date +%Y-%m-%d_%H-%M-%S); \
	$(STUDY) experiment=posemb_tuned seed=$(SEEDS) trainer.max_epochs=$(TUNED_EPOCHS) \
		hydra.sweeper.optuna.n_trials=$(TUNED_TRIALS) hydra.sweep.dir=$$dir $(ARGS) || echo "some runs failed: listed in the report"; \
	$(PY) -m vitlab.runs.report $$dir

study-hybrid: install ## pure vs hybrid x fraction 0.1/0.25/1.0 (HYBRID_FRACTIONS=) x 5 seeds (HYBRID_SEEDS=), equal steps; then its report
	dir=outputs/studies/hybrid_$$(date +%Y-%m-%d_%H-%M-%S); \
	$(STUDY) experiment=hybrid_vs_pure seed=$(HYBRID_SEEDS) data.train_fraction=$(HYBRID_FRACTIONS) $(PACK) \
		hydra.sweep.dir=$$dir $(ARGS) || echo "some runs failed: listed in the report"; \
	$(PY) -m vitlab.runs.report $$dir

study-inductive-bias: install ## MLP, RNN, pure, mimetic, SPT+LSA, hybrid, small CNN (BIAS_ARMS=) x fraction 0.1/1.0 (BIAS_FRACTIONS=) x 3 seeds (BIAS_SEEDS=), equal steps, each run probed; then its report
	dir=outputs/studies/inductive_bias_$$(date +%Y-%m-%d_%H-%M-%S); \
	$(STUDY) experiment=inductive_bias bias=$(BIAS_ARMS) data.train_fraction=$(BIAS_FRACTIONS) seed=$(BIAS_SEEDS) \
		$(PACK) hydra.sweep.dir=$$dir $(ARGS) || echo "some runs failed: listed in the report"; \
	$(PY) -m vitlab.runs.report $$dir

study-distill: install ## DeiT distillation at small data: a small-image CNN teacher (DISTILL_TEACHER=) on 10 % (DISTILL_FRACTION=), then vit_micro with none/soft/hard distillation x 3 seeds (DISTILL_SEEDS=), equal steps; then its report
	dir=outputs/studies/distill_$$(date +%Y-%m-%d_%H-%M-%S); \
	$(STUDY) experiment=distill_teachers model=$(DISTILL_TEACHER) data.train_fraction=$(DISTILL_FRACTION) \
		study.equal_steps=true trainer.max_epochs=35 $(PACK) hydra.sweep.dir=$$dir/teachers && \
	$(STUDY) experiment=distill distill.teachers_dir=$$dir/teachers distill.teacher=$(DISTILL_TEACHER) \
		data.train_fraction=$(DISTILL_FRACTION) seed=$(DISTILL_SEEDS) $(PACK) hydra.sweep.dir=$$dir/students $(ARGS) \
		|| echo "some runs failed: listed in the report"; \
	$(PY) -m vitlab.runs.report $$dir/students

# any CIFAR-10 image folder, e.g. `unzip -q ../shared/datasets/cifar10-jpg.zip -d data/`
CIFAR_DIR ?= data/cifar10
PRETRAIN_EPOCHS ?= 6
PRETRAIN_FRACTION ?= 1.0
TRANSFER_SEEDS ?= 0,1,2
TRANSFER_FRACTIONS ?= 0.1
study-transfer: install ## pre-train vit_micro and vit_hybrid on CIFAR-10 (CIFAR_DIR=, PRETRAIN_FRACTION=, PRETRAIN_EPOCHS=), then fine-tuned vs scratch on digit fractions (TRANSFER_FRACTIONS=) x 3 seeds (TRANSFER_SEEDS=), equal steps; then its report
	dir=outputs/studies/transfer_$$(date +%Y-%m-%d_%H-%M-%S); \
	$(STUDY) experiment=transfer_pretrain data.data_dir=$(CIFAR_DIR) data.on_device=true \
		data.train_fraction=$(PRETRAIN_FRACTION) data.val_fraction=0.04 trainer.max_epochs=$(PRETRAIN_EPOCHS) \
		$(PACK) hydra.sweep.dir=$$dir/pretrain && \
	$(STUDY) experiment=transfer transfer.pretrain_dir=$$dir/pretrain seed=$(TRANSFER_SEEDS) \
		data.train_fraction=$(TRANSFER_FRACTIONS) $(PACK) hydra.sweep.dir=$$dir/finetune $(ARGS) \
		|| echo "some runs failed: listed in the report"; \
	$(PY) -m vitlab.runs.report $$dir/finetune

# MAE on the digits' own images and on 20 % of CIFAR-10's (labels unused, about equal steps), then the
# digits' labels at each fraction. Full version: `python src/train.py experiment=ssl_transfer` after longer MAE runs.
MAE_EPOCHS ?= 40
MAE_OTHER_EPOCHS ?= 5
MAE_OTHER_FRACTION ?= 0.2
SSL_EPOCHS ?= 20
SSL_FRACTIONS ?= 0.05,0.1,0.25,1.0
study-mae: SEEDS ?= 0,1,2
study-mae: install ## MAE pre-training on the digits' images and on CIFAR-10's (CIFAR_DIR=, MAE_EPOCHS=, MAE_OTHER_EPOCHS=, MAE_OTHER_FRACTION=), then scratch vs the two on digit fractions (SEEDS=, SSL_EPOCHS=, SSL_FRACTIONS=); then its report
	dir=outputs/studies/mae_$$(date +%Y-%m-%d_%H-%M-%S); \
	$(STUDY) experiment=mae_pretrain trainer.max_epochs=$(MAE_EPOCHS) hydra.run.dir=$$dir/pretrain/same && \
	$(STUDY) experiment=mae_pretrain data=unlabelled data.data_dir=$(CIFAR_DIR)/train data.img_size=32 \
		data.batch_size=32 data.train_fraction=$(MAE_OTHER_FRACTION) trainer.max_epochs=$(MAE_OTHER_EPOCHS) \
		hydra.run.dir=$$dir/pretrain/other && \
	$(STUDY) experiment=ssl_transfer ssl.pretrain_dir=$$dir/pretrain seed=$(SEEDS) \
		data.train_fraction=$(SSL_FRACTIONS) trainer.max_epochs=$(SSL_EPOCHS) hydra.sweep.dir=$$dir/finetune $(ARGS) \
		|| echo "some runs failed: listed in the report"; \
	$(PY) -m vitlab.runs.report $$dir/finetune

report: install ## table and plots of a sweep folder: make report SWEEP=outputs/train/multiruns/<time>
	$(PY) -m vitlab.runs.report $(SWEEP)

DOCS_STAMP := $(VENV)/.docs-stamp
$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,docs]"
	touch $(DOCS_STAMP)

results: install ## the results pages: tables and figures of every study folder in docs/results/data/
	$(PY) -m vitlab.runs.results_site docs/results

docs: $(DOCS_STAMP) results ## build the documentation site into site/, warnings (broken links) as errors
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(DOCS_STAMP) results ## preview the documentation at http://127.0.0.1:8000, rebuilt on every save
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

bench: install ## vitlab vs timm training and inference speed (ARGS="model=vit_small img_size=224 batch_size=16")
	$(PY) src/bench.py $(ARGS)

# GPU path check. With the project's venv: `make gpu-check ARGS="cifar=<cifar10-jpg.zip or folder>"`.
# On a GPU machine that cannot install (no network, no venv) but has torch, Lightning and timm:
# run `make gpu-carry` where pip works, carry $(GPU_CARRY)/ over with the checkout, then `make gpu-check`
# there installs the carried wheels into $(GPU_CARRY)/site and runs the same script with them.
GPU_CARRY ?= .gpu_carry
CIFAR_ZIP ?= ../shared/datasets/cifar10-jpg.zip
gpu-check: ## one GPU, a few minutes: benches, every preset x variant, CIFAR-10 runs, DDP; table + JSON (ARGS="dry=true": CPU)
	@if [ ! -x $(PY) ] && [ -d $(GPU_CARRY)/wheels ]; then \
		python3 -m pip install --quiet --no-index --no-deps --target $(GPU_CARRY)/site $(GPU_CARRY)/wheels/*.whl && \
		PYTHONPATH=$(GPU_CARRY)/site:$(GPU_CARRY)/stubs:src python3 src/gpu_check.py cifar=$(GPU_CARRY)/cifar10-jpg.zip $(ARGS); \
	else \
		$(MAKE) --no-print-directory install && $(PY) src/gpu_check.py $(ARGS); \
	fi

gpu-carry: install ## what `make gpu-check` needs on a GPU machine without network, into $(GPU_CARRY)/ (< 64 MiB)
	rm -rf $(GPU_CARRY) && mkdir -p $(GPU_CARRY)/wheels $(GPU_CARRY)/stubs/kornia_rs
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps -w $(GPU_CARRY)/wheels \
		$$($(PY) -c "from importlib.metadata import version as v; print(' '.join(f'{p}=={v(p)}' for p in \
		('hydra-core', 'omegaconf', 'antlr4-python3-runtime', 'kornia', 'submitit', 'cloudpickle', \
		 'hydra-submitit-launcher')))")
	# kornia imports its Rust image-file reader (5 MB) at start-up; the check reads no image files through it
	echo '"""Stand-in for kornia_rs (image file IO), unused by vitlab."""' > $(GPU_CARRY)/stubs/kornia_rs/__init__.py
	touch $(GPU_CARRY)/stubs/kornia_rs/io.py
	cp $(CIFAR_ZIP) $(GPU_CARRY)/ 2>/dev/null || echo "no $(CIFAR_ZIP): the CIFAR-10 steps will be skipped"
	du -sh $(GPU_CARRY)

lint: install ## ruff
	$(VENV)/bin/ruff check src tests

clean: ## remove run outputs (keeps .venv)
	rm -rf outputs multirun .pytest_cache
