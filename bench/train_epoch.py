#!/usr/bin/python3
"""A plain PyTorch script that trains what `dimtorch train` trains by default,
for one epoch, the way a PyTorch user would write it: Fashion-MNIST from its
IDX files in a Dataset, a DataLoader with worker processes, DIM(L) with JSD
(basic28, 256 MI units, the prior game at gamma 0.1 with its gradient
penalty), Adam 1e-4 (0.5, 0.999), batch 64, channels-last, and the online
probe (a linear classifier on Y with Adam 1e-3, scored on the test split at
the end of the epoch), then a checkpoint. The networks and the step are those
of bench/train_dim.py, which the tests check against dimtorch's.

    /usr/bin/python3 bench/train_epoch.py --data-dir /usr/share/datasets/fashion-mnist --threads 2 --workers 2

bench/compare_epoch.py runs it side by side with `dimtorch train`.
"""
import argparse
import gzip
import json
import os
import struct
import tempfile
import time
import types

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import train_dim as td


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    _, kind, dims = struct.unpack(">HBB", data[:4])
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


class FashionMNIST(Dataset):
    """Images as float32 [1, 28, 28] in [-1, 1], as dimtorch feeds them."""

    def __init__(self, d, split):
        prefix = "train" if split == "train" else "t10k"
        self.x = read_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz"))
        self.y = read_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz")).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i][None].float() / 127.5 - 1, self.y[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--limit", type=int, default=0, help="first N training images (0: all)")
    ap.add_argument("--out", default="", help="where the checkpoint goes (default: a temporary directory)")
    a = ap.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    train_set, test_set = FashionMNIST(a.data_dir, "train"), FashionMNIST(a.data_dir, "test")
    if a.limit:
        train_set = torch.utils.data.Subset(train_set, range(a.limit))
    loader = DataLoader(train_set, batch_size=64, shuffle=True, drop_last=True, num_workers=a.workers,
                        persistent_workers=False)
    test_loader = DataLoader(test_set, batch_size=256, num_workers=a.workers)

    args = types.SimpleNamespace(views=1, score_clip=0.0, mi_units=256, estimator="jsd")
    enc = td.ConvNet("basic28", 1)
    lc = enc.stages[enc.local_at][0].out_channels
    lh, gh = td.MIHead(lc, 256, True), td.MIHead(64, 256, False)
    disc = td.discriminator(64)
    probe = torch.nn.Linear(64, 10)
    for m in (enc, lh, gh):
        m.to(memory_format=torch.channels_last)
    params = [p for m in (enc, lh, gh) for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.999))
    p_opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
    gamma, gp = 0.1, 1.0

    t0 = time.perf_counter()
    steps, loss_v, correct, seen = 0, 0.0, 0, 0
    for x, y in loader:
        x = x.contiguous(memory_format=torch.channels_last)
        local, yy = enc(x)
        loss = td.cross_views(args, lh(local), gh(yy), td.dot_scores)
        loss = loss + gamma * F.softplus(-disc(torch.sigmoid(yy))).mean()
        loss_v = loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        d_opt.zero_grad(set_to_none=True)
        fake = yy.detach().sigmoid()
        real = torch.rand(fake.shape)
        adv = F.softplus(-disc(real)).mean() + F.softplus(disc(fake)).mean()
        (adv + gp * 0.5 * (td.gradient_penalty(disc, real) + td.gradient_penalty(disc, fake))).backward()
        d_opt.step()
        logits = probe(yy.detach())
        p_opt.zero_grad(set_to_none=True)
        F.cross_entropy(logits, y).backward()
        p_opt.step()
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        steps += 1
    enc.eval()
    test_correct = test_seen = 0
    with torch.no_grad():
        for x, y in test_loader:
            _, yy = enc(x.contiguous(memory_format=torch.channels_last))
            test_correct += (probe(yy).argmax(1) == y).sum().item()
            test_seen += len(y)
    out = a.out or tempfile.mkdtemp(prefix="train_epoch.")
    torch.save({"encoder": enc.state_dict(), "local_head": lh.state_dict(), "global_head": gh.state_dict(),
                "prior": disc.state_dict(), "probe": probe.state_dict(), "optim": opt.state_dict(),
                "prior_optim": d_opt.state_dict(), "probe_optim": p_opt.state_dict()}, os.path.join(out, "checkpoint.pt"))
    end = time.perf_counter()
    print(json.dumps({"impl": "pytorch", "steps": steps, "loss": loss_v, "probe_train_acc": correct / max(1, seen),
                      "probe_test_acc": test_correct / test_seen, "epoch_seconds": end - t0, "seconds": end - start,
                      "images_per_sec": steps * 64 / (end - t0)}))


if __name__ == "__main__":
    main()
