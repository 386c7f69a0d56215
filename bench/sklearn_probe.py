#!/usr/bin/python3
"""Cross-check of dimtorch's linear probe with scikit-learn's logistic regression
on the same exported features (Debian's python3-sklearn).

    bin/dimtorch eval --checkpoint runs/demo --probe linear --features conv,fc,y \
        --limit-train 10000 --export-features /tmp/feats --json
    /usr/bin/python3 bench/sklearn_probe.py /tmp/feats [--c 1.0]

Prints one JSON object: feature -> test accuracy, like `dimtorch eval --json`.
"""
import argparse
import glob
import json
import os
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--c", type=float, default=1.0)
    ap.add_argument("--max-iter", type=int, default=1000)
    a = ap.parse_args()
    ytr = np.load(os.path.join(a.dir, "train_labels.npy"))
    yte = np.load(os.path.join(a.dir, "test_labels.npy"))
    out = {}
    for path in sorted(glob.glob(os.path.join(a.dir, "train_*.npy"))):
        feat = os.path.basename(path)[len("train_"):-len(".npy")]
        if feat == "labels":
            continue
        xtr = np.load(path)
        xte = np.load(os.path.join(a.dir, f"test_{feat}.npy"))
        sc = StandardScaler().fit(xtr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(C=a.c, max_iter=a.max_iter).fit(sc.transform(xtr), ytr)
        out[feat] = float((clf.predict(sc.transform(xte)) == yte).mean())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
