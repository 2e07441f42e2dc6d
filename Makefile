# diffprobe: the user's menu. `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell cat setup.cfg pyproject.toml | sha256sum | cut -c1-12)

# extraction defaults: the shipped demo model on Fashion-MNIST at its validation-best point
# (t=10, the middle block b=10, the full 7x7 map; see extract/weights/MODEL_CARD.md). RANDOM=1: its random-weight control
MODEL ?= demo-fmnist
CKPT ?=
RANDOM ?=
DATA ?= fashion-mnist
DATA_ROOT ?=
SPLITS ?= train test
T ?= 10
B ?=
POOL ?= none
LIMIT ?=
ARGS ?=
OUT ?= cache
# probe defaults: a small lr x wd grid for linear heads; the heavier heads get one member and
# fewer epochs so a CPU run stays short (measured: attention, width 256, 3.3 min per epoch)
HEAD ?= linear
default_lr := 1e-3,3e-3,1e-2
default_wd := 0,0.05
lr_attention := 1e-3
lr_cnn := 1e-3
wd_attention := 0.05
wd_cnn := 0.05
LR ?= $(or $(lr_$(HEAD)),$(default_lr))
WD ?= $(or $(wd_$(HEAD)),$(default_wd))
RESULTS ?= results
PROBE_ARGS ?=
probe_extra_attention := --head-opt width=256 --epochs 3
probe_extra_cnn := --epochs 3
probe_extra_mlp := --epochs 5

empty :=
space := $(empty) $(empty)
comma := ,
tag = $(subst $(comma),-,$(subst $(space),,$(1)))
store_name = $(OUT)/$(MODEL)$(if $(RANDOM),-random)_$(DATA)_$(1)_t$(call tag,$(T))$(if $(B),_b$(call tag,$(B)))_p$(call tag,$(POOL))$(if $(LIMIT),_n$(LIMIT)).zarr
weights = $(if $(CKPT),--ckpt $(CKPT),$(if $(RANDOM),--random-init))

