#!/usr/bin/python3
"""A linear layer's forward and backward (y = x W^T, summed, backward to x and
W) two ways on the same libtorch: F.linear (float32 matrix products go to the
BLAS libtorch was built with: OpenBLAS in Debian's build) and the same product
as a 1x1 convolution over [M, K, 1, 1] (oneDNN's kernels), which is how dimtorch
runs float32 CPU linear layers (torch.SetOneDNNLinear). The shapes are those of
DIM's layers: basic28's fc, Y, the prior's discriminator, the MI heads and the
critic's score products.

    /usr/bin/python3 bench/linear_kernels.py --threads 2
"""
import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = [(64, 6272, 1024), (64, 1024, 64), (128, 1000, 200), (3136, 128, 256), (4096, 128, 512),
          (4096, 512, 64), (3136, 256, 64)]


def bench(f, n):
    for _ in range(3):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1000


def parse_args():
    """The kernel benchmarks' flags (--threads, --repeats), with torch's threads set."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    return a


def main():
    a = parse_args()
    print("| M x K -> N | F.linear (ms) | 1x1 convolution (ms) | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for m, k, n in SHAPES:
        x = torch.randn(m, k, requires_grad=True)
        w = torch.randn(n, k, requires_grad=True)

        def lin():
            F.linear(x, w).sum().backward()

        def conv():
            F.conv2d(x.reshape(m, k, 1, 1), w.reshape(n, k, 1, 1)).sum().backward()

        tl, tc = bench(lin, a.repeats), bench(conv, a.repeats)
        print(f"| {m} x {k} -> {n} | {tl:.2f} | {tc:.2f} | {tl / tc:.2f}x |")


if __name__ == "__main__":
    main()
