#!/usr/bin/env bash
# dimtorch's Table 1 at equal compute: every method trains for the same
# BUDGET of CPU-minutes on the machine it runs on (the epochs that fit, at
# least one, planned per method from three short calibration runs of its
# real training and kept in RUNS_DIR/NAME.plan.json), then the linear probe and the paper's
# MLP probe (200 hidden units, BatchNorm, dropout; Adam at MLP_LR 1e-3 for
# MLP_EPOCHS 50 epochs: at the paper's 1e-4 it is far from converged within
# minutes) on conv, fc and Y, trained on the first LABELS training labels,
# and the few-label probe (linear, on the first PER_CLASS images of each
# class), all scored on the 10,000 test images.
#
# Rows: the paper's baselines (VAE, AAE, BiGAN, NAT, CPC), DIM(G) and DIM(L)
# with JSD, infoNCE and DV as the paper trains them (one view, the prior
# game), DIM's best recipe and multi-scale DIM (bench/recipes.sh), the
# untrained encoder and raw pixels. The VAE, DIM's best and multi-scale DIM
# (the headline rows) train once per seed of SEEDS, the others with seed 1.
# Every method: batch 64, THREADS threads, Adam betas (0.5, 0.999) at lr 1e-3
# (BiGAN: 2e-4, the BiGAN and DCGAN papers'; the two DIM recipes: 2e-3), a
# cosine schedule over its planned steps, bfloat16 autocast (BF16=0: off).
#
# Finished steps are skipped, so an interrupted run continues where it
# stopped (an interrupted training resumes from its last epoch). JOBS
# trainings (each with its probes) run at once, THREADS threads each: on the
# CPU the default is one single-threaded training per core, the cheapest way
# in CPU time (no OpenMP threads spinning while they wait for each other).
# Every row is planned first, JOBS calibrations at a time, so that each
# calibration shares the machine as its trainings will. Which rows then train
# side by side is not planned: on the 2-core EPYC a VAE training beside a DIM
# one used 1.7 times its CPU time alone, so JOBS=1 holds the budget tightest.
#
# Usage: bench/table1.sh [RUNS_DIR]     (default runs/table1-budget)
#   environment (defaults): BUDGET=20 SEEDS="1 2 3" LABELS=10000 PER_CLASS=100 MLP_EPOCHS=50 MLP_LR=1e-3
#   THREADS=1 JOBS=(CPU count; 1 on cuda) BF16=1 DATA=fashion-mnist ENCODER=basic28 AMDIM_ENCODER=amdim28 MI_UNITS=256 DEVICE=cpu
#   TRAIN_IMAGES=60000 CALIBRATE=12800 (images of the longer calibration run)
#   The CIFAR-10 table for a GPU (docs/evaluation.md): DATA=cifar10 ENCODER=dcgan32 AMDIM_ENCODER=amdim32
#   MI_UNITS=2048 DEVICE=cuda TRAIN_IMAGES=50000 LABELS=50000 BUDGET=... bench/table1.sh runs/table1-cifar10
#   ROWS="vae aae ..." (a subset, to run the table in parts; the default: all)
#   LIMIT=N: train on the first N images (a smoke test; set TRAIN_IMAGES=N with it)
#   EPOCHS=N: N epochs for every method instead of the budget (EPOCHS=1: the one-epoch table of before)
#   PLAN_ONLY=1: plan every row (or ROWS) and stop: the plans then hold when the rest runs elsewhere
# A table that runs in parts on different machines keeps the epochs of the
# machine that planned it (NAME.plan.json); results/ in the repository holds
# the records of the table in docs/evaluation.md (the small files of each run:
# configuration, metrics, checkpoint.json, probes), from which this script
# continues: bench/table1.sh results/table1-budget.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/recipes.sh
R=${1:-runs/table1-budget}
BUDGET=${BUDGET:-20}
SEEDS=${SEEDS:-1 2 3}
LABELS=${LABELS:-10000}
PER_CLASS=${PER_CLASS:-100}
THREADS=${THREADS:-1}
DATA=${DATA:-fashion-mnist}
ENCODER=${ENCODER:-basic28}
AMDIM_ENCODER=${AMDIM_ENCODER:-amdim28}
MI_UNITS=${MI_UNITS:-256}
DEVICE=${DEVICE:-cpu}
TRAIN_IMAGES=${TRAIN_IMAGES:-60000}
CALIBRATE=${CALIBRATE:-12800}
MLP_EPOCHS=${MLP_EPOCHS:-50}
MLP_LR=${MLP_LR:-1e-3}
if [ "$DEVICE" = cpu ]; then JOBS=${JOBS:-$(nproc)}; else JOBS=${JOBS:-1}; fi
B=bin/dimtorch
[ -x $B ] || go build -o $B ./cmd/dimtorch
mkdir -p "$R"
common=(--data "$DATA" --batch-size 64 --threads "$THREADS" --device "$DEVICE" --lr-schedule cosine --limit "${LIMIT:-0}")
[ "${BF16:-1}" = 1 ] && common+=(--bf16)