.PHONY: help install test extract verify datasets check-data probe cka report demo sweep-demo train-demo blocks bench bench-extract bench-probe bench-cka bench-io bench-gpu bench-workflow fashion-mnist clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(VENV_STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f .venv/.installed-* && touch $@

install: $(VENV_STAMP) ## create .venv and install diffprobe with its pinned dependencies

fashion-mnist: ## make sure Fashion-MNIST's IDX files are there (installs the Debian package as root)
	@if [ -n "$$FASHION_MNIST_DIR" ] || [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or set FASHION_MNIST_DIR"; exit 1; fi

test: $(VENV_STAMP) fashion-mnist ## run the test suite (CPU, a few minutes)
	$(PY) -m pytest -q tests

extract: $(VENV_STAMP) $(if $(filter fashion-mnist,$(DATA)),fashion-mnist) ## extract features: make extract T=150 B=24 POOL=2 [MODEL= CKPT= DATA= DATA_ROOT= SPLITS= LIMIT= OUT=]
	@for split in $(SPLITS); do \
	  out="$(call store_name,$${split})"; \
	  echo "== $$out"; \
	  $(PY) -m extract run --model $(MODEL) $(weights) --data $(DATA) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) \
	    --split $$split -t $(T) $(if $(B),-b $(B)) --pool $(POOL) $(if $(LIMIT),--limit $(LIMIT)) --out "$$out" $(ARGS) || exit $$?; \
	done

probe: $(VENV_STAMP) ## train heads on the default cache: make probe HEAD=linear|mlp|cnn|attention|logreg|knn [LR= WD= PROBE_ARGS=]
	@test -e "$(call store_name,train)" || { echo "no cache at $(call store_name,train): run 'make extract' first (same T, B, POOL, MODEL)"; exit 1; }
	$(PY) -m probe train --train "$(call store_name,train)" $(if $(filter test,$(SPLITS)),--test "$(call store_name,test)") \
	  --head $(HEAD) --lr $(LR) --wd $(WD) --results $(RESULTS) $(probe_extra_$(HEAD)) $(PROBE_ARGS)

CKA_T ?= 10
CKA_B ?= 4,7,9,10,11,12,13
CKA_POOL ?= 2
CKA_SPLIT ?= test
cka_args = T=$(CKA_T) B=$(CKA_B) POOL=$(CKA_POOL) SPLITS=$(CKA_SPLIT) ARGS=--no-progress
cka_store = $(OUT)/$(MODEL)$(1)_$(DATA)_$(CKA_SPLIT)_t$(call tag,$(CKA_T))_b$(call tag,$(CKA_B))_p$(call tag,$(CKA_POOL))$(if $(LIMIT),_n$(LIMIT)).zarr
cka: $(VENV_STAMP) fashion-mnist ## CKA maps: the demo model's blocks against each other and against its random-weight control (test images)
	@$(MAKE) --no-print-directory extract $(cka_args)
	@$(MAKE) --no-print-directory extract $(cka_args) RANDOM=1
	$(PY) -m analysis cka --store "$(call cka_store,)" --labels $(MODEL) --out results/cka/$(MODEL)_blocks.png \
	  --title "linear CKA between blocks, t=$(CKA_T), pool $(CKA_POOL)" --no-progress
	$(PY) -m analysis cka --store "$(call cka_store,)" --store "$(call cka_store,-random)" \
	  --labels trained,random --out results/cka/$(MODEL)_vs_random.png --title "linear CKA: trained vs random weights, t=$(CKA_T), pool $(CKA_POOL)" --no-progress

report: $(VENV_STAMP) ## one Markdown report (report/report.md) from results/demo, results/sweep and results/cka
	$(PY) -m analysis report --results $(if $(wildcard results/sweep/probe_results.csv),results/sweep,results/demo) --cka results/cka --out report \
	  --title "diffprobe report: $(MODEL) on $(DATA)"

pixel_store = $(OUT)/pixels_$(DATA)_$(1)$(if $(LIMIT),_n$(LIMIT)).zarr

demo: $(VENV_STAMP) fashion-mnist ## the whole pipeline on the shipped demo model: extract -> linear probe (trained, random control, raw pixels) -> CKA -> table
	@$(MAKE) --no-print-directory extract
	@$(MAKE) --no-print-directory extract RANDOM=1
	@for split in $(SPLITS); do test -e "$(call pixel_store,$${split})" || \
	  $(PY) -m extract pixels --data $(DATA) --split $$split $(if $(LIMIT),--limit $(LIMIT)) --out "$(call pixel_store,$${split})" || exit $$?; done
	@$(MAKE) --no-print-directory probe RESULTS=results/demo PROBE_ARGS="--no-progress --name demo-trained"
	@$(MAKE) --no-print-directory probe RANDOM=1 RESULTS=results/demo PROBE_ARGS="--no-progress --name demo-random"
	$(PY) -m probe train --train "$(call pixel_store,train)" --test "$(call pixel_store,test)" --lr $(LR) --wd $(WD) \
	  --results results/demo --name demo-pixels --no-progress
	@$(MAKE) --no-print-directory cka
	@echo; $(PY) -m probe table --results results/demo --last 3

SWEEP := T=10,50,150,300 B=4,7,9,10,11,12,13 POOL=1,2,4 OUT=cache/sweep
SWEEP_ARGS := --buffer-mb 9000 --epochs 10 --no-progress
sweep-demo: $(VENV_STAMP) fashion-mnist ## the model card's (t, b, pool) sweep: demo model, random control, pixels; curves into extract/weights/
	@$(MAKE) --no-print-directory extract $(SWEEP)
	@$(MAKE) --no-print-directory extract $(SWEEP) RANDOM=1
	@$(MAKE) --no-print-directory probe $(SWEEP) RESULTS=results/sweep WD=0 PROBE_ARGS="$(SWEEP_ARGS) --name sweep-trained"
	@$(MAKE) --no-print-directory probe $(SWEEP) RANDOM=1 RESULTS=results/sweep WD=0 PROBE_ARGS="$(SWEEP_ARGS) --name sweep-random"
	@for split in $(SPLITS); do test -e "$(call pixel_store,$${split})" || \
	  $(PY) -m extract pixels --data $(DATA) --split $$split --out "$(call pixel_store,$${split})" || exit $$?; done
	$(PY) -m probe train --train "$(call pixel_store,train)" --test "$(call pixel_store,test)" --head linear --head logreg \
	  --lr $(LR) --wd 0 --epochs 10 --results results/sweep --name sweep-pixels --no-progress
	@$(MAKE) --no-print-directory extract T=10 B=9,10,11,12 POOL=none OUT=cache/sweep
	@$(MAKE) --no-print-directory extract T=10 B=9,10,11,12 POOL=none OUT=cache/sweep RANDOM=1
	@$(MAKE) --no-print-directory probe T=10 B=9,10,11,12 POOL=none OUT=cache/sweep RESULTS=results/sweep WD=0 PROBE_ARGS="$(SWEEP_ARGS) --name sweep-trained-full"
	@$(MAKE) --no-print-directory probe T=10 B=9,10,11,12 POOL=none OUT=cache/sweep RANDOM=1 RESULTS=results/sweep WD=0 PROBE_ARGS="$(SWEEP_ARGS) --name sweep-random-full"
	$(PY) -m analysis curves --results trained=results/sweep/sweep-trained.json --results trained=results/sweep/sweep-trained-full.json \
	  --results random-weights=results/sweep/sweep-random.json --results random-weights=results/sweep/sweep-random-full.json \
	  --out extract/weights/accuracy_curves.png --title "demo-fmnist: linear probe test top-1 (each point chosen on validation)"
	$(PY) -m probe table --results results/sweep

train-demo: $(VENV_STAMP) fashion-mnist ## train the demo U-Net on Fashion-MNIST (resumable; ~90 min on 2 CPU cores), then export its EMA weights
	$(PY) -m extract train --out runs/demo-fmnist $(ARGS)
	$(PY) -m extract export --run runs/demo-fmnist --to extract/weights/demo-fmnist.pt

verify: $(VENV_STAMP) ## check stores are whole (shards, checksums, NaN, consistency): make verify [STORE=path] (default: every store in OUT)
	@stores="$(or $(STORE),$(wildcard $(OUT)/*.zarr))"; test -n "$$stores" || { echo "no stores in $(OUT): give STORE=path"; exit 1; }; \
	$(PY) -m extract verify $$stores

datasets: $(VENV_STAMP) ## the dataset registry: splits, official sizes, options, expected layout of each
	$(PY) -m extract datasets

check-data: $(VENV_STAMP) ## validate a dataset tree before extracting: make check-data DATA=imagenet DATA_ROOT=/data/imagenet
	$(PY) -m extract check-data --data $(DATA) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(ARGS)

blocks: $(VENV_STAMP) ## print a model's block numbering: make blocks MODEL=adm256-uncond
	$(PY) -m extract blocks --model $(MODEL)

bench-extract: $(VENV_STAMP) ## early exit vs guided-diffusion's full forward (adm256 b=24 and tiny), one run
	$(PY) -m extract bench --out bench-results/extract.json

bench-workflow: $(VENV_STAMP) fashion-mnist ## on-line head training (full U-Net every step, 28 epochs) vs extract once + 28 epochs on the cache, demo model
	$(PY) -m probe bench-workflow --out bench-results/workflow.json

bench: $(VENV_STAMP) fashion-mnist ## every CPU benchmark in one run (about 3 min): tables on screen and in bench-results/bench.txt, JSON beside
	@mkdir -p bench-results
	@set -o pipefail; { echo "make bench, $$(date -u +%Y-%m-%dT%H:%MZ), $$(nproc) cores, $$(uname -m)"; \
	  $(MAKE) --no-print-directory bench-extract bench-probe bench-cka bench-io bench-workflow; } | tee bench-results/bench.txt
	@echo "tables: bench-results/bench.txt; JSON: $$(ls bench-results/*.json | tr '\n' ' ')"

bench-io: $(VENV_STAMP) ## store read throughput against a raw numpy read of the same bytes
	$(PY) -m extract bench-io --out bench-results/io.json

bench-gpu: $(VENV_STAMP) ## GPU only (not in `make bench`): adm256 b=24 images/s by batch, bf16/fp16, channels_last, compile; % of peak; JPEG loading
	$(PY) -m extract bench-gpu --out bench-results/gpu.json

bench-cka: $(VENV_STAMP) ## streamed linear CKA vs the Gram-matrix version at n = 2k, 10k, 50k: time and peak memory
	$(PY) -m analysis bench --out bench-results/cka.json

bench-probe: $(VENV_STAMP) ## a grid of 16 linear heads vs one head, store read vs training rate
	$(PY) -m probe bench --out bench-results/probe.json

clean: ## remove caches and benchmark results (not .venv)
	rm -rf $(OUT) bench-results
