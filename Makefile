# clipad: every target creates .venv and installs on first use; later runs reuse it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline-friendly defaults: no W&B prompt, no hub look-ups for the demo.
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: help install demo app test bench bench-gpu lint clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch/torchvision first, pinned to the pair on this machine's disk (a looser range can pull GBs).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,export,sweep,logging,app]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install clipad with all extras (idempotent)

demo: $(STAMP)  ## offline end-to-end run: synthetic data, tiny random backbone, train + zero-shot test
	$(PY) train.py experiment=demo

# The newest checkpoint `make demo` left (outputs/demo/<run>/checkpoints/last.ckpt); APP_ARGS adds options.
DEMO_CKPT = $(shell ls -t outputs/demo/*/checkpoints/last.ckpt 2>/dev/null | head -n 1)

app: $(STAMP)  ## inspection app in the browser on the newest `make demo` checkpoint (APP_ARGS='port=...')
	@test -n "$(DEMO_CKPT)" || { echo "make app: no outputs/demo/*/checkpoints/last.ckpt: run make demo first" >&2; exit 2; }
	$(PY) -m clipad.app ckpt_path=$(DEMO_CKPT) $(APP_ARGS)

test: $(STAMP)  ## run the test suite (no network, no pretrained weights)
	$(PY) -m pytest -q

bench: $(STAMP)  ## benchmarks: timing tables, never fail on time (BENCH_ARGS=--quick: ~2 min)
	$(PY) bench/run_all.py $(BENCH_ARGS)

bench-gpu: $(STAMP)  ## GPU tables: ViT-L@518 batch 1/8 fp32/bf16, AdaCLIP train memory (says so without CUDA)
	$(PY) bench/run_all.py --device cuda

lint: $(STAMP)  ## ruff
	$(PY) -m ruff check src tests bench train.py evaluate.py

clean:  ## remove run outputs (keeps .venv and the data cache)
	rm -rf outputs multirun wandb .pytest_cache
