#!/usr/bin/python3
"""dimtorch's shard loader against the PyTorch DataLoader a user would write
(bench/loader_torch.py), on the same shards, side by side in one run:
rounds in the order A B B A, medians; images per second and per CPU-second
for each target size and number of workers, and their ratio.

    /usr/bin/python3 bench/compare_loader.py SHARD_DIR [--size 32,96,224] [--workers 1,2] [--batches 40] [--rounds 2] [--bin bin/dimtorch]
"""
import argparse
import json
import statistics
import subprocess
import sys


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {(r["size"], r["workers"]): r for r in map(json.loads, out.splitlines()) if r}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("shards")
    p.add_argument("--size", default="32,96,224")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bin", default="bin/dimtorch")
    a = p.parse_args()
    common = ["--size", a.size, "--workers", a.workers, "--batches", str(a.batches)]
    ours = [a.bin, "bench", "data", "--shards", a.shards, "--json"] + common
    theirs = ["/usr/bin/python3", "bench/loader_torch.py", a.shards] + common
    res = {"dimtorch": [], "pytorch": []}
    for r in range(a.rounds):
        order = [("dimtorch", ours), ("pytorch", theirs)]
        if r % 2:
            order.reverse()
        for name, cmd in order:
            res[name].append(run(cmd))
            print(f"round {r + 1}: {name} done", file=sys.stderr)
    print("| size | workers | dimtorch images/s | PyTorch images/s | dimtorch images per CPU-s | PyTorch images per CPU-s | ratio per CPU-s | cores for 10,000 images/s: dimtorch / PyTorch |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in sorted(res["dimtorch"][0]):
        med = lambda name, f: statistics.median(r[key][f] for r in res[name])
        d, t = med("dimtorch", "images_per_sec"), med("pytorch", "images_per_sec")
        dc, tc = med("dimtorch", "images_per_cpu_second"), med("pytorch", "images_per_cpu_second")
        print(f"| {key[0]} | {key[1]} | {d:.0f} | {t:.0f} | {dc:.0f} | {tc:.0f} | {dc / tc:.2f}x | {10000 / dc:.1f} / {10000 / tc:.1f} |")


if __name__ == "__main__":
    main()
