#!/usr/bin/python3
"""Side-by-side inference of dcgan32 (3x32x32 -> Y of 64), same threads:
  - dimtorch's ONNX export, through the embed package (onnxruntime), float32 and int8 (QDQ);
  - PyTorch's own torch.onnx.export of the same architecture, through the same
    onnxruntime harness (`dimtorch bench embed --model FILE`);
  - PyTorch eager (Debian's python3-torch, torch.no_grad, eval mode).
Batch-1 median latency and images/s at batch B, alternating runs.

    /usr/bin/python3 bench/compare_embed.py --threads 2 --batch-size 256 --repeats 3
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_dim import ConvNet  # noqa: E402  the same architecture as dimtorch's dcgan32

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def eager(model, batch, b1_runs=300, batch_runs=20):
    x1 = torch.rand(1, 3, 32, 32)
    xb = torch.rand(batch, 3, 32, 32)
    with torch.no_grad():
        for _ in range(20):
            model(x1)
        lat = []
        for _ in range(b1_runs):
            t0 = time.perf_counter()
            model(x1)
            lat.append((time.perf_counter() - t0) * 1000)
        model(xb)
        t0 = time.perf_counter()
        for _ in range(batch_runs):
            model(xb)
        ips = batch_runs * batch / (time.perf_counter() - t0)
    lat.sort()
    return {"b1_p50_ms": lat[len(lat) // 2], "images_per_sec": ips}


class YOnly(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x * 2 - 1)[1]  # inputs in [0, 1], as dimtorch's export


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(ROOT, "bin", "dimtorch"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = YOnly(ConvNet("dcgan32", 3)).eval()
    path = os.path.join(tempfile.mkdtemp(), "pytorch_dcgan32.onnx")
    torch.onnx.export(model, torch.rand(1, 3, 32, 32), path, opset_version=13, input_names=["image"],
                      output_names=["y"], dynamic_axes={"image": {0: "batch"}, "y": {0: "batch"}})
    common = ["--batch-size", str(a.batch_size), "--threads", str(a.threads), "--json"]
    runs = {"dimtorch export, onnxruntime": [a.binary, "bench", "embed", "--encoder", "dcgan32"] + common,
            "dimtorch export --int8, onnxruntime": [a.binary, "bench", "embed", "--encoder", "dcgan32", "--int8"] + common,
            "PyTorch export, onnxruntime": [a.binary, "bench", "embed", "--model", path] + common}
    best = {}
    for _ in range(a.repeats):
        for name, cmd in runs.items():
            out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            b = best.setdefault(name, {"b1_p50_ms": float("inf"), "images_per_sec": 0})
            b["b1_p50_ms"] = min(b["b1_p50_ms"], r["b1_p50_ms"])
            b["images_per_sec"] = max(b["images_per_sec"], r["images_per_sec"])
        r = eager(model, a.batch_size)
        b = best.setdefault("PyTorch eager", {"b1_p50_ms": float("inf"), "images_per_sec": 0})
        b["b1_p50_ms"] = min(b["b1_p50_ms"], r["b1_p50_ms"])
        b["images_per_sec"] = max(b["images_per_sec"], r["images_per_sec"])
    ref = best["PyTorch export, onnxruntime"]
    print(f"dcgan32, {a.threads} threads, batch {a.batch_size}, best of {a.repeats} alternating runs")
    print("| implementation | batch-1 median (ms) | images/s at batch %d | throughput vs PyTorch export | latency vs PyTorch export |" % a.batch_size)
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in best.items():
        print(f"| {name} | {r['b1_p50_ms']:.3f} | {r['images_per_sec']:.0f} | "
              f"{r['images_per_sec'] / ref['images_per_sec']:.2f}x | {r['b1_p50_ms'] / ref['b1_p50_ms']:.2f}x |")


if __name__ == "__main__":
    main()
