#!/usr/bin/env bash
# Deliberately broken versions of the maths, each of which a test must catch.
# For every mutant: apply one small edit to the source, check that the edit
# matched exactly once and that the broken code still compiles, run the test
# that guards it, expect a failure, restore the file. Prints one line per
# mutant with its time and exits non-zero if any mutant survives (its test
# passed), if an edit no longer applies or matches more than once, or if a
# mutant does not compile (BROKEN: a mutant that does not build proves
# nothing about the tests, so it is an error of this script, never "caught").
# All 45 take about 8 minutes on 2 cores (the go build cache warm).
#
#   bench/mutants.sh            # all mutants
#   bench/mutants.sh penalty    # those whose name contains "penalty"
#
# Each mutant is one line "name|file|perl substitution|package|test regex"
# with an optional sixth field "shim": the file is compiled into
# libdimtorch_shim.so (torch/shim.cc, torch/fused.cc), so instead of having
# cgo rebuild package ./torch (minutes), the script rebuilds the CMake build
# in build/shim (only the edited file recompiles) and runs the test with
# -tags dimtorch_shim against it; after restoring the file it rebuilds
# build/shim again, so that it is left as the source is. The test regex's
# first part (up to the first "/") is anchored as a whole: "TestA|TestB/sub"
# runs ^(TestA|TestB)$/sub.
#
# The substitution runs as perl -0pe (the whole file is one string): it
# applies once unless it ends in the g flag. Interrupting the script (^C)
# restores the file being mutated at once (and build/shim with it); a
# SIGTERM or SIGHUP to the script alone restores it when the running command
# returns.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
filter="${1:-}"
tmp=$(mktemp -d)
shim_dir=build/shim
shim_ldflags="-L$root/$shim_dir -Wl,-rpath,$root/$shim_dir"

current=""      # the file now mutated (restored from $tmp/orig), "" when none
current_shim="" # whether build/shim was built from the mutated file
restore() {
  if [[ -n "$current" ]]; then
    cp "$tmp/orig" "$current"
    current=""
    if [[ -n "$current_shim" ]]; then
      current_shim=""
      build_shim >"$tmp/shim-restore" 2>&1 || {
        echo "ERROR        rebuilding $shim_dir after restoring the source failed:" >&2
        tail -20 "$tmp/shim-restore" >&2
        return 1
      }
    fi
  fi
  return 0
}
trap 'restore; rm -rf "$tmp"' EXIT
trap 'echo "interrupted: restoring ${current:-nothing}" >&2; exit 130' INT TERM HUP

build_shim() {
  cmake -S torch -B "$shim_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build "$shim_dir" -j 2
}

# go_test TAGGED ARGS...: go test, against build/shim when TAGGED is "shim".
go_test() {
  local shim=$1
  shift
  if [[ "$shim" == shim ]]; then
    CGO_LDFLAGS="$shim_ldflags ${CGO_LDFLAGS:-}" go test -tags dimtorch_shim "$@"
  else
    go test "$@"
  fi
}

failures=0

