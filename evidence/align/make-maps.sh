#!/usr/bin/env bash
# the demo's alignment maps and unbiased CKA maps (stores outside the repo; figures into evidence/)
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${R:-runs/align}   # where the stores go (about 3.5 GB)
E=evidence
PY=.venv/bin/python
mkdir -p $E/align
t0=$(date +%s)
step() { echo "== $(( $(date +%s) - t0 )) s: $*"; "$@"; }
[ -e $R/trained-t10-full.zarr ] || step $PY -m extract run --model demo-fmnist --split test --limit 1000 -t 10 -b all --pool full --out $R/trained-t10-full.zarr --no-progress
[ -e $R/random-t10-full.zarr ] || step $PY -m extract run --model demo-fmnist --random-init --split test --limit 1000 -t 10 -b all --pool full --out $R/random-t10-full.zarr --no-progress
[ -e $R/trained-ts-b9-b24-full.zarr ] || step $PY -m extract run --model demo-fmnist --split test --limit 1000 -t 10,25,50,100,150,200,300,400,500,700 -b 9,24 --pool full --out $R/trained-ts-b9-b24-full.zarr --no-progress
[ -e $R/classifier-embed.zarr ] || step $PY -m extract features --features classifier:extract/weights/fmnist-classifier.pt --split test --limit 1000 --out $R/classifier-embed.zarr
[ -e $R/trained-t4-full.zarr ] || step $PY -m extract run --model demo-fmnist --split test --limit 1000 -t 50,150,300 -b all --pool full --out $R/trained-t4-full.zarr --no-progress
# unbiased CKA beside the committed biased maps
step $PY -m analysis cka --store $R/trained-t10-full.zarr --labels demo-fmnist --estimator unbiased --title "unbiased linear CKA" --out $E/cka/demo-blocks-full-unbiased.png --no-progress
step $PY -m analysis cka --store $R/trained-t10-full.zarr --store $R/random-t10-full.zarr --labels trained,random --estimator unbiased --title "unbiased linear CKA" --out $E/cka/demo-vs-random-full-unbiased.png --no-progress
step $PY -m analysis cka --store $R/random-t10-full.zarr --labels random --estimator unbiased --title "unbiased linear CKA" --out $E/cka/random-blocks-full-unbiased.png --no-progress
step $PY -m analysis cka --store $R/random-t10-full.zarr --labels random --title "linear CKA" --out $E/cka/random-blocks-full.png --no-progress
step $PY -m analysis cka --store $R/trained-ts-b9-b24-full.zarr -b 9 --labels demo-fmnist --estimator unbiased --title "unbiased linear CKA" --out $E/cka/demo-t-by-t-b9-full-unbiased.png --no-progress
step $PY -m analysis cka --store $R/trained-ts-b9-b24-full.zarr -b 24 --labels demo-fmnist --estimator unbiased --title "unbiased linear CKA" --out $E/cka/demo-t-by-t-b24-full-unbiased.png --no-progress
step $PY -m analysis cka --store $R/trained-t10-full.zarr --store $R/classifier-embed.zarr --labels demo-fmnist,classifier --estimator unbiased --title "unbiased linear CKA" --out $E/cka/demo-vs-classifier-full-unbiased.png --no-progress
step $PY -m analysis cka --store $R/random-t10-full.zarr --store $R/classifier-embed.zarr --labels random,classifier --estimator unbiased --title "unbiased linear CKA" --out $E/cka/random-vs-classifier-full-unbiased.png --no-progress
# alignment with the classifier's embedding: every block at t = 10, 50, 150, 300
step $PY -m analysis align --store $R/trained-t10-full.zarr --store $R/classifier-embed.zarr --labels demo-fmnist,classifier --title "demo U-Net (t=10) against the classifier's embedding" --out $E/align/demo-t10-vs-classifier.png --no-progress
step $PY -m analysis align --store $R/trained-t4-full.zarr --store $R/classifier-embed.zarr --labels demo-fmnist,classifier --title "demo U-Net (t=50, 150, 300) against the classifier's embedding" --out $E/align/demo-t50-300-vs-classifier.png --no-progress
step $PY -m analysis align --store $R/random-t10-full.zarr --store $R/classifier-embed.zarr --labels random,classifier --title "random-weight U-Net (t=10) against the classifier's embedding" --out $E/align/random-t10-vs-classifier.png --no-progress
echo "== done in $(( $(date +%s) - t0 )) s"
