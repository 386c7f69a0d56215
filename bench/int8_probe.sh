#!/usr/bin/env bash
# The int8 export's accuracy: a linear probe (scikit-learn's
# LogisticRegression on standardised features, the same for both) on Y of
# the float32 and the int8 export of one trained run, embedded by
# onnxruntime, 10,000 training labels, the 10,000 test images. For runs on
# Fashion-MNIST (labels read from Debian's dataset-fashion-mnist).
#   bench/int8_probe.sh RUN_DIR [calibration images, default 512]
set -euo pipefail
run=${1:?usage: bench/int8_probe.sh RUN_DIR [calibration-images]}
calib=${2:-512}
bin=${DIMTORCH:-bin/dimtorch}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
data=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["data"])' "$run/checkpoint/checkpoint.json")
"$bin" export --onnx --checkpoint "$run" --out "$tmp/f32.onnx" 2>/dev/null
"$bin" export --onnx --int8 --calibration-images "$calib" --checkpoint "$run" --out "$tmp/int8.onnx" 2>/dev/null
for m in f32 int8; do
  "$bin" embed --model "$tmp/$m.onnx" --data "$data" --split train --limit 10000 --out "$tmp/$m-train.npy" 2>/dev/null
  "$bin" embed --model "$tmp/$m.onnx" --data "$data" --split test --out "$tmp/$m-test.npy" 2>/dev/null
done
/usr/bin/python3 - "$tmp" "$data" "$calib" <<'PY'
import json, sys, os
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
tmp, data, calib = sys.argv[1], sys.argv[2], int(sys.argv[3])
def labels(split, n):
    # Fashion-MNIST from Debian's dataset-fashion-mnist (the idx files dimtorch reads)
    import gzip
    name = {"train": "train-labels-idx1-ubyte.gz", "test": "t10k-labels-idx1-ubyte.gz"}[split]
    for d in ("/usr/share/datasets/fashion-mnist",):
        p = os.path.join(d, name)
        if os.path.exists(p):
            with gzip.open(p) as f:
                return np.frombuffer(f.read(), np.uint8, offset=8)[:n].astype(int)
    raise SystemExit("Fashion-MNIST labels not found")
ytr, yte = labels("train", 10000), labels("test", 10000)
acc = {}
for m in ("f32", "int8"):
    xtr, xte = np.load(f"{tmp}/{m}-train.npy"), np.load(f"{tmp}/{m}-test.npy")
    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=2000).fit(sc.transform(xtr), ytr)
    acc[m] = 100 * clf.score(sc.transform(xte), yte)
print(json.dumps({"data": data, "calibration_images": calib, "float32_y": round(acc["f32"], 2), "int8_y": round(acc["int8"], 2),
                  "difference": round(acc["int8"] - acc["f32"], 2)}))
PY
