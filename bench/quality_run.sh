#!/usr/bin/env bash
# One row of the representation-quality table (README, "Representation
# quality"): trains basic28 on Fashion-MNIST with the given flags, measures
# the training's CPU time (user + system), probes conv, fc and Y with the
# offline linear probe, and prints one JSON line.
# Usage: bench/quality_run.sh RUN_DIR LABELS [train flags...]
#   LABELS: 10000 (screening) or 60000 (all labels)
# Every row of the table is this script with the flags the table lists, e.g.
#   bench/quality_run.sh runs/q-base 10000 --epochs 2
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1 labels=$2
shift 2
B=${DIMTORCH:-bin/dimtorch}
[ -x "$B" ] || go build -o "$B" ./cmd/dimtorch
# The recipe the rows start from: two views, infoNCE, crops, score clipping,
# cosine schedule, bfloat16; the row's flags override these.
base=(--data fashion-mnist --encoder basic28 --mode local --estimator nce --views 2 --crop-scale 0.4
  --score-clip 10 --mi-units 256 --batch-size 64 --lr 1e-3 --lr-schedule cosine --bf16 --seed 1 --threads 2)
if [ ! -f "$run/checkpoint/checkpoint.json" ]; then
  mkdir -p "$run"
  /usr/bin/time -f "%U %S" -o "$run/train-cpu.txt" "$B" train "${base[@]}" "$@" --out "$run" >/dev/null
fi
cpu=$(awk '{printf "%.1f", ($1 + $2) / 60}' "$run/train-cpu.txt")
limit=()
[ "$labels" = 60000 ] || limit=(--limit-train "$labels")
res=$("$B" eval --checkpoint "$run" --probe linear --features conv,fc,y "${limit[@]}" --json 2>/dev/null | tail -1)
printf '{"run":"%s","labels":%s,"cpu_minutes":%s,"probe":%s,"flags":"%s"}\n' "$run" "$labels" "$cpu" "$res" "$*"
