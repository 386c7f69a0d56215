#!/usr/bin/python3
"""Side-by-side: `dimtorch bench train` against PyTorch eager
(bench/train_dim.py) on the same libtorch, model and thread count,
alternating runs; prints a markdown table with the ratio.

    /usr/bin/python3 bench/compare_train.py --encoder dcgan32 --batch-size 64 --mi-units 512 --steps 20 --threads 2 --repeats 3 [--bf16]
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="dcgan32")
    ap.add_argument("--channels", default="3")
    ap.add_argument("--batch-size", default="64")
    ap.add_argument("--mi-units", default="512")
    ap.add_argument("--steps", default="20")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--binary", default=os.path.join(ROOT, "bin", "dimtorch"))
    a = ap.parse_args()
    if not os.path.exists(a.binary):
        subprocess.run(["go", "build", "-o", a.binary, "./cmd/dimtorch"], cwd=ROOT, check=True)
    common = ["--encoder", a.encoder, "--channels", a.channels, "--batch-size", a.batch_size,
              "--mi-units", a.mi_units, "--steps", a.steps, "--threads", a.threads, "--json"]
    if a.bf16:
        common.append("--bf16")
    cmds = {"dimtorch": [a.binary, "bench", "train"] + common,
            "pytorch": [sys.executable, os.path.join(ROOT, "bench", "train_dim.py")] + common}
    best, last = {}, {}
    for _ in range(a.repeats):
        for impl, cmd in cmds.items():
            r = run(cmd)
            last[impl] = r
            best[impl] = max(best.get(impl, 0), r["images_per_sec"])
    d, p = best["dimtorch"], best["pytorch"]
    print(f"{a.encoder}, batch {a.batch_size}, {a.mi_units} MI units, {a.threads} threads, bf16 {a.bf16}: "
          f"best of {a.repeats} alternating runs of {a.steps} steps")
    print("| implementation | images/s | peak RSS (MiB) | loss after the timed steps |")
    print("| --- | ---: | ---: | ---: |")
    for impl in ("dimtorch", "pytorch"):
        print(f"| {impl} | {best[impl]:.1f} | {last[impl]['peak_rss_mb']:.0f} | {last[impl]['last_loss']:.6f} |")
    print(f"dimtorch / PyTorch eager: {d / p:.2f}x")


if __name__ == "__main__":
    main()
