# diffprobe: the user's menu. `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell cat setup.cfg pyproject.toml | sha256sum | cut -c1-12)

# extraction defaults: the paper's coordinates (t=150, b=24 = output_blocks[4], adaptive average
# pool to 2x2) on the shipped demo model, which has the paper's 37-block topology at 1/8 scale.
# RANDOM=1: the same architecture's random-weight control
MODEL ?= demo-fmnist
CKPT ?=
RANDOM ?=
DATA ?= fashion-mnist
DATA_ROOT ?=
SPLITS ?= train test
T ?= 150
B ?= 24
POOL ?= 2
LIMIT ?=
ARGS ?=
OUT ?= cache
# benchmark results are committed: every number in BENCHMARKS.md and the README comes from a file here
BENCH_OUT ?= evidence/bench
# probe defaults: a small lr x wd grid for linear heads; the heavier heads get one member and
# fewer epochs so a CPU run stays short
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
# a store's path from the variables with prefix $(2): "" for what extract was given, "E_" for
# what probe and cka use (see LAST_EXTRACT below)
store_name = $(OUT)/$($(2)MODEL)$(if $($(2)RANDOM),-random)_$($(2)DATA)_$(1)_t$(call tag,$($(2)T))_b$(call tag,$($(2)B))_p$(call tag,$($(2)POOL))$(if $($(2)LIMIT),_n$($(2)LIMIT)).zarr
weights = $(if $($(1)CKPT),--ckpt $($(1)CKPT),$(if $($(1)RANDOM),--random-init))

# `make extract` records what it made in $(OUT)/last-extract.mk; a bare `make probe` or
# `make cka` then works on those stores. A variable given on the command line (or in the
# environment) always wins over the record.
LAST_EXTRACT := $(OUT)/last-extract.mk
RECORDED := MODEL CKPT RANDOM DATA DATA_ROOT SPLITS T B POOL LIMIT
-include $(LAST_EXTRACT)
given = $(filter command line environment override,$(origin $(1)))
pick = $(if $(call given,$(1)),$($(1)),$(if $(filter undefined,$(origin LAST_$(1))),$($(1)),$(LAST_$(1))))
$(foreach v,$(RECORDED),$(eval E_$(v) = $$(call pick,$(v))))
E_TRAIN = $(word 1,$(E_SPLITS))
E_TEST = $(word 2,$(E_SPLITS))

.PHONY: help install test extract paper card-demo finetune demo-finetune demo-finetune-cka sample demo-gen bench-batches verify datasets check-data probe cka report demo sweep-demo train-demo blocks bench bench-extract bench-train bench-sampling bench-probe bench-cka bench-io bench-gpu bench-workflow fashion-mnist clean

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

extract: $(VENV_STAMP) $(if $(filter fashion-mnist,$(DATA)),fashion-mnist) ## extract features: make extract T=150 B=24 POOL=2 [MODEL= CKPT= RANDOM=1 DATA= DATA_ROOT= SPLITS= LIMIT= OUT=]
	@for split in $(SPLITS); do \
	  out="$(call store_name,$${split},)"; \
	  echo "== $$out"; \
	  $(PY) -m extract run --model $(MODEL) $(call weights,) --data $(DATA) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) \
	    --split $$split -t $(T) -b $(B) --pool $(POOL) $(if $(LIMIT),--limit $(LIMIT)) --out "$$out" $(ARGS) || exit $$?; \
	done
	@$(foreach v,$(RECORDED),echo 'LAST_$(v) := $($(v))' >> $(LAST_EXTRACT).tmp;) mv $(LAST_EXTRACT).tmp $(LAST_EXTRACT)
	@echo "recorded in $(LAST_EXTRACT): a bare 'make probe' or 'make cka' uses these stores"

probe: $(VENV_STAMP) ## train heads on the last extraction's stores: make probe HEAD=linear|mlp|cnn|attention|logreg|knn [LR= WD= PROBE_ARGS=]
	@test -e "$(call store_name,$(E_TRAIN),E_)" || { echo "no cache at $(call store_name,$(E_TRAIN),E_): run 'make extract T=$(E_T) B=$(E_B) POOL=$(E_POOL)$(if $(filter-out demo-fmnist,$(E_MODEL)), MODEL=$(E_MODEL))$(if $(E_LIMIT), LIMIT=$(E_LIMIT))' first"; exit 1; }
	$(PY) -m probe train --train "$(call store_name,$(E_TRAIN),E_)" $(if $(E_TEST),--test "$(call store_name,$(E_TEST),E_)") \
	  --head $(HEAD) --lr $(LR) --wd $(WD) --results $(RESULTS) $(probe_extra_$(HEAD)) $(PROBE_ARGS)

