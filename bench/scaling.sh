#!/usr/bin/env bash
# Data-parallel scaling on one machine: images/s of `dimtorch train` as one
# process with 2 threads against 2 processes with 1 thread each (Gloo on
# loopback), in alternating pairs, on the default configuration (basic28,
# DIM(L)-JSD, prior matching, 256 MI units, batch 64 per process) and the
# first 10,000 Fashion-MNIST images for one epoch.
#   bench/scaling.sh [pairs]   (default 2; about 100 s per pair on 2 cores)
set -euo pipefail
pairs=${1:-2}
bin=${DIMTORCH:-bin/dimtorch}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--data fashion-mnist --encoder basic28 --epochs 1 --limit 10000 --json)
rate() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["images_per_sec"])'; }
for i in $(seq "$pairs"); do
  one=$("$bin" train "${common[@]}" --threads 2 --out "$tmp/one$i" 2>/dev/null | rate)
  two=$("$bin" train "${common[@]}" --nproc-per-node 2 --threads 1 --out "$tmp/two$i" 2>/dev/null | rate)
  python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'pair {sys.argv[3]}: 1x2 threads {a:.0f} images/s, 2x1 processes {b:.0f} images/s, ratio {b/a:.2f}')" "$one" "$two" "$i"
done
