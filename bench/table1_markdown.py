#!/usr/bin/python3
"""Table 1 of docs/evaluation.md from bench/table1.sh's run directories: a row
per method with the linear and the MLP probe's test accuracy on conv, fc and
Y (LABELS training labels), the few-label linear probe's on conv and Y
(PER_CLASS labels a class), the epochs the budget bought and the training's
CPU and wall-clock minutes (from each checkpoint), beside the paper's CIFAR-10
figures (MLP probe) where the project's reference has them. Rows trained
with several seeds (NAME-s1, NAME-s2, ...) show mean ± standard deviation
(sample, n-1) and the seeds' count.

    /usr/bin/python3 bench/table1_markdown.py RUNS_DIR [LABELS [PER_CLASS]]
"""
import glob
import json
import os
import statistics
import sys

ROWS = [  # directory prefix, label, the paper's CIFAR-10 conv / fc / Y (docs/dim-reference.md)
    ("vae", "VAE", (60.71, 60.54, 54.61)),
    ("aae", "AAE", None),
    ("bigan", "BiGAN", (62.57, 62.74, 52.54)),
    ("nat", "NAT", None),
    ("cpc", "CPC", None),
    ("dim-g-jsd", "DIM(G), JSD", (52.20, 52.84, 43.17)),
    ("dim-l-jsd", "DIM(L), JSD", (73.25, 73.62, 66.96)),
    ("dim-l-nce", "DIM(L), infoNCE", (75.21, 75.57, 69.13)),
    ("dim-l-dv", "DIM(L), DV", None),
    ("dim-best", "DIM(L), best recipe (two views, infoNCE)", None),
    ("amdim", "multi-scale DIM (AMDIM encoder)", None),
    ("untrained", "untrained encoder", None),
    ("untrained-amdim", "untrained AMDIM encoder", None),
    ("pixels", "raw pixels (784 values, in Y's columns)", None),
]


def accuracies(run, probe, suffix):
    files = glob.glob(os.path.join(run, "eval", f"{probe}-*-{suffix}.json"))
    if not files:
        return {}
    feats = json.load(open(files[0]))["features"]
    acc = {k: 100 * v["accuracy"] for k, v in feats.items()}
    if "pixels" in acc:
        acc = {"y": acc["pixels"]}
    return acc


def cell(values):
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main():
    runs = sys.argv[1]
    labels = sys.argv[2] if len(sys.argv) > 2 else "10000"
    per_class = sys.argv[3] if len(sys.argv) > 3 else "100"
    print(f"| method | seeds | linear conv | linear fc | linear Y | MLP conv | MLP fc | MLP Y | {per_class}/class conv | {per_class}/class Y "
          "| epochs | training CPU / wall min | paper, CIFAR-10, MLP: conv / fc / Y |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d, label, paper in ROWS:
        dirs = sorted(glob.glob(os.path.join(runs, d + "-s[0-9]*"))) or [p for p in [os.path.join(runs, d)] if os.path.isdir(p)]
        dirs = [p for p in dirs if os.path.isdir(os.path.join(p, "eval"))]
        if not dirs:
            continue
        cols = {}
        for name, probe, suffix in (("lin", "linear", f"n{labels}"), ("mlp", "mlp", f"n{labels}"), ("few", "linear", f"c{per_class}")):
            accs = [accuracies(p, probe, suffix) for p in dirs]
            for k in ("conv", "fc", "y"):
                cols[name, k] = [a[k] for a in accs if k in a]
        epochs, cpu, wall = set(), [], []
        for p in dirs:
            ck = os.path.join(p, "checkpoint", "checkpoint.json")
            if os.path.exists(ck):
                st = json.load(open(ck))
                epochs.add(str(st["config"]["epochs"]) if "config" in st and "epochs" in st["config"] else "?")
                cpu.append(st["state"].get("cpu_seconds", 0) / 60)
                wall.append(st["state"]["seconds"] / 60)
        train = f"{statistics.mean(cpu):.1f} / {statistics.mean(wall):.1f}" if cpu else "–"
        ref = " / ".join(f"{v:.2f}" for v in paper) if paper else "not in the reference"
        seeds = str(len(dirs)) if cpu else "–"
        print(f"| {label} | {seeds} | {cell(cols['lin', 'conv'])} | {cell(cols['lin', 'fc'])} | {cell(cols['lin', 'y'])} | "
              f"{cell(cols['mlp', 'conv'])} | {cell(cols['mlp', 'fc'])} | {cell(cols['mlp', 'y'])} | "
              f"{cell(cols['few', 'conv'])} | {cell(cols['few', 'y'])} | {', '.join(sorted(epochs)) or '–'} | {train} | {ref} |")


if __name__ == "__main__":
    main()
