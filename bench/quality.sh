#!/usr/bin/env bash
# make quality: trains the best recipe found (docs/evaluation.md,
# "Representation quality") from scratch on Fashion-MNIST, probes conv, fc
# and Y with the offline linear probe on all 60,000 training labels, and
# prints last one JSON line: the three test accuracies (%), the training's
# CPU minutes (user + system of `dimtorch train`, as the process measures
# it) and the command.
# The goal it is measured against: Y >= 88 and conv >= 91 within 30 CPU-minutes.
# Usage: bench/quality.sh [RUN_DIR]   (default: runs/quality-DATE; an existing
# directory is refused, so every figure comes from a run from scratch)
set -euo pipefail
cd "$(dirname "$0")/.."
B=bin/dimtorch
[ -x $B ] || go build -o $B ./cmd/dimtorch
R=${1:-runs/quality-$(date +%Y%m%d-%H%M%S)}
if [ -e "$R" ]; then
  echo "bench/quality.sh: $R exists; give a new directory (every figure comes from a run from scratch)" >&2
  exit 1
fi
recipe=(--data fashion-mnist --encoder basic28 --mode local --estimator nce --views 2 --crop-scale 0.4
  --score-clip 10 --gamma 0 --mi-units 256 --batch-size 64 --epochs 6 --lr 2e-3 --lr-schedule cosine --bf16
  --seed 1 --threads 2)
mkdir -p "$(dirname "$R")"
cmd="dimtorch train ${recipe[*]} --out $R"
$B train "${recipe[@]}" --out "$R" --json | tail -1 > "$R.train.json"
$B eval --checkpoint "$R" --probe linear --features conv,fc,y --json | tail -1 > "$R.eval.json"
/usr/bin/python3 - "$R.train.json" "$R.eval.json" "$cmd" <<'PY'
import json, sys
train, ev = (json.load(open(p)) for p in sys.argv[1:3])
print(json.dumps({"conv": round(100 * ev["conv"], 2), "fc": round(100 * ev["fc"], 2), "y": round(100 * ev["y"], 2),
                  "cpu_minutes": round(train["cpu_seconds"] / 60, 1), "command": sys.argv[3]}))
PY
