#!/usr/bin/env bash
# make quality: trains the best recipe found (bench/recipes.sh; docs/evaluation.md,
# "Representation quality") from scratch on Fashion-MNIST once per seed of
# SEEDS, probes conv, fc and Y of each with the offline linear probe on all
# 60,000 training labels, and prints one JSON line per seed, then last one
# JSON line with the mean and sample standard deviation over the seeds of the
# three test accuracies (%) and of the training's CPU minutes (user + system
# of `dimtorch train`, as the process measures it), the CPU it ran on and the
# command.
# The goal it is measured against: Y >= 88 and conv >= 91 within 30 CPU-minutes.
#
# Usage: bench/quality.sh [RUN_DIR]   (default: runs/quality-DATE; an existing
# directory is refused, so every figure comes from runs from scratch; the
# seeds' runs are RUN_DIR/seed-N)
#   environment (defaults): RECIPE=DIM_BEST (or AMDIM: a name in bench/recipes.sh)
#   EPOCHS=10 SEEDS="1 2 3" THREADS=1 JOBS=(the CPU count, at most the seeds)
# JOBS seeds train at once, each with THREADS threads: the default runs one
# single-threaded training per core, the cheapest way in CPU time (no OpenMP
# threads spinning while they wait for each other).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/recipes.sh
B=bin/dimtorch
[ -x $B ] || go build -o $B ./cmd/dimtorch
R=${1:-runs/quality-$(date +%Y%m%d-%H%M%S)}
RECIPE=${RECIPE:-DIM_BEST}
EPOCHS=${EPOCHS:-10}
SEEDS=${SEEDS:-1 2 3}
THREADS=${THREADS:-1}
nseeds=$(wc -w <<<"$SEEDS")
JOBS=${JOBS:-$(( $(nproc) < nseeds ? $(nproc) : nseeds ))}
if [ -e "$R" ]; then
  echo "bench/quality.sh: $R exists; give a new directory (every figure comes from a run from scratch)" >&2
  exit 1
fi
declare -n recipe=$RECIPE
flags=(--data fashion-mnist "${recipe[@]}" --epochs "$EPOCHS" --threads "$THREADS")
mkdir -p "$R"
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
one_seed() {
  local s=$1
  $B train "${flags[@]}" --seed "$s" --out "$R/seed-$s" --json 2>"$R/seed-$s.log" | tail -1 >"$R/seed-$s.train.json"
  $B eval --checkpoint "$R/seed-$s" --probe linear --features conv,fc,y --threads "$THREADS" --json 2>>"$R/seed-$s.log" |
    tail -1 >"$R/seed-$s.eval.json"
  /usr/bin/python3 - "$R/seed-$s.train.json" "$R/seed-$s.eval.json" "$s" >"$R/seed-$s.json" <<'PY'
import json, sys
train, ev = (json.load(open(p)) for p in sys.argv[1:3])
print(json.dumps({"seed": int(sys.argv[3]), "conv": round(100 * ev["conv"], 2), "fc": round(100 * ev["fc"], 2),
                  "y": round(100 * ev["y"], 2), "cpu_minutes": round(train["cpu_seconds"] / 60, 1)}))
PY
}
echo "bench/quality.sh: $RECIPE for $EPOCHS epochs, seeds $SEEDS, $JOBS at a time with $THREADS thread(s) each; logs in $R/seed-N.log" >&2
pids=() failed=0
for s in $SEEDS; do
  one_seed "$s" &
  pids+=($!)
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || failed=1; done
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
if [ "$failed" != 0 ]; then
  echo "bench/quality.sh: a seed's training or probe failed; see $R/seed-N.log" >&2
  exit 1
fi
for s in $SEEDS; do cat "$R/seed-$s.json"; done
/usr/bin/python3 - "$R" "$cpu" "dimtorch train ${flags[*]} --seed SEED --out $R/seed-SEED" $SEEDS <<'PY'
import json, statistics, sys
run, cpu, cmd, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
rows = [json.load(open(f"{run}/seed-{s}.json")) for s in seeds]
out = {}
for k in ("conv", "fc", "y", "cpu_minutes"):
    v = [r[k] for r in rows]
    out[k] = round(statistics.mean(v), 2)
    out[k + "_std"] = round(statistics.stdev(v), 2) if len(v) > 1 else None
out.update({"seeds": [int(s) for s in seeds], "cpu": cpu, "command": cmd})
print(json.dumps(out))
PY
