#!/usr/bin/python3
"""A/B of two dimtorch binaries on `dimtorch bench train`: alternating pairs
(the order flips every pair), the median and range of the paired ratios
B / A, and whether the two compute the same losses (they should, bit for
bit, when a change is meant to leave the numerics alone).

    /usr/bin/python3 bench/ab_train.py OLD_BINARY NEW_BINARY [--repeats 8] [bench train flags...]

e.g. the step before and after a change (git worktree or a second clone for
the old binary):
    /usr/bin/python3 bench/ab_train.py /tmp/old/bin/dimtorch bin/dimtorch --repeats 8 --encoder dcgan32 --mi-units 512
"""
import json
import statistics
import subprocess
import sys


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    a, b, rest = args[0], args[1], args[2:]
    repeats = 8
    if "--repeats" in rest:
        i = rest.index("--repeats")
        repeats = int(rest[i + 1])
        rest = rest[:i] + rest[i + 2:]
    runs = {a: [], b: []}
    for i in range(repeats):
        for binary in ((a, b) if i % 2 == 0 else (b, a)):
            out = subprocess.run([binary, "bench", "train", "--json"] + rest, check=True, capture_output=True, text=True).stdout
            runs[binary].append(json.loads(out.strip().splitlines()[-1]))
    ratios = [y["images_per_sec"] / x["images_per_sec"] for x, y in zip(runs[a], runs[b])]
    same = all(x["first_loss"] == y["first_loss"] and x["last_loss"] == y["last_loss"] for x, y in zip(runs[a], runs[b]))
    med = {k: statistics.median(r["images_per_sec"] for r in v) for k, v in runs.items()}
    print(f"bench train {' '.join(rest)}: {repeats} alternating pairs")
    print(f"A {a}: median {med[a]:.1f} images/s; B {b}: median {med[b]:.1f} images/s")
    print(f"B / A: median {statistics.median(ratios):.3f}x (range {min(ratios):.3f}x to {max(ratios):.3f}x); "
          f"losses {'identical' if same else 'DIFFER'}")
    print(json.dumps({"median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
                      "ratios": ratios, "a_images_per_sec": med[a], "b_images_per_sec": med[b], "losses_identical": same}))


if __name__ == "__main__":
    main()
