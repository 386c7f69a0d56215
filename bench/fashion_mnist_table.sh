#!/usr/bin/env bash
# Reproduces docs/evaluation.md's Fashion-MNIST table: DIM(L) with JSD and with
# infoNCE (3 epochs on the 60,000 training images, 2 threads), the two-view
# infoNCE recipe (3 and 7 epochs), the untrained encoder and raw pixels,
# each with the offline linear probe on 10,000 training labels and on all
# 60,000, scored on the 10,000 test images. About 2 hours on 2 cores (the
# probes on 60,000 x 6,272 conv features take ~8 minutes each).
# Usage: bench/fashion_mnist_table.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs}
B=bin/dimtorch
[ -x $B ] || go build -o $B ./cmd/dimtorch
probe() { # run: the offline linear probe on 10,000 and on 60,000 labels
  $B eval "$@" --probe linear --features conv,fc,y --limit-train 10000
  $B eval "$@" --probe linear --features conv,fc,y
}
for est in jsd nce; do
  if [ ! -f $R/fm-$est-3ep/checkpoint/checkpoint.json ]; then
    $B train --data fashion-mnist --encoder basic28 --mode local --estimator $est --mi-units 256 \
      --batch-size 64 --epochs 3 --lr 1e-3 --seed 1 --threads 2 --out $R/fm-$est-3ep
  fi
  probe --checkpoint $R/fm-$est-3ep
done
for ep in 3 7; do
  if [ ! -f $R/fm-nce-v2-${ep}ep/checkpoint/checkpoint.json ]; then
    $B train --data fashion-mnist --encoder basic28 --mode local --estimator nce --views 2 --crop-scale 0.4 \
      --score-clip 10 --mi-units 256 --batch-size 64 --epochs $ep --lr 1e-3 --lr-schedule cosine --bf16 \
      --seed 1 --threads 2 --out $R/fm-nce-v2-${ep}ep
  fi
  probe --checkpoint $R/fm-nce-v2-${ep}ep
done
probe --random-init --encoder basic28 --seed 1 --out $R/untrained
$B eval --pixels --probe linear --limit-train 10000 --out $R/pixels
$B eval --pixels --probe linear --out $R/pixels
$B report $R/fm-jsd-3ep $R/fm-nce-3ep $R/fm-nce-v2-3ep $R/fm-nce-v2-7ep $R/untrained $R/pixels