# name | file | perl substitution | package | test regex [| shim]
mutants=(
  "estimators-wrong-positives|objectives/estimators.go|s/Slice\(0, 0, n\*n, n\+1\)/Slice(0, 1, n*n, n+1)/|./objectives|TestEstimatorsOptimisable"
  "penalty-doubled|objectives/prior.go|s/gp = g\[0\].Square\(\).SumDims\(\[\]int64\{1\}, false\).Mean\(\)/gp = g[0].Square().Sum().DivScalar(float64(b))/|./objectives|TestGradientPenaltyClosedForm"
  "penalty-doubled-whole-step|objectives/prior.go|s/gp = g\[0\].Square\(\).SumDims\(\[\]int64\{1\}, false\).Mean\(\)/gp = g[0].Square().Sum().DivScalar(float64(b))/|./cmd/dimtorch|TestBenchTrainMatchesPyTorch/default-config"
  "penalty-not-through-gradient|objectives/prior.go|s/CreateGraph: true, RetainGraph: true/CreateGraph: false, RetainGraph: true/|./objectives|TestGradientPenaltyClosedForm"
  "mine-uncorrected-gradient|eval/measures.go|s/et.DivScalar\(ma.add\(etv\)\)/et.DivScalar(etv)/|./eval|TestMINEBiasCorrectedGradient"
  "mine-stale-average|eval/measures.go|s/m.value = \(1-m.rate\)\*m.value \+ m.rate\*v/m.value = m.value/|./eval|TestMINEBiasCorrectedGradient"
  "mine-correction-sign|eval/measures.go|s/tj.Mean\(\).Sub\(et.DivScalar/tj.Mean().Add(et.DivScalar/|./eval|TestMINEClosedForm"
  "dv-bound-without-log-n|eval/measures.go|s/LogSumExp\(\[\]int64\{0\}, false\).SubScalar\(math.Log\(n\)\)/LogSumExp([]int64{0}, false).SubScalar(math.Log(n)*0)/|./eval|TestNDMClosedForm"
  "ndm-rows-not-columns-shuffled|eval/measures.go|s/cols\[j\] = torch.RandPerm\(b, y.Scope\(\)\)/cols[j] = torch.Arange(0, float64(b), 1, torch.Int64, y.Scope())/|./eval|TestNDMClosedForm"
  "estimator-in-bfloat16|objectives/views.go|s/return score\(l, g\).To\(torch.Float32\)/return score(l, g)/|./objectives|TestEstimatorsRunInFloat32UnderAutocast"
  "head-shortcut-bias|models/heads.go|s/c := nn.NewConv2d\(in, units, 1, torch.ConvOptions\{\}, false\)/c := nn.NewConv2d(in, units, 1, torch.ConvOptions{}, true)/|./models|TestMIHeads"
  "probe-scored-on-training-data|eval/probes.go|s/acc, err := accuracy\(mlp, xTe, yTe, sc\)/acc, err := accuracy(mlp, xTr, yTr, sc)/|./eval|TestProbesAtChanceOnNoise"
  "adam-beta2-default|torch/optim/optim.go|s/(func NewAdam\(params \[\]\*torch.Tensor, o AdamOptions\) \(\*Adam, error\) \{)/\$1\n\tif o.Beta2 == 0 {\n\t\to.Beta2 = 0.999\n\t}/|./torch/optim|TestAdamZeroBeta1"
  "onednn-linear-bias-dropped|torch/shim.cc|s/ww.reshape\(\{ww.size\(0\), k, 1, 1\}\), opt\(b\)\)/ww.reshape({ww.size(0), k, 1, 1}))/|./torch|TestOneDNNLinearMatchesATenLinear|shim"
  "batchnorm-initial-statistics|eval/batchnorm.go|s/b.Cumulative = true/b.Cumulative = false/|./eval|TestCalibrateBatchNorm"
  "fused-adam-avx512-beta1-swapped|torch/fused.cc|s/_mm512_fmadd_ps\(g, omb1, _mm512_mul_ps\(m, b1\)\)/_mm512_fmadd_ps(g, b1, _mm512_mul_ps(m, omb1))/|./torch/optim|TestFusedAdamMatchesATen|shim"
  "reducer-sums-instead-of-mean|torch/dist/dist.cc|s/(c10d::kDefaultFirstBucketBytes\);\n)/\$1  struct SumHook : c10d::CommHookInterface {\n    c10::intrusive_ptr<c10d::ProcessGroup> pg;\n    explicit SumHook(c10::intrusive_ptr<c10d::ProcessGroup> p) : pg(std::move(p)) {}\n    c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket &b) override {\n      std::vector<at::Tensor> t = {b.getBufferRef()};\n      return pg->allreduce(t)->getFuture();\n    }\n    at::Tensor parseHookResult(const c10::IValue &v) override { return v.isTensor() ? v.toTensor() : v.toTensorVector()[0]; }\n  };\n  r->r->register_comm_hook(std::make_unique<SumHook>(base));\n/|./torch/dist|TestReducer"
  "syncbn-no-between-rank-variance|torch/nn/layers.go|s/\.Add\(dev\.Square\(\)\.Mul\(counts\)\.SumDims\(\[\]int64\{0\}, false\)\)/.Add(dev.Square().Mul(counts).SumDims([]int64{0}, false).MulScalar(0))/|./torch/dist|TestSyncBatchNorm"
  "vae-kl-mean-sign|objectives/autoencoders.go|s/lv\.AddScalar\(1\)\.Sub\(mu\.Square\(\)\)/lv.AddScalar(1).Add(mu.Square())/|./objectives|TestMethodsAgainstPyTorch/^vae-bernoulli\$"
  "aae-prior-term-subtracted|objectives/autoencoders.go|s/t\.Total = t\.Recon\.Add\(t\.Prior\)/t.Total = t.Recon.Sub(t.Prior)/|./objectives|TestMethodsAgainstPyTorch/^aae\$"
  "bigan-fake-pairs-unflipped|objectives/bigan.go|s/Add\(fake\.Neg\(\)\.Softplus\(\)\.Mean\(\)\)/Add(fake.Softplus().Mean())/|./objectives|TestMethodsAgainstPyTorch/^bigan\$"
  "nat-codes-off-the-sphere|objectives/nat.go|s/ClampMin\(1e-24\)\.Sqrt\(\)\)/ClampMin(1e-24))/|./objectives|TestMethodsAgainstPyTorch/^nat\$"
  "cpc-predicts-the-wrong-row|objectives/cpc.go|s/truth := rows\(z\.Narrow\(2, k, h-k\)\)/truth := rows(z.Narrow(2, k-1, h-k))/|./objectives|TestMethodsAgainstPyTorch/^cpc\$"
  "cpc-context-sees-below|objectives/cpc.go|s/x\.Pad\(\[\]int64\{1, 1, 2, 0\}/x.Pad([]int64{1, 1, 1, 1}/|./objectives|TestCPCContextIsCausal"
  "int8-weight-scale-per-tensor|export/quantize.go|s/for _, x := range row \{\n(\s+m = math\.Max)/for _, x := range v {\n\$1/|./export|TestWeightScalesPerChannel"
  "int8-weight-scale-halved|export/quantize.go|s/s := m \/ 127\n/s := m \/ 254\n/|./export|TestQuantizedMatchesFloat/^dcgan32\$"
  "int8-activation-range-from-max-only|export/quantize.go|s/lo, hi := math\.Min\(float64\(r\.Min\), 0\), /lo, hi := 0.0, /|./export|TestQuantizedMatchesFloat/^dcgan32\$"
  "swap-discards-old-before-rename|train/rundir.go|s/(\n\tif err := atomicfile\.Sys\.Rename\(tmp, dst\); err != nil \{)/\n\tif err := discard(run, old); err != nil {\n\t\treturn err\n\t}\$1/|./train|TestCheckpointSurvivesKills"
  "swap-no-sync-after-rename|train/rundir.go|s/(savePoint\(\"swapped\"\)\n)\tsyncDir\(run\)\n/\$1/|./train|TestCheckpointSurvivesPowerCut"
  "nce-positive-not-in-denominator|objectives/estimators.go|s/lse := torch\.Stack\(\[\]\*torch\.Tensor\{p, negLSE\}, 0\)\.LogSumExp\(\[\]int64\{0\}, false\)/lse := negLSE/|./objectives|TestEstimatorsAgainstReference"
  "jsd-positive-softplus-sign|objectives/estimators.go|s/t\.Neg\(\)\.Softplus\(\)\.RSub\(log2\)/t.Softplus().RSub(log2)/|./objectives|TestEstimatorsAgainstReference"
  "amdim-views-not-crossed|objectives/views.go|s/global\.Narrow\(0, b\*n, n\)/global.Narrow(0, a*n, n)/|./objectives|TestAMDIMAgainstPyTorch"
  "amdim-5t5-dropped|objectives/amdim.go|s/case \x225-5\x22:/case \x225-5 dropped\x22:/|./objectives|TestAMDIMAgainstPyTorch"
  "amdim-1t5-from-local-map|objectives/amdim.go|s/mv\.loss\(infoNCE\{\}, conv, g, DotScores\)/mv.loss(infoNCE{}, a.local.Forward(taps.Local), g, DotScores)/|./objectives|TestAMDIMAgainstPyTorch"
  "amdim-one-position-for-all|objectives/amdim.go|s/idx\.Reshape\(r, 1, 1\)\.Expand\(r, 1, u\)/idx.Narrow(0, 0, 1).Reshape(1, 1, 1).Expand(r, 1, u)/|./objectives|TestAMDIMAgainstPyTorch"
  "dim-beta-ignored|objectives/dim.go|s/total\.Add\(t\.Local\.MulScalar\(d\.Cfg\.Beta\)\)/total.Add(t.Local)/|./objectives|TestDIMLossComposition"
  "dim-gamma-applied-twice|objectives/dim.go|s/t\.Prior\.MulScalar\(d\.Cfg\.Gamma\)/t.Prior.MulScalar(d.Cfg.Gamma * d.Cfg.Gamma)/|./objectives|TestDIMLossComposition"
  "serve-keys-not-checked|serve/serve.go|s/if err = authenticate\(keys, w, r\); err != nil/if err = authenticate(nil, w, r); err != nil/|./serve|TestAPIKeys"
  "trace-context-ignored|serve/tracing.go|s/ctx := traceContext\.Extract\(r\.Context\(\), propagation\.HeaderCarrier\(r\.Header\)\)/ctx := r.Context()/|./serve|TestTracing"
  "reload-closes-the-old-model-under-its-requests|serve/reload.go|s/\t\td\.users\.Wait\(\)\n//|./serve|TestReloadUnderLoad"
  "ann-similarity-from-distance|ann/ann.go|s/Similarity: 1 - float64\(dist\[i\]\)\/2/Similarity: 1 - float64(dist[i])/|./ann|TestHNSWRecallAndExactSimilarities"
  "ann-nprobe-not-set|ann/shim.cc|s/v->nprobe = static_cast<size_t>\(value\);/(void)value;/|./ann|TestIVFScanningEveryCellIsExact"
  "shard-loader-resumes-from-the-epoch-start|datasets/shardloader.go|s/start = max\(0, min\(start, nb\)\)/start = 0/|./datasets|TestShardLoaderResumesExactly"
  "shard-ranks-overlap|datasets/shardloader.go|s/for i := l\.o\.Rank; i < len\(shards\); i \+= l\.o\.World \{/for i := l.o.Rank; i < len(shards); i++ {/|./datasets|TestShardLoaderRanksAndShuffle"
  "gallery-index-of-another-gallery-accepted|serve/gallery_index.go|s/if gsum != meta\.GallerySHA256 \{/if false \&\& gsum != meta.GallerySHA256 {/|./serve|TestGalleryIndexRefused"
)

