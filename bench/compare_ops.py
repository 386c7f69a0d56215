#!/usr/bin/python3
"""Side-by-side: `dimtorch bench ops` against PyTorch eager (bench/ops.py) on the
same libtorch and thread count, alternating runs; prints a markdown table.

    /usr/bin/python3 bench/compare_ops.py --threads 2 --repeats 3
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env=None):
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True,
                         env=dict(os.environ, **(env or {}))).stdout
    return {r["bench"]: r["us_per_iter"] for r in map(json.loads, out.strip().splitlines())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(ROOT, "bin", "dimtorch"))
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        subprocess.run(["go", "build", "-o", args.binary, "./cmd/dimtorch"], cwd=ROOT, check=True)
    go_cmd = [args.binary, "bench", "ops", "--threads", str(args.threads), "--json"]
    py_cmd = [sys.executable, os.path.join(ROOT, "bench", "ops.py"), "--threads", str(args.threads), "--json"]
    # dimtorch tunes glibc's allocator by default; the untuned run shows what
    # the binding costs with the allocator PyTorch eager uses.
    variants = (("dimtorch", go_cmd, None), ("dimtorch_untuned", go_cmd, {"DIMTORCH_MALLOC_TUNE": "0"}),
                ("pytorch", py_cmd, None))
    best = {name: {} for name, _, _ in variants}
    for _ in range(args.repeats):
        for impl, cmd, env in variants:
            for k, v in run(cmd, env).items():
                best[impl][k] = min(v, best[impl].get(k, float("inf")))
    print(f"threads: {args.threads}, best median of {args.repeats} alternating runs each")
    print("| benchmark | dimtorch (us) | dimtorch, allocator untuned (us) | PyTorch eager (us) "
          "| PyTorch / dimtorch | PyTorch / dimtorch untuned |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k in best["dimtorch"]:
        if k not in best["pytorch"]:
            continue
        d, u, p = best["dimtorch"][k], best["dimtorch_untuned"][k], best["pytorch"][k]
        print(f"| {k} | {d:.2f} | {u:.2f} | {p:.2f} | {p / d:.2f}x | {p / u:.2f}x |")


if __name__ == "__main__":
    main()
