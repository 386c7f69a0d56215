#!/usr/bin/env bash
# Deliberately broken versions of the maths, each of which a test must catch.
# For every mutant: apply one small edit to the source, run the test that
# guards it, expect a failure, restore the file. Prints one line per mutant
# and exits non-zero if any mutant survives (its test passed) or an edit no
# longer applies. Takes about 10 minutes on 2 cores.
#
#   bench/mutants.sh            # all mutants
#   bench/mutants.sh penalty    # those whose name contains "penalty"
set -uo pipefail
cd "$(dirname "$0")/.."
filter="${1:-}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
survivors=0

# name | file | perl substitution | package | test regex
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
  "estimator-in-bfloat16|objectives/dim.go|s/return score\(l, g\).To\(torch.Float32\)/return score(l, g)/|./objectives|TestEstimatorsRunInFloat32UnderAutocast"
  "head-shortcut-bias|models/heads.go|s/c := nn.NewConv2d\(in, units, 1, torch.ConvOptions\{\}, false\)/c := nn.NewConv2d(in, units, 1, torch.ConvOptions{}, true)/|./models|TestMIHeads"
  "probe-scored-on-training-data|eval/probes.go|s/acc, err := accuracy\(mlp, xTe, yTe, sc\)/acc, err := accuracy(mlp, xTr, yTr, sc)/|./eval|TestProbesAtChanceOnNoise"
  "adam-beta2-default|torch/optim/optim.go|s/(func NewAdam\(params \[\]\*torch.Tensor, o AdamOptions\) \(\*Adam, error\) \{)/\$1\n\tif o.Beta2 == 0 {\n\t\to.Beta2 = 0.999\n\t}/|./torch/optim|TestAdamZeroBeta1"
  "onednn-linear-bias-dropped|torch/shim.cc|s/ww.reshape\(\{ww.size\(0\), k, 1, 1\}\), opt\(b\)\)/ww.reshape({ww.size(0), k, 1, 1}))/|./torch|TestOneDNNLinearMatchesATenLinear"
  "batchnorm-initial-statistics|eval/batchnorm.go|s/b.Cumulative = true/b.Cumulative = false/|./eval|TestCalibrateBatchNorm"
)

for m in "${mutants[@]}"; do
  IFS='|' read -r name file subst pkg test <<<"$m"
  [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
  cp "$file" "$tmp/orig"
  perl -0pi -e "$subst" "$file"
  if cmp -s "$file" "$tmp/orig"; then
    echo "NOT APPLIED  $name ($file): the edit no longer matches the source"
    survivors=$((survivors + 1))
    continue
  fi
  if go test -count=1 -run "^${test%%/*}\$${test#${test%%/*}}" "$pkg" >"$tmp/out" 2>&1; then
    echo "SURVIVED     $name: $test passed on the broken code"
    survivors=$((survivors + 1))
  else
    why=$(grep -E '^\s+\S+_test.go:[0-9]+:' "$tmp/out" | tail -1 | sed 's/^\s*//' | cut -c1-150)
    echo "caught       $name by $test: ${why:-$(grep -m1 -E 'FAIL|panic|error' "$tmp/out" | cut -c1-150)}"
  fi
  cp "$tmp/orig" "$file"
done
exit $((survivors > 0))
