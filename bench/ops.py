#!/usr/bin/python3
"""PyTorch eager counterpart of `dimtorch bench ops` (same ops, shapes, timing).

Run with Debian's python3-torch, which uses the same libtorch as dimtorch:
    /usr/bin/python3 bench/ops.py --threads 2 --json
"""
import argparse
import json
import time

import torch


def time_rounds(rounds, iters, fn):
    per = []
    for r in range(-1, rounds):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        if r >= 0:
            per.append((time.perf_counter() - start) * 1e6 / iters)
    per.sort()
    return per[len(per) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []

    a, b = torch.ones(1), torch.ones(1)
    us = time_rounds(args.rounds, 20000, lambda: a + b)
    results.append(("add_1elem", us, 20000))

    x = torch.randn(64, 3, 32, 32)
    w1 = (torch.randn(64, 3, 4, 4) * 0.1).requires_grad_(True)
    w2 = (torch.randn(128, 64, 4, 4) * 0.02).requires_grad_(True)
    F = torch.nn.functional

    def step():
        out = F.relu(F.conv2d(F.relu(F.conv2d(x, w1, None, 2, 1)), w2, None, 2, 1)).mean()
        out.backward()
        w1.grad = None
        w2.grad = None

    us = time_rounds(args.rounds, 20, step)
    results.append(("conv2d_dcgan32_b64_fwd_bwd", us, 20))

    for name, us, iters in results:
        r = {"bench": name, "impl": "pytorch", "threads": args.threads, "us_per_iter": us,
             "iters_per_round": iters, "rounds": args.rounds}
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{name:30s} {us:10.2f} us/iter  ({args.threads} threads)")


if __name__ == "__main__":
    main()
