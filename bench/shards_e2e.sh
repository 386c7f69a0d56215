#!/usr/bin/env bash
# Issue 27's end-to-end run: N generated JPEGs (bench/make_jpegs.py, sizes
# 256x256 and 500x375, ten classes) and a tenth as many for the test split,
# written as shards, a data-parallel training of PROCS processes on them
# interrupted with Ctrl-C during its first epoch and resumed, then the
# linear probe on Y. The log's "epoch done" lines split each epoch's time
# into waiting for data and stepping.
#
#   bench/shards_e2e.sh [DIR]      (default runs/shards-e2e)
#   environment (defaults): N=100000 PROCS=2 EPOCHS=2 ENCODER=dcgan32 MI_UNITS=64 SHARD_SIZE=256MB WORKERS=1 INTERRUPT_AT=300 (steps)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/shards-e2e}
N=${N:-100000}
PROCS=${PROCS:-2}
EPOCHS=${EPOCHS:-2}
B=bin/dimtorch
[ -x $B ] || go build -o $B ./cmd/dimtorch
mkdir -p "$R"
if [ ! -f "$R/shards/manifest.json" ]; then
  [ -d "$R/images/c9" ] || /usr/bin/python3 bench/make_jpegs.py "$R/images" "$N" --seed 1
  [ -d "$R/test-images/c9" ] || /usr/bin/python3 bench/make_jpegs.py "$R/test-images" $((N / 10)) --seed 2
  $B data shard --from "$R/test-images" --out "$R/shards/test" --prefix test --shard-size "${SHARD_SIZE:-256MB}"
  $B data shard --from "$R/images" --out "$R/shards" --shard-size "${SHARD_SIZE:-256MB}"
fi
run=$R/run
rm -rf "$run"
args=(train --data "shards:$R/shards" --encoder "${ENCODER:-dcgan32}" --mi-units "${MI_UNITS:-64}" --epochs "$EPOCHS"
  --nproc-per-node "$PROCS" --threads 1 --workers "${WORKERS:-1}" --out "$run")
echo "== training, to be interrupted after ${INTERRUPT_AT:-300} steps: dimtorch ${args[*]}"
$B "${args[@]}" 2>"$run.log" &
pid=$!
step() { grep -o '"kind":"step","epoch":[0-9]*,"step":[0-9]*' "$run/metrics.jsonl" 2>/dev/null | tail -1 | grep -o '[0-9]*$' || echo 0; }
until [ "$(step)" -ge "${INTERRUPT_AT:-300}" ]; do
  kill -0 $pid 2>/dev/null || { cat "$run.log"; echo "the training ended before the interrupt" >&2; exit 1; }
  sleep 2
done
kill -INT $pid
set +e
wait $pid
code=$?
set -e
echo "interrupted: exit code $code (130 expected)"
grep -E 'checkpoint|resume' "$run.log" | tail -2
echo "== resuming: dimtorch train --resume --nproc-per-node $PROCS --out $run"
$B train --resume --nproc-per-node "$PROCS" --threads 1 --out "$run" 2>&1 | tee "$run.resume.log" | grep -E 'epoch done|trained|online probe'
echo "== probing: linear on Y, 10,000 training labels, the test split"
$B eval --checkpoint "$run" --probe linear --features y --limit-train 10000 --threads 2 2>&1 | tail -3
