#!/usr/bin/env bash
# Builds the GPU check's bundle: everything `bench/gpu_check.py` needs on a
# machine that has Python's PyTorch (with its libtorch), cmake and a C++
# compiler but no Go toolchain and no network.
#
#   bench/gpu_bundle.sh [OUT_DIR]        # default build/gpu-check
#
# (The shim's sources go in shim/, not torch/, so that `import torch` in
# the check finds PyTorch.) The bundle holds the Go binaries built here with -tags dimtorch_shim (they
# link libdimtorch_shim.so, which the check builds there against that
# machine's libtorch), the shim's sources, the torch tests' fixtures,
# bench/train_dim.py, the check itself and a 10,000-image subset of
# Fashion-MNIST's training split with the whole test split (about 9 MB).
# Set DIMTORCH_BUNDLE_ORT=1 to add the onnxruntime library (35 MB) for
# machines whose Python has no onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/gpu-check}
GO=${GO:-go}
TRAIN_IMAGES=${DIMTORCH_BUNDLE_TRAIN_IMAGES:-10000}

# A libdimtorch_shim.so to link against here (Debian's libtorch); the check
# replaces it there with one built against the GPU machine's libtorch.
SHIM_SOURCES="torch/shim.cc torch/shim.h torch/shim_ops.h torch/shim_try.h torch/fused.cc torch/fused.h torch/CMakeLists.txt"
stale=0
for f in $SHIM_SOURCES; do
  [ -f build/shim/libdimtorch_shim.so ] && [ ! "$f" -nt build/shim/libdimtorch_shim.so ] || stale=1
done
if [ "$stale" = 1 ]; then
  cmake -S torch -B build/shim -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build/shim -j "$(nproc)" >/dev/null
fi

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/shim/testdata" "$OUT/bench" "$OUT/data/fashion-mnist"
export CGO_LDFLAGS="-L$PWD/build/shim"
ver=$(git describe --always --dirty 2>/dev/null || echo dev)
"$GO" build -tags dimtorch_shim -trimpath -ldflags "-s -w -X main.version=$ver" -o "$OUT/bin/dimtorch" ./cmd/dimtorch
"$GO" test -c -tags dimtorch_shim -trimpath -ldflags "-s -w" -o "$OUT/bin/torch.test" ./torch
cp $SHIM_SOURCES "$OUT/shim/"
cp torch/testdata/fixtures.json "$OUT/shim/testdata/"
cp bench/train_dim.py "$OUT/bench/"
cp bench/gpu_check.py "$OUT/"
echo "$ver" >"$OUT/VERSION"

# Fashion-MNIST: the first TRAIN_IMAGES training images (IDX, gzip) and the
# whole test split, from Debian's dataset-fashion-mnist.
src=${DIMTORCH_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
python3 - "$src" "$OUT/data/fashion-mnist" "$TRAIN_IMAGES" <<'EOF'
import gzip, shutil, struct, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def head(name, per_item):
    with gzip.open(f"{src}/{name}", "rb") as f:
        magic, count = struct.unpack(">II", f.read(8))
        ndim = magic & 0xFF
        rest = f.read(4 * (ndim - 1))
        keep = min(n, count)
        data = f.read(keep * per_item)
    with gzip.open(f"{dst}/{name}", "wb", compresslevel=6) as g:
        g.write(struct.pack(">II", magic, keep) + rest + data)
head("train-images-idx3-ubyte.gz", 28 * 28)
head("train-labels-idx1-ubyte.gz", 1)
for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    shutil.copy(f"{src}/{name}", f"{dst}/{name}")
EOF

if [ "${DIMTORCH_BUNDLE_ORT:-0}" = 1 ]; then
  mkdir -p "$OUT/lib"
  cp third_party/onnxruntime/libonnxruntime.so.1 "$OUT/lib/"
fi
du -sh "$OUT" | awk '{print "gpu-check bundle: " $2 ", " $1}'
