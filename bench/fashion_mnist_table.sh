#!/usr/bin/env bash
# Reproduces the README's Fashion-MNIST table: DIM(L) with JSD and with
# infoNCE (3 epochs on the 60,000 training images, 2 threads), the untrained
# encoder and raw pixels, each with the offline linear probe on 10,000
# training labels (conv, fc, Y) and on all 60,000 (Y), scored on the 10,000
# test images. About 45 minutes on 2 cores. Usage: bench/fashion_mnist_table.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs}
B=bin/dimtorch
[ -x $B ] || go build -o $B ./cmd/dimtorch
for est in jsd nce; do
  if [ ! -f $R/fm-$est-3ep/checkpoint/checkpoint.json ]; then
    $B train --data fashion-mnist --encoder basic28 --mode local --estimator $est --mi-units 256 \
      --batch-size 64 --epochs 3 --lr 1e-3 --seed 1 --threads 2 --out $R/fm-$est-3ep
  fi
  $B eval --checkpoint $R/fm-$est-3ep --probe linear --features conv,fc,y --limit-train 10000 --plots
  $B eval --checkpoint $R/fm-$est-3ep --probe linear --features y
done
$B eval --random-init --encoder basic28 --seed 1 --probe linear --features conv,fc,y --limit-train 10000 --out $R/untrained
$B eval --random-init --encoder basic28 --seed 1 --probe linear --features y --out $R/untrained
$B eval --pixels --probe linear --limit-train 10000 --out $R/pixels
$B eval --pixels --probe linear --out $R/pixels
$B report $R/fm-jsd-3ep $R/fm-nce-3ep $R/untrained $R/pixels