# make cka: the paper's figures from the cache, at the last extraction's model and coordinates:
# every block against every other at its first t (global average pool: the deepest maps are 1x1
# on the demo), every timestep of CKA_TS against every other at its first b and pool, and the
# trained weights against the random-weight control, block by block. Missing stores are
# extracted first (one forward per t gives every block), on CKA_LIMIT images of the test split.
CKA_T ?= $(firstword $(subst $(comma),$(space),$(E_T)))
first_b = $(firstword $(subst $(comma),$(space),$(E_B)))
CKA_B ?= $(if $(filter all,$(first_b)),24,$(first_b))
CKA_POOL ?= $(firstword $(subst $(comma),$(space),$(E_POOL)))
CKA_TS ?= 10,25,50,100,150,200,300,400,500,700
CKA_SPLIT ?= $(or $(E_TEST),$(E_TRAIN))
CKA_LIMIT ?= $(or $(E_LIMIT),2000)
CKA_OUT ?= results/cka
cka_store = $(OUT)/cka/$(E_MODEL)$(2)_$(E_DATA)_$(CKA_SPLIT)_$(1)_n$(CKA_LIMIT).zarr
cka_layers = $(call cka_store,t$(CKA_T)_ball_p1,$(1))
cka_steps = $(call cka_store,t$(call tag,$(CKA_TS))_b$(CKA_B)_p$(CKA_POOL),)
cka_extract = $(PY) -m extract run --model $(E_MODEL) --data $(E_DATA) $(if $(E_DATA_ROOT),--data-root $(E_DATA_ROOT)) \
  --split $(CKA_SPLIT) --limit $(CKA_LIMIT)
cka_map = $(PY) -m analysis cka --no-progress
cka: $(VENV_STAMP) $(if $(filter fashion-mnist,$(DATA)),fashion-mnist) ## CKA maps from the cache: blocks x blocks, timesteps x timesteps, trained x random weights
	@$(if $(E_CKPT)$(filter demo-fmnist,$(E_MODEL)),,echo "make cka needs weights: give CKPT= (or run 'make extract MODEL=$(E_MODEL) CKPT=...' first)"; exit 1)
	$(cka_extract) $(call weights,E_) -t $(CKA_T) -b all --pool 1 --out "$(call cka_layers,)"
	$(cka_extract) $(call weights,E_) -t $(CKA_TS),$(CKA_T) -b $(CKA_B) --pool $(CKA_POOL) --out "$(call cka_steps)"
	$(cka_extract) --random-init -t $(CKA_T) -b all --pool 1 --out "$(call cka_layers,-random)"
	$(cka_map) --store "$(call cka_layers,)" --labels $(E_MODEL) --out $(CKA_OUT)/$(E_MODEL)_blocks.png \
	  --title "$(E_MODEL): linear CKA between blocks, t=$(CKA_T), global average pool"
	$(cka_map) --store "$(call cka_steps)" --labels $(E_MODEL) --out $(CKA_OUT)/$(E_MODEL)_timesteps.png \
	  --title "$(E_MODEL): linear CKA between timesteps, b=$(CKA_B), pool $(CKA_POOL)"
	$(cka_map) --store "$(call cka_layers,)" --store "$(call cka_layers,-random)" --labels trained,random \
	  --out $(CKA_OUT)/$(E_MODEL)_vs_random.png --title "$(E_MODEL): linear CKA, trained vs random weights, t=$(CKA_T), global average pool"
	@echo "figures: $(CKA_OUT)/$(E_MODEL)_blocks.png, $(CKA_OUT)/$(E_MODEL)_timesteps.png, $(CKA_OUT)/$(E_MODEL)_vs_random.png (JSON beside each)"

report: $(VENV_STAMP) ## one Markdown report (report/report.md) from results/demo, results/sweep and results/cka
	$(PY) -m analysis report --results $(if $(wildcard results/sweep/probe_results.csv),results/sweep,results/demo) --cka results/cka --out report \
	  $(if $(wildcard results/gen/generation.json),--generation results/gen/generation.json) --title "diffprobe report: $(MODEL) on $(DATA)"