selected=()
for m in "${mutants[@]}"; do
  IFS='|' read -r name _ <<<"$m"
  [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
  selected+=("$m")
done
if ((${#selected[@]} == 0)); then
  echo "no mutant's name contains \"$filter\"" >&2
  exit 1
fi

# build/shim as the source is, before the first mutant that needs it (the
# first build takes a while; later ones recompile only what changed).
for m in "${selected[@]}"; do
  IFS='|' read -r _ _ _ _ _ kind <<<"$m"
  if [[ "$kind" == shim ]]; then
    if ! build_shim >"$tmp/shim" 2>&1; then
      echo "ERROR        building $shim_dir from the unmodified source failed:" >&2
      tail -20 "$tmp/shim" >&2
      exit 1
    fi
    break
  fi
done

report() { # report STATUS SECONDS TEXT
  printf '%-12s %4ds  %s\n' "$1" "$2" "$3"
}

start=$SECONDS
for m in "${selected[@]}"; do
  IFS='|' read -r name file subst pkg test kind <<<"$m"
  t0=$SECONDS
  if [[ -n "$kind" && "$kind" != shim ]]; then
    report ERROR 0 "$name: unknown sixth field \"$kind\" (want shim or nothing)"
    failures=$((failures + 1))
    continue
  fi
  cp "$file" "$tmp/orig"
  if ! perl -0pe "$subst" "$tmp/orig" >"$tmp/mutant"; then
    report ERROR 0 "$name: the perl substitution does not run"
    failures=$((failures + 1))
    continue
  fi
  if cmp -s "$tmp/mutant" "$tmp/orig"; then
    report "NOT APPLIED" 0 "$name ($file): the edit no longer matches the source"
    failures=$((failures + 1))
    continue
  fi
  # Exactly once: the same substitution applied everywhere (flag g) must
  # change nothing more.
  if [[ ! "$subst" =~ /[a-z]*g[a-z]*$ ]]; then
    perl -0pe "${subst}g" "$tmp/orig" >"$tmp/global"
    if ! cmp -s "$tmp/global" "$tmp/mutant"; then
      report AMBIGUOUS 0 "$name ($file): the edit matches more than once; make it match one place"
      failures=$((failures + 1))
      continue
    fi
  fi
  current=$file
  cp "$tmp/mutant" "$file"
  broken=""
  if [[ "$kind" == shim ]]; then
    current_shim=1
    build_shim >"$tmp/build" 2>&1 || broken="$shim_dir does not build"
  fi
  if [[ -z "$broken" ]] && ! go_test "$kind" -count=1 -run '^$' "$pkg" >"$tmp/build" 2>&1; then
    broken="$pkg's tests do not build"
  fi
  regex="^(${test%%/*})\$${test#"${test%%/*}"}"
  if [[ -n "$broken" ]]; then
    why=$(grep -m1 -E 'error|Error|undefined|declared|cannot' "$tmp/build" | sed 's/^\s*//' | cut -c1-150)
    status=BROKEN text="$name: the mutant does not compile ($broken): ${why:-$(tail -1 "$tmp/build" | cut -c1-150)}"
  elif go_test "$kind" -count=1 -run "$regex" "$pkg" >"$tmp/out" 2>&1; then
    if grep -q 'no tests to run' "$tmp/out"; then
      status="NO TESTS" text="$name: -run '$regex' matches no test in $pkg"
    else
      status=SURVIVED text="$name: $test passed on the broken code"
    fi
  else
    why=$(grep -E '^\s+\S+_test.go:[0-9]+:' "$tmp/out" | tail -1 | sed 's/^\s*//' | cut -c1-150)
    status=caught text="$name by $test: ${why:-$(grep -m1 -E 'FAIL|panic|error' "$tmp/out" | cut -c1-150)}"
  fi
  restore || failures=$((failures + 1))
  [[ "$status" == caught ]] || failures=$((failures + 1))
  report "$status" $((SECONDS - t0)) "$text"
done
echo "$((${#selected[@]})) mutants, $failures not caught or broken, $((SECONDS - start))s"
exit $((failures > 0))
