#!/usr/bin/python3
"""Table 1 of docs/evaluation.md from bench/table1.sh's run directories: a row per
method, the linear and the MLP probe's test accuracy on conv, fc and Y, and
the training's wall-clock and CPU minutes (from each checkpoint), beside the
paper's CIFAR-10 figures (MLP probe) where the project's reference has them.

    /usr/bin/python3 bench/table1_markdown.py RUNS_DIR [LABELS]
"""
import glob
import json
import os
import sys

ROWS = [  # directory, label, the paper's CIFAR-10 conv / fc / Y (docs/dim-reference.md)
    ("vae", "VAE", (60.71, 60.54, 54.61)),
    ("aae", "AAE", None),
    ("bigan", "BiGAN", (62.57, 62.74, 52.54)),
    ("nat", "NAT", None),
    ("cpc", "CPC", None),
    ("dim-g-jsd", "DIM(G), JSD", (52.20, 52.84, 43.17)),
    ("dim-l-jsd", "DIM(L), JSD", (73.25, 73.62, 66.96)),
    ("dim-l-nce", "DIM(L), infoNCE", (75.21, 75.57, 69.13)),
    ("dim-l-dv", "DIM(L), DV", None),
    ("untrained", "untrained encoder", None),
    ("pixels", "raw pixels (784 values, in Y's column)", None),
]


def accuracies(run, probe, labels):
    files = glob.glob(os.path.join(run, "eval", f"{probe}-*-n{labels}.json"))
    if not files:
        return {}
    feats = json.load(open(files[0]))["features"]
    return {k: 100 * v["accuracy"] for k, v in feats.items()}


def cell(acc, k):
    return f"{acc[k]:.2f}" if k in acc else ""


def main():
    runs = sys.argv[1]
    labels = sys.argv[2] if len(sys.argv) > 2 else "10000"
    print("| method | linear conv | linear fc | linear Y | MLP conv | MLP fc | MLP Y | training (wall / CPU min) | paper, CIFAR-10, MLP: conv / fc / Y |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d, label, paper in ROWS:
        run = os.path.join(runs, d)
        if not os.path.isdir(run):
            continue
        lin, mlp = accuracies(run, "linear", labels), accuracies(run, "mlp", labels)
        if d == "pixels":  # the pixels are one feature
            lin = {"y": v for v in lin.values()}
            mlp = {"y": v for v in mlp.values()}
        train = "–"
        ck = os.path.join(run, "checkpoint", "checkpoint.json")
        if os.path.exists(ck):
            st = json.load(open(ck))["state"]
            train = f"{st['seconds'] / 60:.1f} / {st.get('cpu_seconds', 0) / 60:.1f}"
        ref = " / ".join(f"{v:.2f}" for v in paper) if paper else "not in the reference"
        print(f"| {label} | {cell(lin, 'conv')} | {cell(lin, 'fc')} | {cell(lin, 'y')} | "
              f"{cell(mlp, 'conv')} | {cell(mlp, 'fc')} | {cell(mlp, 'y')} | {train} | {ref} |")


if __name__ == "__main__":
    main()
