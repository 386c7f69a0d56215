#!/usr/bin/python3
"""PyTorch eager counterpart of `dimtorch bench train`: the same DIM(L)-JSD
training step (same encoder, MI heads, scorer, estimator and Adam settings)
on synthetic data. Run with Debian's python3-torch (the same libtorch):

    /usr/bin/python3 bench/train_dim.py --encoder dcgan32 --batch-size 64 --mi-units 512 --steps 20 --threads 2
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(i, o, k, s, p):
    return nn.Sequential(nn.Conv2d(i, o, k, s, p, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class ConvNet(nn.Module):
    """dimtorch's basic28 / dcgan32 (models/convnets.go)."""

    def __init__(self, name, c):
        super().__init__()
        if name == "dcgan32":
            self.stages = nn.ModuleList([conv_bn_relu(c, 64, 4, 2, 1), conv_bn_relu(64, 128, 4, 2, 1), conv_bn_relu(128, 256, 4, 2, 1)])
            flat, self.local_at, self.size = 256 * 4 * 4, 1, 32
        elif name == "basic28":
            self.stages = nn.ModuleList([conv_bn_relu(c, 64, 5, 2, 2), conv_bn_relu(64, 128, 5, 2, 2)])
            flat, self.local_at, self.size = 128 * 7 * 7, 1, 28
        else:
            raise SystemExit(f"bench/train_dim.py implements dcgan32 and basic28, not {name}")
        self.fc = nn.Sequential(nn.Linear(flat, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU())
        self.y = nn.Linear(1024, 64)

    def forward(self, x):
        local = None
        for i, s in enumerate(self.stages):
            x = s(x)
            if i == self.local_at:
                local = x
        return local, self.y(self.fc(x.flatten(1)))


class MIHead(nn.Module):
    """dimtorch's models.MIHead: nonlinear branch + near-identity shortcut, LayerNorm."""

    def __init__(self, i, u, spatial):
        super().__init__()
        self.spatial = spatial
        if spatial:
            self.block = nn.Sequential(nn.Conv2d(i, u, 1, bias=False), nn.BatchNorm2d(u), nn.ReLU(), nn.Conv2d(u, u, 1))
            self.shortcut = nn.Conv2d(i, u, 1)
        else:
            self.block = nn.Sequential(nn.Linear(i, u, bias=False), nn.BatchNorm1d(u), nn.ReLU(), nn.Linear(u, u))
            self.shortcut = nn.Linear(i, u)
        with torch.no_grad():
            w = self.shortcut.weight
            w.uniform_(-0.01, 0.01)
            eye = torch.eye(u, i).reshape(w.shape)
            w.copy_(torch.where(eye > 0, eye, w))
        self.norm = nn.LayerNorm(u)

    def forward(self, x):
        y = self.block(x) + self.shortcut(x)
        if self.spatial:
            y = y.flatten(2).transpose(1, 2)
        return self.norm(y.float())  # LayerNorm in float32, as dimtorch does under autocast


def jsd_loss(local, glob):
    n, l, u = local.shape
    s = (local.reshape(n * l, u) @ glob.reshape(n, u).t()).reshape(n, l, n, 1).permute(0, 2, 1, 3)
    flat = s.reshape(n * n, l, 1)
    eye = torch.eye(n, dtype=torch.bool).flatten()
    pos, neg = flat[eye], flat[~eye]
    log2 = math.log(2)
    return (F.softplus(neg) - log2).mean() - (log2 - F.softplus(-pos)).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="dcgan32")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mi-units", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--channels-last", action="store_true", help="NHWC images and convolution weights")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    enc = ConvNet(a.encoder, a.channels)
    lc = enc.stages[enc.local_at][0].out_channels
    lh, gh = MIHead(lc, a.mi_units, True), MIHead(64, a.mi_units, False)
    for m in (enc, lh, gh):
        m.to(dev)
        if a.channels_last:
            m.to(memory_format=torch.channels_last)
    params = list(enc.parameters()) + list(lh.parameters()) + list(gh.parameters())
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.999))
    x = (torch.rand(a.batch_size, a.channels, enc.size, enc.size) * 2 - 1).to(dev)
    if a.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            local, y = enc(x)
            loss = jsd_loss(lh(local), gh(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    sync()
    start = time.perf_counter()
    first = last = None
    for i in range(a.steps):
        last = step()
        first = last if first is None else first
    sync()
    sec = time.perf_counter() - start
    r = {"impl": "pytorch", "encoder": a.encoder, "batch_size": a.batch_size, "mi_units": a.mi_units,
         "threads": a.threads, "device": str(dev), "bf16": a.bf16, "steps": a.steps,
         "images_per_sec": a.steps * a.batch_size / sec, "ms_per_step": sec * 1000 / a.steps,
         "first_loss": first, "last_loss": last,
         "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(r) if a.json else r)


if __name__ == "__main__":
    main()
