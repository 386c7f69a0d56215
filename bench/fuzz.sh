#!/usr/bin/env bash
# Fuzz every reader of outside bytes, one target after another, for FUZZTIME
# each (default 60s; any `go test -fuzztime` value: 30s, 5m, 10000x). Exits
# non-zero at the first target that fails; Go then leaves the failing input
# in PKG/testdata/fuzz/FUZZNAME/, where `go test -run 'Fuzz' PKG` (and so the
# ordinary tests) replays it: fix the reader and keep the file.
#
#   bench/fuzz.sh                 # every target, 60 s each (9 targets: about 10 minutes)
#   FUZZTIME=10s bench/fuzz.sh    # a quick pass
#   bench/fuzz.sh npy             # the targets whose package or name contains "npy"
#
# FUZZMINIMIZETIME (default 10s) bounds the minimization of each new input:
# every input the fuzzer finds interesting is shrunk a byte at a time with
# a run per try, which at Go's default (60s) can take up a whole short run.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-60s}"
FUZZMINIMIZETIME="${FUZZMINIMIZETIME:-10s}"
GO="${GO:-go}"
filter="${1:-}"

# package | fuzz function
targets=(
  "./datasets|FuzzReadIDX"
  "./datasets|FuzzIDXPair"
  "./datasets|FuzzCIFAR"
  "./datasets|FuzzSTL10"
  "./internal/npy|FuzzReadFloat32"
  "./serve|FuzzRequestImages"
  "./embed|FuzzSignature"
  "./cmd/dimtorch|FuzzConfigFile"
  "./train|FuzzReadMeta"
)

ran=0
for t in "${targets[@]}"; do
  IFS='|' read -r pkg fn <<<"$t"
  if [[ -n "$filter" && "$pkg $fn" != *"$filter"* ]]; then
    continue
  fi
  echo "== $pkg $fn ($FUZZTIME)"
  if ! "$GO" test -run '^$' -fuzz "^${fn}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" "$pkg"; then
    echo "fuzz.sh: $pkg $fn failed; the input is in ${pkg#./}/testdata/fuzz/$fn/" >&2
    exit 1
  fi
  ran=$((ran + 1))
done
if [[ $ran -eq 0 ]]; then
  echo "fuzz.sh: no target matches \"$filter\"" >&2
  exit 1
fi
echo "fuzz.sh: $ran targets, $FUZZTIME each: no failure"
