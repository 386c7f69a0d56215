#!/usr/bin/env bash
# One row of the representation-quality table (docs/evaluation.md,
# "Representation quality"): trains basic28 on Fashion-MNIST from the
# two-view recipe with the row's flags, probes conv, fc and Y with the
# offline linear probe on LABELS training labels, and prints one JSON line:
# the accuracies (%), the training's CPU minutes (user + system, as
# `dimtorch train` measures itself) and the flags.
# Usage: [RECIPE=dim|amdim] bench/quality_run.sh RUN_DIR LABELS [train flags...]
#   LABELS: 10000 (screening) or 60000 (all labels)
# e.g. bench/quality_run.sh runs/q-base-2ep 10000 --epochs 2
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1 labels=$2
shift 2
B=${DIMTORCH:-bin/dimtorch}
[ -x "$B" ] || go build -o "$B" ./cmd/dimtorch
# The recipe the rows start from (RECIPE=dim, the default: two views,
# infoNCE, crops, score clipping, cosine schedule, bfloat16; RECIPE=amdim:
# multi-scale DIM with its defaults, amdim28, the same optimiser); the row's
# flags override these.
case "${RECIPE:-dim}" in
  dim) base=(--data fashion-mnist --encoder basic28 --mode local --estimator nce --views 2 --crop-scale 0.4
         --score-clip 10 --mi-units 256 --batch-size 64 --lr 1e-3 --lr-schedule cosine --bf16 --seed 1 --threads 2) ;;
  amdim) base=(--data fashion-mnist --method amdim --mi-units 256 --batch-size 64 --lr 2e-3 --lr-schedule cosine --bf16
         --seed 1 --threads 2) ;;
  *) echo "bench/quality_run.sh: RECIPE must be dim or amdim" >&2; exit 2 ;;
esac
mkdir -p "$(dirname "$run")"
if [ ! -f "$run/checkpoint/checkpoint.json" ]; then
  "$B" train "${base[@]}" "$@" --out "$run" --json 2>"$run.log" | tail -1 >"$run.train.json"
fi
limit=()
[ "$labels" = 60000 ] || limit=(--limit-train "$labels")
"$B" eval --checkpoint "$run" --probe linear --features conv,fc,y "${limit[@]}" --json 2>>"$run.log" | tail -1 >"$run.eval-$labels.json"
/usr/bin/python3 - "$run" "$labels" "$*" <<'PY'
import json, sys
run, labels, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ck = json.load(open(run + "/checkpoint/checkpoint.json"))
ev = json.load(open(f"{run}.eval-{labels}.json"))
cpu = ck["state"].get("cpu_seconds", 0) / 60
print(json.dumps({"run": run, "labels": labels, "conv": round(100 * ev["conv"], 2), "fc": round(100 * ev["fc"], 2),
                  "y": round(100 * ev["y"], 2), "cpu_minutes": round(cpu, 1), "flags": flags}))
PY
