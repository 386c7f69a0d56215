#!/usr/bin/python3
"""The loader a PyTorch user would write over the same shards, for
dimtorch bench data's side-by-side table: a map-style Dataset that indexes
every tar member once (Python's tarfile) and reads each sample's bytes,
Pillow's decoder, torchvision's RandomResizedCrop(SIZE) (scale 0.08-1),
RandomHorizontalFlip, ToTensor and Normalize to [-1, 1], a shuffling
DataLoader with WORKERS processes and batches of 64. Prints one JSON line
per (size, workers): images per second of wall time and per CPU-second of
the main process and its workers together (from /proc).

    /usr/bin/python3 bench/loader_torch.py SHARD_DIR [--size 32,96,224] [--workers 1,2] [--batches 40] [--batch-size 64]
"""
import argparse
import io
import json
import os
import tarfile
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class Shards(Dataset):
    def __init__(self, d, transform):
        manifest = json.load(open(os.path.join(d, "manifest.json")))
        self.items = []  # (path, offset, size, label)
        for s in manifest["shards"]:
            path = os.path.join(d, s["name"])
            with tarfile.open(path) as tf:
                cur = None
                for m in tf:
                    if not m.isfile():
                        continue
                    key, _, ext = m.name.partition(".")
                    if cur is None or cur[0] != key:
                        cur = [key, None, None, -1]
                        self.items.append(cur)
                    if ext in ("jpg", "jpeg", "png"):
                        cur[1], cur[2] = path, (m.offset_data, m.size)
                    elif ext == "cls":
                        cur[3] = int(tf.extractfile(m).read())
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        _, path, (off, size), label = self.items[i]
        with open(path, "rb") as f:
            f.seek(off)
            b = f.read(size)
        img = Image.open(io.BytesIO(b)).convert("RGB")
        return self.transform(img), label


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tick
        except OSError:
            pass
    return total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("shards")
    p.add_argument("--size", default="32,96,224")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(1)
    for size in [int(s) for s in a.size.split(",")]:
        tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
        ds = Shards(a.shards, tf)
        for w in [int(s) for s in a.workers.split(",")]:
            loader = DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=w, drop_last=True,
                                generator=torch.Generator().manual_seed(1))
            it = iter(loader)
            next(it)  # the workers started, the first batch made
            pids = [os.getpid()] + [pr.pid for pr in it._workers]
            t0, c0, n = time.perf_counter(), cpu_seconds(pids), 0
            for _ in range(a.batches):
                x, _ = next(it)
                n += x.shape[0]
            wall, cpu = time.perf_counter() - t0, cpu_seconds(pids) - c0
            del it
            print(json.dumps({"size": size, "workers": w, "images_per_sec": n / wall, "images_per_cpu_second": n / cpu}), flush=True)


if __name__ == "__main__":
    main()