# plan NAME FLAGS...: the epochs that fit the budget (EPOCHS when set), kept
# in NAME.plan.json. The cost of an image is measured on the method's real
# training: the CPU time of a run on CALIBRATE images less that of a run on
# half as many, over the difference (which cancels what a run spends once:
# start-up, loading the data, the first steps' allocations); the cost of an
# epoch besides its images (the online probe's pass over the test set, the
# checkpoint) from a third run, two epochs of the half.
plan() {
  local name=$1
  shift
  local f=$R/$name.plan.json
  if [ -n "${EPOCHS:-}" ]; then
    echo "$EPOCHS"
    return
  fi
  if [ ! -f "$f" ]; then
    mkdir -p "$R/calibrate"
    local n e half=$((CALIBRATE / 2))
    for run in "1 $half" "1 $CALIBRATE" "2 $half"; do
      read -r e n <<<"$run"
      local cal=$R/calibrate/$name-$e-$n
      rm -rf "$cal"
      $B train "${common[@]}" "$@" --seed 1 --epochs "$e" --limit "$n" --out "$cal" >/dev/null 2>"$cal.log" || {
        cat "$cal.log" >&2
        return 1
      }
    done
    /usr/bin/python3 - "$R/calibrate/$name" "$BUDGET" "$TRAIN_IMAGES" "$CALIBRATE" >"$f.tmp" <<'PY'
import json, sys
base, budget, images, cal = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
half = cal // 2
cpu = {run: json.load(open(f"{base}-{run}/checkpoint/checkpoint.json"))["state"]["cpu_seconds"]
       for run in (f"1-{half}", f"1-{cal}", f"2-{half}")}
a, b, c = cpu[f"1-{half}"], cpu[f"1-{cal}"], cpu[f"2-{half}"]
per_image = (b - a) / (cal - half)
if per_image < 0.25 * b / cal:  # runs too short to tell the images' cost from noise:
    per_image = b / cal         # the longer run's whole cost over its images, an overestimate
per_epoch = max(0.0, c - a - half * per_image)  # the epoch's own work: the online probe's test pass, the checkpoint
epoch_cost = per_image * images + per_epoch
epochs = max(1, round(budget * 60 / epoch_cost))
print(json.dumps({"epochs": epochs, "budget_cpu_minutes": budget, "calibration_images": [half, cal],
                  "calibration_cpu_seconds": {"1 epoch of %d" % half: a, "1 epoch of %d" % cal: b, "2 epochs of %d" % half: c},
                  "cpu_seconds_per_image": per_image, "cpu_seconds_per_epoch_besides_images": per_epoch,
                  "planned_cpu_minutes": round(epochs * epoch_cost / 60, 1)}))
PY
    mv "$f.tmp" "$f"
  fi
  /usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["epochs"])' "$f"
}
train() { # DIR EPOCHS SEED FLAGS...
  local dir=$1 epochs=$2 seed=$3
  shift 3
  local ck=$dir/checkpoint/checkpoint.json
  if [ -f "$ck" ] && grep -q '"completed": *true' "$ck"; then
    return
  fi
  if [ -f "$ck" ]; then
    $B train --resume --out "$dir"
  else
    $B train "${common[@]}" "$@" --seed "$seed" --epochs "$epochs" --out "$dir"
  fi
}
mlp_flags() { [ "$1" = mlp ] && echo "--epochs $MLP_EPOCHS --probe-lr $MLP_LR"; return 0; }
probe() { # DIR EVAL_FLAGS...: linear and MLP on LABELS, linear on PER_CLASS a class; each skipped when done
  local dir=$1
  shift
  for p in linear mlp; do
    ls "$dir"/eval/$p-*-n"$LABELS".json >/dev/null 2>&1 ||
      $B eval "$@" --probe $p --limit-train "$LABELS" $(mlp_flags $p) --threads "$THREADS" --device "$DEVICE" --out "$dir"
  done
  ls "$dir"/eval/linear-*-c"$PER_CLASS".json >/dev/null 2>&1 ||
    $B eval "$@" --probe linear --labels-per-class "$PER_CLASS" --threads "$THREADS" --device "$DEVICE" --out "$dir"
}
row() { # NAME HEADLINE(0/1) FLAGS...
  local name=$1 headline=$2
  shift 2
  case " ${ROWS:-$name} " in *" $name "*) ;; *) return 0 ;; esac
  local epochs seeds=1
  if [ "$PASS" = plan ]; then # calibrate JOBS rows at a time, in the background
    [ -n "${EPOCHS:-}" ] || [ -f "$R/$name.plan.json" ] && return 0
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || failed=1; done
    plan "$name" "$@" >/dev/null &
    pids+=($!)
    return 0
  fi
  epochs=$(plan "$name" "$@")
  [ "$headline" = 1 ] && seeds=$SEEDS
  for s in $seeds; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || failed=1; done
    (
      train "$R/$name-s$s" "$epochs" "$s" "$@"
      probe "$R/$name-s$s" --checkpoint "$R/$name-s$s" --features conv,fc,y
    ) >>"$R/$name-s$s.log" 2>&1 &
    pids+=($!)
  done
}
rows() {
row vae 1 --method vae --encoder "$ENCODER" --lr 1e-3
row aae 0 --method aae --encoder "$ENCODER" --lr 1e-3
row bigan 0 --method bigan --encoder "$ENCODER" --lr 2e-4
row nat 0 --method nat --encoder "$ENCODER" --lr 1e-3
row cpc 0 --method cpc --encoder "$ENCODER" --lr 1e-3 --flush-denormals # denormals slow its softmax tenfold
row dim-g-jsd 0 --encoder "$ENCODER" --mode global --estimator jsd --mi-units "$MI_UNITS" --lr 1e-3
row dim-l-jsd 0 --encoder "$ENCODER" --mode local --estimator jsd --mi-units "$MI_UNITS" --lr 1e-3
row dim-l-nce 0 --encoder "$ENCODER" --mode local --estimator nce --mi-units "$MI_UNITS" --lr 1e-3
row dim-l-dv 0 --encoder "$ENCODER" --mode local --estimator dv --mi-units "$MI_UNITS" --lr 1e-3
row dim-best 1 "${DIM_BEST[@]}" --encoder "$ENCODER" --mi-units "$MI_UNITS"
row amdim 1 "${AMDIM[@]}" --encoder "$AMDIM_ENCODER" --mi-units "$MI_UNITS"
}
# Every row is planned before any trains, JOBS calibrations at a time: each
# calibration then shares the machine as its trainings will (JOBS at once),
# where planning a row while JOBS trainings ran made some calibrations run
# with company and others alone (the 2026-12-05 EPYC table: the VAE's alone,
# and its trainings used 6.5 CPU-minutes of a 5-minute budget).
pids=() failed=0
PASS=plan
rows
for p in "${pids[@]}"; do wait "$p" || failed=1; done
if [ "$failed" != 0 ]; then
  echo "bench/table1.sh: a calibration failed (its log is printed above; run again to continue)" >&2
  exit 1
fi
[ -n "${PLAN_ONLY:-}" ] && exit 0
pids=()
PASS=train
rows
for p in "${pids[@]}"; do wait "$p" || failed=1; done
if [ "$failed" != 0 ]; then
  echo "bench/table1.sh: a training or probe failed; see $R/NAME-sSEED.log (run again to continue)" >&2
  exit 1
fi
if [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" untrained "* ]]; then
  probe "$R/untrained" --random-init --encoder "$ENCODER" --data "$DATA" --seed 1 --features conv,fc,y
  probe "$R/untrained-amdim" --random-init --encoder "$AMDIM_ENCODER" --data "$DATA" --seed 1 --features conv,fc,y
fi
if [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" pixels "* ]]; then
  probe "$R/pixels" --pixels --data "$DATA"
fi
runs=()
for d in "$R"/*-s[0-9]* "$R"/untrained "$R"/untrained-amdim "$R"/pixels; do
  [ -d "$d/eval" ] && runs+=("$d")
done
$B report --out "$R/report" "${runs[@]}"
/usr/bin/python3 bench/table1_markdown.py "$R" "$LABELS" "$PER_CLASS" | tee "$R/table1.md"