pixel_store = $(OUT)/pixels_$(DATA)_$(1)$(if $(LIMIT),_n$(LIMIT)).zarr
# make demo runs at the demo model's own best point (chosen on validation by `make sweep-demo`,
# see extract/weights/MODEL_CARD.md) unless T, B or POOL is given
DEMO_T ?= 10
DEMO_B ?= 9
DEMO_POOL ?= full
demo_at = T=$(if $(call given,T),$(T),$(DEMO_T)) B=$(if $(call given,B),$(B),$(DEMO_B)) POOL=$(if $(call given,POOL),$(POOL),$(DEMO_POOL))

demo: $(VENV_STAMP) fashion-mnist ## the whole pipeline on the shipped demo model: extract -> linear probe (trained, random control, raw pixels) -> CKA -> table
	@$(MAKE) --no-print-directory extract $(demo_at) RANDOM=1
	@$(MAKE) --no-print-directory extract $(demo_at) RANDOM=
	@for split in $(SPLITS); do test -e "$(call pixel_store,$${split})" || \
	  $(PY) -m extract pixels --data $(DATA) --split $$split $(if $(LIMIT),--limit $(LIMIT)) --out "$(call pixel_store,$${split})" || exit $$?; done
	@$(MAKE) --no-print-directory probe $(demo_at) RANDOM= RESULTS=results/demo PROBE_ARGS="--no-progress --name demo-trained"
	@$(MAKE) --no-print-directory probe $(demo_at) RANDOM=1 RESULTS=results/demo PROBE_ARGS="--no-progress --name demo-random"
	$(PY) -m probe train --train "$(call pixel_store,train)" --test "$(call pixel_store,test)" --lr $(LR) --wd $(WD) \
	  --results results/demo --name demo-pixels --no-progress
	@$(MAKE) --no-print-directory cka RANDOM=
	@echo; $(PY) -m probe table --results results/demo --last 3

# the model card's sweep: every block at t in SWEEP_T and pools 1, 2, 4 (pairs whose pool exceeds
# the block's map are left out), plus the full maps of the 8x8 blocks, for the trained model and
# its random-weight control, on SWEEP_N training images (linear heads chosen on a validation
# carve) and SWEEP_TEST_N test images; then the curves and the table
SWEEP_T ?= 10,50,150,300
SWEEP_N ?= 3000
SWEEP_TEST_N ?= 2000
SWEEP_FULL_T ?= 10
SWEEP_FULL_B ?= 7,8,9,28,29,30
SWEEP_OUT ?= cache/sweep
SWEEP_ARGS := --buffer-mb 9000 --epochs 10 --no-progress
sweep_store = $(SWEEP_OUT)/demo-fmnist$(1)_$(2)_$(3).zarr
sweep_runs = --results trained=results/sweep/sweep-pooled.json --results trained=results/sweep/sweep-full.json \
  --results random-weights=results/sweep/sweep-random-pooled.json --results random-weights=results/sweep/sweep-random-full.json
