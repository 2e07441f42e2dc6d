# diffprobe: the user's menu (`make help`). Experiments are Python functions in diffprobe/experiments/
# (defaults: settings.toml, experiments.toml); a variable given here in upper case (make extract T=50
# B=19,24) overrides the setting of that name; DRY=1 prints an experiment's commands and store plans.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell cat setup.cfg pyproject.toml constraints.txt | sha256sum | cut -c1-12)
BENCH_OUT ?= evidence/bench
# RANDOM is handed over as an option: bash, the recipes' shell, keeps $RANDOM for itself and never exports it
experiment = $(PY) -m diffprobe experiment $(1) --from-env $(if $(DRY),--dry-run) $(if $(RANDOM),--set random=$(RANDOM))
needs_data = $(if $(filter-out fashion-mnist,$(or $(DATA),fashion-mnist)),,fashion-mnist)

.PHONY: help install test test-fast lint fashion-mnist slurm extract probe cka demo report paper sweep-demo sweep-full card-demo finetune demo-finetune demo-finetune-matched matrix demo-matrix \
  demo-finetune-cka demo-table demo-curve sample demo-gen train-demo verify datasets check-data blocks experiments bench bench-extract bench-workflow \
  bench-io bench-gpu bench-cka bench-batches bench-train bench-sampling bench-probe clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(VENV_STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' -c constraints.txt
	rm -f .venv/.installed-* && touch $@

install: $(VENV_STAMP) ## create .venv and install diffprobe with its pinned dependencies

fashion-mnist: ## make sure Fashion-MNIST's IDX files are there (installs the Debian package as root)
	@if [ -n "$$FASHION_MNIST_DIR" ] || [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or set FASHION_MNIST_DIR"; exit 1; fi

slurm: ## make sure slurm-wlm and munge are there for the matrix's SLURM test (installs them as root; else that test skips, saying why)
	@command -v slurmctld >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && (apt-get update -qq || true) && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } || echo "slurm-wlm not installed: the SLURM test will skip"

test: $(VENV_STAMP) fashion-mnist slurm ## run the test suite (CPU, a few minutes)
	$(PY) -m pytest -q tests

test-fast: $(VENV_STAMP) fashion-mnist ## the quick tier while working: every test not marked slow, in-process, each module touched
	$(PY) -m pytest -q -m "not slow" tests

lint: $(VENV_STAMP) ## ruff's checks and its formatting, checked over the whole tree (what CI runs first)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

# ---------------------------------------------------------------- the three commands and the demo
extract: $(VENV_STAMP) $(needs_data) ## extract features: make extract T=150 B=24 POOL=2 [MODEL= CKPT= RANDOM=1 DATA= DATA_ROOT= SPLITS= LIMIT= VIEWS= AUG= ORDER= DTYPE= OUT=folder|s3://bucket/prefix ARGS=]
	@$(call experiment,extract)

probe: $(VENV_STAMP) ## heads on the last extraction's stores: make probe HEAD=linear|mlp|cnn|attention|logreg|knn [LR= WD= PROBE_ARGS=]
	@$(call experiment,probe)

cka: $(VENV_STAMP) $(needs_data) ## CKA maps from the cache: blocks x blocks, timesteps x timesteps, trained x random weights [CKA_T= CKA_B= CKA_TS= CKA_LIMIT=]
	@$(call experiment,cka)

demo: $(VENV_STAMP) fashion-mnist ## the whole pipeline on the shipped demo model: extract -> linear probe (trained, random control, raw pixels) -> CKA -> table
	@$(call experiment,demo)

report: $(VENV_STAMP) ## one report from whatever results exist: report/report.md and a self-contained report/report.html (names what is missing)
	@$(call experiment,report)

# ---------------------------------------------------------------- the paper and the model card
paper: $(VENV_STAMP) ## one row of the paper's table as diffssl trains it, from K cached views: make paper ROW=linear-p1|linear-p2|mlp|attention|fusion|fgvc-<set> [DRY=1 VIEWS=8 VIEWS_MODE=draw|mean MODEL= CKPT= DATA= DATA_ROOT= SPLITS=]
	@$(call experiment,paper)

sweep-demo: $(VENV_STAMP) fashion-mnist ## the model card's sweep over all 37 blocks, t and pool: demo model, random control, pixels; curves into extract/weights/
	@$(call experiment,sweep-demo)

sweep-full: $(VENV_STAMP) fashion-mnist ## the sweep's grid completed with every block's full map at every t, and the best member by pool and block; RANDOM=1: the random control's own grid (about 13 GB of stores per model)
	@$(call experiment,sweep-full)

card-demo: $(VENV_STAMP) fashion-mnist ## the model card's all-images runs (trained, random, pixels, the BiGAN when its weights exist; about 45 min), members as CSV in evidence/
	@$(call experiment,card-demo)

demo-curve: $(VENV_STAMP) fashion-mnist ## the demo over training: linear probe at its best point and at t=150 b=24, and FD, for each snapshot of make train-demo's stages 2 and 3 (CURVE_RUN=runs/demo-fmnist) -> table and figure
	@$(call experiment,demo-curve)

demo-table: $(VENV_STAMP) fashion-mnist ## the demo's table in the paper's shape over seeds: diffusion (best block; t=150, b=24), BiGAN, MAE, random weights, pixels; linear heads, and attention where linear chose; mean, spread, intervals [SEEDS=0,1,2 HEAD_SEEDS=0,1,2 (paired k-th with k-th) LIMIT=]
	@$(call experiment,demo-table)

matrix: $(VENV_STAMP) ## models x datasets (x SEEDS) into one leaderboard; a rerun runs only missing or failed cells: make matrix MODELS=demo-fmnist,pixels DATASETS=fashion-mnist,digits [SEEDS= LIMIT= JOBS= KNN= ATTENTION=1 REFERENCE= DRY=1]
	@$(call experiment,matrix)

demo-matrix: $(VENV_STAMP) fashion-mnist ## the demo's models (best point, t=150 b=24, random control, BiGAN, MAE, classifier, pixels) x Fashion-MNIST and digits -> evidence/matrix/
	@$(call experiment,demo-matrix)

finetune: $(VENV_STAMP) $(needs_data) ## fine-tune the U-Net up to block B with a head: make finetune HEAD=linear|attention [MODEL= CKPT= DATA= DATA_ROOT= T= B= POOL= FINETUNE_ARGS=]
	@$(call experiment,finetune)

demo-finetune: $(VENV_STAMP) fashion-mnist ## fine-tuned encoder vs frozen heads at the demo's best block, and from random init (about 40 min on 2 cores)
	@$(call experiment,demo-finetune)

demo-finetune-matched: $(VENV_STAMP) fashion-mnist ## fine-tuned vs frozen at matched budgets: no augmentation, one head-lr grid, 15 epochs, raw features, validation selection, a paired interval (about 1.5 h)
	@$(call experiment,demo-finetune-matched)

demo-finetune-cka: $(VENV_STAMP) fashion-mnist ## CKA per block, frozen vs fine-tuned demo encoder (after make demo-finetune; a few minutes)
	@$(call experiment,demo-finetune-cka)

sample: $(VENV_STAMP) ## draw N images: make sample [MODEL= CKPT= RANDOM=1 SAMPLE_N= SAMPLE_STEPS= SAMPLER=ddpm|ddim SAMPLE_OUT= SAMPLE_ARGS=]
	@$(call experiment,sample)

demo-gen: $(VENV_STAMP) fashion-mnist ## demo samples (trained, random control, BiGAN if its weights exist) -> FD, precision, recall vs Fashion-MNIST test in a classifier's features -> table (GEN_N= GEN_STEPS=)
	@$(call experiment,demo-gen)

experiments: $(VENV_STAMP) ## list the experiments with their rows
	@$(PY) -m diffprobe experiment

# ---------------------------------------------------------------- tools
train-demo: $(VENV_STAMP) fashion-mnist ## train the demo U-Net as the shipped weights were, in three resumable stages (15,000 steps, about 5.5 h on 2 CPU cores), and export its EMA (fp16)
	@$(call experiment,train-demo)

verify: $(VENV_STAMP) ## check stores are whole (shards, checksums, NaN, consistency): make verify [STORE=path] (default: every store in OUT)
	@stores="$(or $(STORE),$(wildcard $(or $(OUT),cache)/*.zarr))"; test -n "$$stores" || { echo "no stores in $(or $(OUT),cache): give STORE=path"; exit 1; }; \
	$(PY) -m extract verify $$stores

datasets: $(VENV_STAMP) ## the dataset registry: splits, official sizes, options, expected layout of each
	$(PY) -m extract datasets

check-data: $(VENV_STAMP) ## validate a dataset tree before extracting: make check-data DATA=imagenet DATA_ROOT=/data/imagenet
	$(PY) -m extract check-data --data $(or $(DATA),fashion-mnist) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(ARGS)

blocks: $(VENV_STAMP) ## print a model's block numbering: make blocks MODEL=adm256-uncond
	$(PY) -m extract blocks --model $(or $(MODEL),demo-fmnist)

clean: ## remove the feature caches (not .venv, not the committed evidence/)
	rm -rf $(or $(OUT),cache)

# ---------------------------------------------------------------- benchmarks (results in $(BENCH_OUT))
bench: $(VENV_STAMP) fashion-mnist ## every CPU benchmark in one run (about an hour, most of it bench-workflow's on-line arms): tables in $(BENCH_OUT)/bench.txt, JSON beside
	@mkdir -p $(BENCH_OUT)
	@set -o pipefail; { echo "make bench, $$(date -u +%Y-%m-%dT%H:%MZ), $$(nproc) cores, $$(uname -m)"; \
	  $(MAKE) --no-print-directory bench-extract bench-probe bench-cka bench-io bench-workflow; } | tee $(BENCH_OUT)/bench.txt
bench-extract: $(VENV_STAMP) ## early exit vs the full forward (adm256 b=24, tiny, tiny-sd, tiny-dit) and cached latents vs VAE encoding, one run
	$(PY) -m extract bench --out $(BENCH_OUT)/extract.json
bench-workflow: $(VENV_STAMP) fashion-mnist ## linear and attention heads at matched steps: on-line (fresh crop, flip and noise; fresh noise) vs cached 1/4/8 views, 3 seeds (about 50 min)
	$(PY) -m probe bench-workflow --out $(BENCH_OUT)/workflow.json
bench-io: $(VENV_STAMP) ## store read rate and size by codec and reader (zarr-python, tensorstore if installed, diffprobe's) against a raw numpy read [STORE= a real store too; at s3://... read there, beside plain ranged GETs]
	$(PY) -m extract bench-io$(if $(STORE), --store $(STORE)) --out $(BENCH_OUT)/io.json
bench-gpu: $(VENV_STAMP) ## GPU only (not in `make bench`): adm256 b=24 images/s by batch, bf16/fp16, channels_last, compile; % of peak; JPEG loading [QUICK=1: under 4 min: batch 64, no compile, + store read rate, GPU bit identity]
	$(PY) -m extract bench-gpu$(if $(QUICK), --quick) --out $(BENCH_OUT)/gpu$(if $(QUICK),-quick).json
bench-cka: $(VENV_STAMP) ## linear CKA: moments vs Gram at n = 2k, 10k, 50k; full maps (ImageNet b=24-sized; STORE= a demo store with t10/b9/full and t10/b30/full) by moments, gram, tiles: time, peak memory
	$(PY) -m analysis bench$(if $(STORE), --store $(STORE)) --out $(BENCH_OUT)/cka.json
bench-batches: $(VENV_STAMP) ## distinct classes per training batch: class-sorted store vs --order shuffled vs i.i.d. (about 1 min)
	$(PY) -m probe bench-batches --out $(BENCH_OUT)/batches.json
bench-train: $(VENV_STAMP) ## training images/s of the candidate demo architectures (the model card's table), one run
	$(PY) -m extract.bench.train --out $(BENCH_OUT)/train.json
bench-sampling: $(VENV_STAMP) ## demo samples drawn in one batch, in halves and one by one: identical images? (about 30 s)
	$(PY) -m extract.bench.sampling --out $(BENCH_OUT)/sampling.json
bench-probe: $(VENV_STAMP) ## a grid of 16 linear heads vs one head, store read vs training rate; the bank's GFLOP/s vs torch.matmul [THREADS=N: torch threads]
	$(PY) -m probe bench$(if $(THREADS), --threads $(THREADS)) --out $(BENCH_OUT)/probe.json