sweep_limit = --limit $$( [ "$(1)" = train ] && echo $(SWEEP_N) || echo $(SWEEP_TEST_N) )
sweep-demo: $(VENV_STAMP) fashion-mnist ## the model card's sweep over all 37 blocks, t and pool: demo model, random control, pixels; curves into extract/weights/
	@for w in "" -random; do for split in train test; do \
	  $(PY) -m extract run --model demo-fmnist $$( [ -n "$${w}" ] && echo --random-init ) --split $${split} $(call sweep_limit,$${split}) \
	    -t $(SWEEP_T) -b all --pool 1,2,4 --skip-small-maps --micro-batch 64 --no-progress --out "$(call sweep_store,$${w},$${split},pooled)" || exit $$?; \
	  $(PY) -m extract run --model demo-fmnist $$( [ -n "$${w}" ] && echo --random-init ) --split $${split} $(call sweep_limit,$${split}) \
	    -t $(SWEEP_FULL_T) -b $(SWEEP_FULL_B) --pool full --micro-batch 64 --no-progress --out "$(call sweep_store,$${w},$${split},full)" || exit $$?; \
	done; done
	@for w in "" -random; do for part in pooled full; do \
	  $(PY) -m probe train --train "$(call sweep_store,$${w},train,$${part})" --test "$(call sweep_store,$${w},test,$${part})" \
	    --lr $(default_lr) --wd 0 --results results/sweep $(SWEEP_ARGS) --name "sweep$${w}-$${part}" || exit $$?; \
	done; done
	@for split in train test; do test -e "$(call sweep_store,,$${split},pixels)" || \
	  $(PY) -m extract pixels --split $${split} $(call sweep_limit,$${split}) --out "$(call sweep_store,,$${split},pixels)" || exit $$?; done
	$(PY) -m probe train --train "$(call sweep_store,,train,pixels)" --test "$(call sweep_store,,test,pixels)" --head linear --head logreg \
	  --lr $(default_lr) --wd 0 --results results/sweep $(SWEEP_ARGS) --name sweep-pixels
	$(PY) -m analysis curves $(sweep_runs) --out extract/weights/accuracy_curves.png --title "demo-fmnist: linear probe test top-1 (each point chosen on validation)"
	$(PY) -m analysis best $(sweep_runs) --results pixels=results/sweep/sweep-pixels.json --by pool --csv evidence/demo-sweep.members.csv
	$(PY) -m analysis best $(sweep_runs) --by t
	$(PY) -m probe table --results results/sweep

# make card-demo: the model card's runs on all 60,000 / 10,000 images at the sweep's best level
# (t=10, b=7-12, pool 4 and full; trained and random weights; raw pixels), then their members as
# CSV in evidence/. Each step is skipped when its output exists (delete it to re-run).
CARD_OUT ?= cache/card
CARD_ARGS := --buffer-mb 9000 --no-progress
card_store = $(CARD_OUT)/demo-fmnist$(1)_$(2)_t10_b7-12_p4-full.zarr
card_pixels = $(CARD_OUT)/fashion-mnist_$(1)_pixels.zarr
card-demo: $(VENV_STAMP) fashion-mnist ## the model card's all-images runs (trained, random, pixels; about 45 min), members as CSV in evidence/
	@for w in "" -random; do for split in train test; do test -e "$(call card_store,$${w},$${split})" || \
	  $(PY) -m extract run --model demo-fmnist $$( [ -n "$${w}" ] && echo --random-init ) --split $${split} -t 10 -b 7,8,9,10,11,12 \
	    --pool 4,full --micro-batch 64 --no-progress --out "$(call card_store,$${w},$${split})" || exit $$?; done; done
	@for split in train test; do test -e "$(call card_pixels,$${split})" || \
	  $(PY) -m extract pixels --split $${split} --no-progress --out "$(call card_pixels,$${split})" || exit $$?; done
	@test -e results/card/card-trained.json || $(PY) -m probe train --train "$(call card_store,,train)" --test "$(call card_store,,test)" \
	  --lr $(default_lr) --wd 0 --epochs 10 --results results/card --name card-trained $(CARD_ARGS)
	@test -e results/card/card-random.json || $(PY) -m probe train --train "$(call card_store,-random,train)" --test "$(call card_store,-random,test)" \
	  --lr $(default_lr) --wd 0 --epochs 10 --results results/card --name card-random $(CARD_ARGS)
	@test -e results/card/card-trained-20ep.json || $(PY) -m probe train --train "$(call card_store,,train)" --test "$(call card_store,,test)" \
	  -b 8,9 --pool full --lr $(default_lr) --wd $(default_wd) --epochs 20 --results results/card --name card-trained-20ep $(CARD_ARGS)
	@test -e results/card/card-pixels.json || $(PY) -m probe train --train "$(call card_pixels,train)" --test "$(call card_pixels,test)" \
	  --head logreg --results results/card --name card-pixels $(CARD_ARGS)
	$(PY) -m analysis best --results trained=results/card/card-trained.json --results random-weights=results/card/card-random.json \
	  --results trained-20-epochs=results/card/card-trained-20ep.json --results pixels=results/card/card-pixels.json --by b --csv evidence/demo-card.members.csv
	cp results/card/probe_results.csv evidence/demo-card.runs.csv

# make finetune / demo-finetune: the U-Net encoder trained end to end with a head (the table's
# "U-Net encoder" row). The U-Net runs inside the training loop, so nothing is cached.
FT_OUT ?= runs/finetune
FINETUNE_ARGS ?=
finetune: $(VENV_STAMP) $(if $(filter fashion-mnist,$(DATA)),fashion-mnist) ## fine-tune the U-Net up to block B with a head: make finetune HEAD=linear|attention [MODEL= CKPT= DATA= DATA_ROOT= T= B= POOL= FINETUNE_ARGS=]
	$(PY) -m probe finetune --out $(FT_OUT)/$(MODEL)_t$(T)_b$(B)_$(HEAD) --model $(MODEL) $(if $(CKPT),--ckpt $(CKPT)) --data $(DATA) \
	  $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) --train-split $(word 1,$(SPLITS)) --test-split $(word 2,$(SPLITS)) \
	  -t $(T) -b $(B) --pool $(POOL) --head $(HEAD) $(if $(LIMIT),--limit $(LIMIT)) --results $(RESULTS)/finetune $(FINETUNE_ARGS)

# the demo's comparison at its best point (t=10, b=9, full 8x8 map), on a seeded subset of
# FT_N training images (10% of them carved for validation) and all 10,000 test images:
# fine-tuned from the diffusion weights and from random weights (same budget), against frozen
# linear and attention heads on the cache
FT_N ?= 12000
FT_EPOCHS ?= 5
FT_DIR ?= runs/demo-finetune
ft_common = -t 10 -b 9 --pool full --limit $(FT_N) --recipe diffprobe --epochs $(FT_EPOCHS) --results $(FT_DIR)/results --no-progress
demo-finetune: $(VENV_STAMP) fashion-mnist ## fine-tuned encoder vs frozen heads at the demo's best block, and from random init (about 40 min on 2 cores)
	$(PY) -m probe finetune --out $(FT_DIR)/trained $(ft_common) --name finetuned-diffusion-init
	$(PY) -m probe finetune --out $(FT_DIR)/random --random-init $(ft_common) --name finetuned-random-init
	@for split in train test; do $(PY) -m extract run --split $$split -t 10 -b 9 --pool full $$( [ $$split = train ] && echo --limit $(FT_N) ) \
	  --micro-batch 64 --no-progress --out $(FT_DIR)/cache/demo-fmnist_$${split}.zarr || exit $$?; done
	$(PY) -m probe train --train $(FT_DIR)/cache/demo-fmnist_train.zarr --test $(FT_DIR)/cache/demo-fmnist_test.zarr --head linear \
	  --lr $(default_lr) --wd 0 --epochs 10 --results $(FT_DIR)/results --name frozen-linear --no-progress
	$(PY) -m probe train --train $(FT_DIR)/cache/demo-fmnist_train.zarr --test $(FT_DIR)/cache/demo-fmnist_test.zarr --head attention \
	  --head-opt width=256 --lr 1e-3 --wd 0.05 --epochs $(FT_EPOCHS) --results $(FT_DIR)/results --name frozen-attention --no-progress
	$(PY) -m probe table --results $(FT_DIR)/results
	cp $(FT_DIR)/results/probe_results.csv evidence/demo-finetune.runs.csv
	mkdir -p evidence/demo-finetune && cp $(FT_DIR)/results/*.json evidence/demo-finetune/

# how far fine-tuning moved each block: linear CKA between the frozen and the fine-tuned U-Net's
# blocks 1..9 (t=10, pool 2, and b=9's full map) on FT_CKA_N test images; needs demo-finetune's export
FT_CKA_N ?= 2000
demo-finetune-cka: $(VENV_STAMP) fashion-mnist ## CKA per block, frozen vs fine-tuned demo encoder (after make demo-finetune; a few minutes)
	@test -f $(FT_DIR)/trained/finetuned.pt || { echo "$(FT_DIR)/trained/finetuned.pt missing: run make demo-finetune first"; exit 1; }
	$(PY) -m extract run --split test --limit $(FT_CKA_N) -t 10 -b 1,2,3,4,5,6,7,8,9 --pool 2,full --no-progress --out $(FT_DIR)/cka/frozen.zarr
	$(PY) -m extract run --split test --limit $(FT_CKA_N) -t 10 -b 1,2,3,4,5,6,7,8,9 --pool 2,full --ckpt $(FT_DIR)/trained/finetuned.pt \
	  --no-progress --out $(FT_DIR)/cka/finetuned.zarr
	$(PY) -m analysis cka --store $(FT_DIR)/cka/frozen.zarr --store $(FT_DIR)/cka/finetuned.zarr --labels frozen,fine-tuned --pool 2 \
	  --title "demo-fmnist t=10, pool 2: frozen vs fine-tuned to b=9" --no-progress --out $(FT_DIR)/cka/cka-p2.png
	$(PY) -m analysis cka --store $(FT_DIR)/cka/frozen.zarr --store $(FT_DIR)/cka/finetuned.zarr --labels frozen,fine-tuned --pool full -b 9 \
	  --title "demo-fmnist t=10, b=9 full map" --no-progress --out $(FT_DIR)/cka/cka-b9-full.png
	mkdir -p evidence/demo-finetune && cp $(FT_DIR)/cka/cka-p2.json $(FT_DIR)/cka/cka-p2.png $(FT_DIR)/cka/cka-b9-full.json evidence/demo-finetune/

# make sample: N images from any preset (the shipped demo weights by default), seeded per
# image and resumable by shards. On the real model: make sample MODEL=adm256-uncond CKPT=...
# SAMPLE_N=50000 SAMPLE_STEPS=250 SAMPLE_ARGS="--device cuda --dtype fp16 --batch-size 64"
SAMPLE_N ?= 64
SAMPLE_STEPS ?= 250
SAMPLER ?= ddpm
SAMPLE_OUT ?= results/samples/$(MODEL)_$(SAMPLER)$(SAMPLE_STEPS)_n$(SAMPLE_N)$(if $(RANDOM),_random)
SAMPLE_ARGS ?=
sample: $(VENV_STAMP) ## draw N images: make sample [MODEL= CKPT= RANDOM=1 SAMPLE_N= SAMPLE_STEPS= SAMPLER=ddpm|ddim SAMPLE_OUT= SAMPLE_ARGS=]
	$(PY) -m extract sample --model $(MODEL) $(call weights,) --num-samples $(SAMPLE_N) \
	  --steps $(SAMPLE_STEPS) --sampler $(SAMPLER) --out $(SAMPLE_OUT) $(SAMPLE_ARGS)

# make demo-gen: the generative half of the table on the demo model.
# Samples of the shipped demo-fmnist U-Net and of its random-weight control (DDIM, GEN_STEPS
# steps, image i seeded by (seed, i)), then the Fréchet distance, precision and recall of each
# against Fashion-MNIST test in the feature space of the shipped classifier
# (extract/weights/fmnist-classifier.pt), the floor (the test split's two halves against each
# other), and one table (FD beside the validation-best linear-probe accuracy of the same
# weights: the card's runs in results/card, else their committed record
# evidence/demo-card.runs.csv). Resumable: a killed run continues where it stopped.
GEN_N ?= 5000
GEN_STEPS ?= 50
GEN_SAMPLER ?= ddim
GEN_BATCH ?= 50
GEN_OUT ?= results/gen
GEN_CLASSIFIER ?= extract/weights/fmnist-classifier.pt
GEN_PROBES ?= $(firstword $(wildcard results/card/probe_results.csv) evidence/demo-card.runs.csv)
gen_sample = $(PY) -m extract sample --model demo-fmnist --num-samples $(GEN_N) --sampler $(GEN_SAMPLER) --steps $(GEN_STEPS) --batch-size $(GEN_BATCH) --no-progress
gen_fd = $(PY) -m analysis fid --data fashion-mnist --split test --features classifier:$(GEN_CLASSIFIER) --no-progress

demo-gen: $(VENV_STAMP) fashion-mnist ## demo samples (trained and random control) -> FD, precision, recall vs Fashion-MNIST test in a classifier's features -> table (GEN_N= GEN_STEPS=)
	$(gen_sample) --out $(GEN_OUT)/samples-trained
	$(gen_sample) --random-init --out $(GEN_OUT)/samples-random
	$(gen_fd) --fake $(GEN_OUT)/samples-trained --out $(GEN_OUT)/fd-trained.json
	$(gen_fd) --fake $(GEN_OUT)/samples-random --out $(GEN_OUT)/fd-random.json
	$(gen_fd) --split-half --out $(GEN_OUT)/fd-floor.json
	$(PY) -m analysis gen-table --fd trained=$(GEN_OUT)/fd-trained.json --fd random-init=$(GEN_OUT)/fd-random.json \
	  --fd test-half-floor=$(GEN_OUT)/fd-floor.json $(if $(GEN_PROBES),--probe-table $(GEN_PROBES)) \
	  --feature-net $(GEN_CLASSIFIER:.pt=.json) --out $(GEN_OUT)/generation.json
	mkdir -p evidence/demo-gen && cp $(GEN_OUT)/generation.json $(GEN_OUT)/generation.csv $(GEN_OUT)/fd-*.json evidence/demo-gen/

# make paper ROW=...: one row of the paper's table, extracted and probed with diffssl's protocol
# (`--recipe paper`: SGD, StepLR(7), 28 epochs, batch 128, raw features, all of train, test
# evaluated once). On the real model: make paper ROW=attention MODEL=adm256-uncond CKPT=...
# DATA=imagenet DATA_ROOT=... SPLITS="train val". DRY=1 prints the commands without running them.
# The fgvc-* rows fix their dataset and splits (the official training split, train+val where
# a dataset has a separate val, and the test split) and take
# the attention row's settings: diffssl ships no FGVC script, and the attention head is the
# paper's best ImageNet head.
ROW ?= linear-p2
paper_row_linear-p1 := T=150 B=24 POOL=1 HEAD=linear
paper_row_linear-p2 := T=150 B=24 POOL=2 HEAD=linear
paper_row_mlp := T=150 B=24 POOL=2 HEAD=paper-mlp
paper_row_attention := T=150 B=24 POOL=full HEAD=paper-attention
paper_row_fusion := T=90,150,300 B=19,24,30 POOL=full HEAD=paper-fusion
FGVC_SETS := aircraft cars cub dogs flowers nabirds
$(foreach d,$(FGVC_SETS),$(eval paper_row_fgvc-$(d) := $(paper_row_attention)))
$(foreach d,$(FGVC_SETS),$(eval paper_data_fgvc-$(d) := $(d)))
$(foreach d,$(filter-out aircraft flowers,$(FGVC_SETS)),$(eval paper_splits_fgvc-$(d) := train test))
paper_splits_fgvc-aircraft := trainval test
paper_splits_fgvc-flowers := trainval test
PAPER_ROWS := linear-p1 linear-p2 mlp attention fusion $(addprefix fgvc-,$(FGVC_SETS))
PAPER_ARGS ?=
row_var = $(patsubst $(1)=%,%,$(filter $(1)=%,$(paper_row_$(ROW))))
row_data = $(or $(paper_data_$(ROW)),$(DATA))
row_splits = $(or $(paper_splits_$(ROW)),$(SPLITS))
split_commas = $(subst $(comma),$(space),$(1))
fusion_set = $(subst $(space),+,$(strip $(foreach t,$(call split_commas,$(call row_var,T)),$(foreach b,$(call split_commas,$(call row_var,B)),t$(t)/b$(b)/full))))
paper_store = $(OUT)/$(MODEL)_$(row_data)_$(1)_t$(call tag,$(call row_var,T))_b$(call tag,$(call row_var,B))_p$(call row_var,POOL)$(if $(LIMIT),_n$(LIMIT)).zarr
paper: $(VENV_STAMP) ## one row of the paper's table with its protocol: make paper ROW=linear-p1|linear-p2|mlp|attention|fusion|fgvc-<set> [DRY=1 MODEL= CKPT= DATA= DATA_ROOT= SPLITS=]
	@$(if $(paper_row_$(ROW)),,echo "unknown ROW=$(ROW): choose one of $(PAPER_ROWS)"; exit 2)
	@$(MAKE) --no-print-directory $(if $(DRY),-n) extract $(foreach v,T B POOL,$(v)=$(call row_var,$(v))) DATA=$(row_data) SPLITS="$(row_splits)"
	$(if $(DRY),@echo )$(PY) -m probe train --train "$(call paper_store,$(word 1,$(row_splits)))" $(if $(word 2,$(row_splits)),--test "$(call paper_store,$(word 2,$(row_splits)))") \
	  --recipe paper --head $(call row_var,HEAD) $(if $(filter fusion,$(ROW)),--features $(fusion_set)) \
	  --results results/paper --name paper-$(ROW)$(if $(filter-out demo-fmnist,$(MODEL)),-$(MODEL)) $(PAPER_ARGS)

train-demo: $(VENV_STAMP) fashion-mnist ## train the demo U-Net on Fashion-MNIST (resumable; about 100 min on 2 CPU cores), then export its EMA weights (fp16)
	$(PY) -m extract train --out runs/demo-fmnist --threads 2 $(ARGS)
	$(PY) -m extract export --run runs/demo-fmnist --to extract/weights/demo-fmnist.pt --dtype float16

verify: $(VENV_STAMP) ## check stores are whole (shards, checksums, NaN, consistency): make verify [STORE=path] (default: every store in OUT)
	@stores="$(or $(STORE),$(wildcard $(OUT)/*.zarr))"; test -n "$$stores" || { echo "no stores in $(OUT): give STORE=path"; exit 1; }; \
	$(PY) -m extract verify $$stores

datasets: $(VENV_STAMP) ## the dataset registry: splits, official sizes, options, expected layout of each
	$(PY) -m extract datasets

check-data: $(VENV_STAMP) ## validate a dataset tree before extracting: make check-data DATA=imagenet DATA_ROOT=/data/imagenet
	$(PY) -m extract check-data --data $(DATA) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(ARGS)

blocks: $(VENV_STAMP) ## print a model's block numbering: make blocks MODEL=adm256-uncond
	$(PY) -m extract blocks --model $(MODEL)

bench-extract: $(VENV_STAMP) ## early exit vs the full forward (adm256 b=24, tiny, tiny-sd, tiny-dit) and cached latents vs VAE encoding, one run
	$(PY) -m extract bench --out $(BENCH_OUT)/extract.json

bench-workflow: $(VENV_STAMP) fashion-mnist ## the paper's linear recipe on-line (crop, flip, noise, whole U-Net every step) vs cached 1/4/8 views: test accuracy and wall time (about 20 min)
	$(PY) -m probe bench-workflow --out $(BENCH_OUT)/workflow.json

bench: $(VENV_STAMP) fashion-mnist ## every CPU benchmark in one run (about 30 min, most of it bench-workflow's on-line training): tables on screen and in $(BENCH_OUT)/bench.txt, JSON beside
	@mkdir -p $(BENCH_OUT)
	@set -o pipefail; { echo "make bench, $$(date -u +%Y-%m-%dT%H:%MZ), $$(nproc) cores, $$(uname -m)"; \
	  $(MAKE) --no-print-directory bench-extract bench-probe bench-cka bench-io bench-workflow; } | tee $(BENCH_OUT)/bench.txt
	@echo "tables: $(BENCH_OUT)/bench.txt; JSON: $$(ls $(BENCH_OUT)/*.json | tr '\n' ' ')"

bench-io: $(VENV_STAMP) ## store read throughput against a raw numpy read of the same bytes
	$(PY) -m extract bench-io --out $(BENCH_OUT)/io.json

bench-gpu: $(VENV_STAMP) ## GPU only (not in `make bench`): adm256 b=24 images/s by batch, bf16/fp16, channels_last, compile; % of peak; JPEG loading
	$(PY) -m extract bench-gpu --out $(BENCH_OUT)/gpu.json

bench-cka: $(VENV_STAMP) ## streamed linear CKA vs the Gram-matrix version at n = 2k, 10k, 50k: time and peak memory
	$(PY) -m analysis bench --out $(BENCH_OUT)/cka.json

bench-batches: $(VENV_STAMP) ## distinct classes per training batch: class-sorted store vs one written with --order shuffled vs i.i.d. (about 1 min)
	$(PY) -m probe bench-batches --out $(BENCH_OUT)/batches.json

bench-train: $(VENV_STAMP) ## training images/s of the candidate demo architectures (the model card's table), one run
	$(PY) -m extract.bench_train --out $(BENCH_OUT)/train.json

bench-sampling: $(VENV_STAMP) ## demo samples drawn in one batch, in halves and one by one: identical images? (about 30 s)
	$(PY) -m extract.bench_sampling --out $(BENCH_OUT)/sampling.json

bench-probe: $(VENV_STAMP) ## a grid of 16 linear heads vs one head, store read vs training rate
	$(PY) -m probe bench --out $(BENCH_OUT)/probe.json

clean: ## remove the feature caches (not .venv, not the committed evidence/)
	rm -rf $(OUT)
