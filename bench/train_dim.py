#!/usr/bin/python3
"""PyTorch eager counterpart of `dimtorch bench train`: the same DIM(L)
training step (same encoder, MI heads or concat critic, estimator, views,
score clipping, prior-matching game and Adam settings) on synthetic data. Run with Debian's python3-torch (the same libtorch):

    /usr/bin/python3 bench/train_dim.py --encoder dcgan32 --batch-size 64 --mi-units 512 --steps 20 --threads 2
"""
import argparse
import json
import math
import resource
import sys
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


class ResUnit(nn.Module):
    """dimtorch's AMDIM residual unit (models/amdim.go): conv k x k stride s ->
    BatchNorm -> ReLU -> 1x1 conv (zero at first), plus average pooling with
    the channels padded with zeros."""

    def __init__(self, i, o, k, s):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(i, o, k, s, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True), nn.Conv2d(o, o, 1, bias=False))
        nn.init.zeros_(self.body[3].weight)
        self.k, self.s, self.extra = k, s, o - i

    def forward(self, x):
        short = F.avg_pool2d(x, self.k, self.s) if self.k > 1 or self.s > 1 else x
        if self.extra:
            short = F.pad(short, (0, 0, 0, 0, 0, self.extra))
        return self.body(x) + short


def res_block(i, o, k, s, depth):
    return nn.Sequential(ResUnit(i, o, k, s), *[ResUnit(o, o, 1, 1) for _ in range(depth - 1)])


class AMDIMNet(nn.Module):
    """dimtorch's amdim28 / amdim32 (models/amdim.go), width w and depth d."""

    def __init__(self, name, c, w, d):
        super().__init__()
        self.size = 28 if name == "amdim28" else 32
        self.stem = nn.Sequential(nn.Conv2d(c, w, 3, padding=2 if name == "amdim28" else 0), nn.ReLU(inplace=True))
        self.res1 = ResUnit(w, w, 1, 1)
        self.block1 = res_block(w, 2 * w, 4, 2, d)
        self.block2 = res_block(2 * w, 4 * w, 2, 2, d)
        self.bn7 = nn.BatchNorm2d(4 * w)
        self.block3 = res_block(4 * w, 4 * w, 3, 1, d)
        self.block4 = res_block(4 * w, 4 * w, 3, 1, d)
        self.head = ResUnit(4 * w, 8 * w, 3, 1)
        self.bn1 = nn.BatchNorm2d(8 * w)
        self.y = nn.Linear(8 * w, 64)
        self.local_channels, self.conv_channels = 4 * w, 4 * w

    def forward(self, x):
        local = self.bn7(self.block2(self.block1(self.res1(self.stem(x)))))
        conv = self.block3(local)
        fc = self.bn1(self.head(self.block4(conv))).flatten(1)
        return local, conv, self.y(fc)


class MIHead(nn.Module):
    """dimtorch's models.MIHead (the original's MI1x1ConvNet): nonlinear branch
    plus a bias-free shortcut that starts near the identity when units >= inputs,
    then LayerNorm."""

    def __init__(self, i, u, spatial):
        super().__init__()
        self.spatial = spatial
        if spatial:
            self.block = nn.Sequential(nn.Conv2d(i, u, 1, bias=False), nn.BatchNorm2d(u), nn.ReLU(), nn.Conv2d(u, u, 1))
            self.shortcut = nn.Conv2d(i, u, 1, bias=False)
        else:
            self.block = nn.Sequential(nn.Linear(i, u, bias=False), nn.BatchNorm1d(u), nn.ReLU(), nn.Linear(u, u))
            self.shortcut = nn.Linear(i, u, bias=False)
        if u >= i:
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


class Concat(nn.Module):
    """dimtorch's concat-and-convolve critic: relu(W_l local + W_g global + b) -> hidden -> 1."""

    def __init__(self, lc, yd, h):
        super().__init__()
        self.local = nn.Linear(lc, h)
        self.glob = nn.Linear(yd, h, bias=False)
        self.hidden = nn.Linear(h, h)
        self.out = nn.Linear(h, 1)

    def forward(self, local_map, y):
        a = self.local(local_map.flatten(2).transpose(1, 2))  # [N, L, H]
        b = self.glob(y)  # [K, H]
        pair = F.relu(a[:, None] + b[None, :, None])  # [N, K, L, H]
        return self.out(F.relu(self.hidden(pair)))  # [N, K, L, 1]


ONEDNN_LINEAR = False


def dot_scores(local, glob):
    """S[n, k, l, m] = <local[n, l], glob[k, m]>."""
    if glob.dim() == 2:
        glob = glob[:, None]
    if ONEDNN_LINEAR:  # as dimtorch computes it: a linear layer, on oneDNN's kernels
        (n, l, u), (k, m) = local.shape, glob.shape[:2]
        return F.linear(local.reshape(n * l, u), glob.reshape(k * m, u)).reshape(n, l, k, m).permute(0, 2, 1, 3)
    return torch.einsum("nlu,kmu->nklm", local, glob)


LOG2 = math.log(2)


def estimator_loss(name, s):
    n = s.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=s.device)
    pos, neg = s[eye], s[~eye]  # [N, L, M], [N(N-1), L, M]
    if name == "jsd":
        return (F.softplus(neg) - LOG2).mean() - (LOG2 - F.softplus(-pos)).mean()
    if name == "dv":
        return torch.logsumexp(neg.flatten(), 0) - math.log(neg.numel()) - pos.mean()
    if name == "nce":
        # Global (k, m) against every local of the other images: S[j, k, l', m], j != k.
        g = s.permute(1, 3, 0, 2).masked_fill(eye[:, None, :, None], float("-inf"))  # [K, M, N, L]
        neg_lse = torch.logsumexp(g.flatten(2), 2)  # [K, M]
        return (torch.logaddexp(pos, neg_lse[:, None, :]) - pos).mean()
    raise SystemExit(f"bench/train_dim.py implements jsd, dv and nce, not {name}")


def cross_views(a, local, glob, score):
    """The estimator over all ordered pairs of distinct views, with AMDIM's score
    clipping when --score-clip > 0; scores reach the estimator in float32."""
    v = a.views
    n = local.shape[0] // v
    pairs = [(0, 0)] if v == 1 else [(i, j) for i in range(v) for j in range(v) if i != j]
    losses, penalties = [], []
    for i, j in pairs:
        s = score(local[i * n:(i + 1) * n], glob[j * n:(j + 1) * n]).float()
        if a.score_clip > 0:
            s = s / math.sqrt(a.mi_units)
            penalties.append(0.05 * (s ** 2).mean())
            s = a.score_clip * torch.tanh(s / a.score_clip)
        losses.append(estimator_loss(a.estimator, s))
    loss = sum(losses) / len(losses)
    for p in penalties:
        loss = loss + p / len(penalties)
    return loss


def cross_view_global(a, head, y):
    """The global-to-global cross-view term written as SimCLR's loss: unit-length
    projections of Y, cross-entropy of each view's cosine similarities to another
    view's (divided by the temperature) with the same image as the target,
    averaged over the ordered pairs of distinct views."""
    z = F.normalize(head(y).float(), dim=1)
    v = a.views
    n = z.shape[0] // v
    target = torch.arange(n, device=z.device)
    losses = [F.cross_entropy(z[i * n:(i + 1) * n] @ z[j * n:(j + 1) * n].T / a.cross_view_temperature, target)
              for i in range(v) for j in range(v) if i != j]
    return sum(losses) / len(losses)


def discriminator(d):
    return nn.Sequential(nn.Linear(d, 1000), nn.ReLU(), nn.Linear(1000, 200), nn.ReLU(), nn.Linear(200, 1))


def gradient_penalty(disc, x):
    x = x.detach().requires_grad_(True)
    g, = torch.autograd.grad(disc(x).sum(), x, create_graph=True)
    return (g ** 2).sum(1).mean()


def use_onednn_linear():
    plain = F.linear

    def linear(x, w, b=None):
        if (x.dim() >= 2 and x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32
                and not torch.is_autocast_cpu_enabled() and x.numel() > 0):
            k = x.shape[-1]
            y = F.conv2d(x.reshape(-1, k, 1, 1), w.reshape(w.shape[0], k, 1, 1), b)
            return y.reshape(*x.shape[:-1], w.shape[0])
        return plain(x, w, b)

    conv = F.conv2d

    def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        # bfloat16 1x1 convolutions as matrix products over the NHWC rows, as dimtorch runs them
        ones = all(v in (1, (1, 1)) for v in (stride, dilation, groups)) and padding in (0, (0, 0))
        if (ones and w.shape[2:] == (1, 1) and x.dim() == 4 and x.device.type == "cpu"
                and (x.dtype == torch.bfloat16 or (torch.is_autocast_cpu_enabled()
                                                   and torch.get_autocast_cpu_dtype() == torch.bfloat16))):
            n, c, h, wd = x.shape
            y = plain(x.permute(0, 2, 3, 1).reshape(-1, c), w.reshape(w.shape[0], c), b)
            return y.reshape(n, h, wd, w.shape[0]).permute(0, 3, 1, 2)
        return conv(x, w, b, stride, padding, dilation, groups)

    F.linear = linear
    torch.nn.modules.linear.F.linear = linear
    F.conv2d = conv2d
    global ONEDNN_LINEAR
    ONEDNN_LINEAR = True


def dump_grads(d, params):
    import os
    import numpy as np
    os.makedirs(d, exist_ok=True)
    for i, p in enumerate(params):
        np.save(os.path.join(d, "%03d.npy" % i), p.grad.detach().float().cpu().contiguous().numpy())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="dcgan32")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mi-units", type=int, default=512)
    ap.add_argument("--method", default="dim", help="dim or amdim (multi-scale DIM; --estimator nce)")
    ap.add_argument("--amdim-pairs", default="1-7,1-5,5-5")
    ap.add_argument("--width", type=int, default=0, help="amdim28/amdim32's width (0: 32)")
    ap.add_argument("--depth", type=int, default=0, help="amdim28/amdim32's depth (0: 1)")
    ap.add_argument("--estimator", default="jsd", help="jsd, dv or nce")
    ap.add_argument("--scorer", default="dot", help="dot or concat")
    ap.add_argument("--views", type=int, default=1, help="views per image: the batch holds views x batch-size images")
    ap.add_argument("--score-clip", type=float, default=0.0)
    ap.add_argument("--gamma", type=float, default=0.0, help="weight of prior matching (0: off)")
    ap.add_argument("--cross-view", type=float, default=0.0, help="weight of the global-to-global cross-view term (0: off)")
    ap.add_argument("--cross-view-temperature", type=float, default=0.2)
    ap.add_argument("--gp-weight", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--channels-last", nargs="?", const="true", default="false", choices=["true", "false"],
                    help="NHWC images and convolution weights (--channels-last or --channels-last=true; default false)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--lockstep", action="store_true",
                    help='after the warm-up print {"ready": true}, then before each timed step wait for a line on '
                         'standard input and print {"step_ms": T} after it (bench/compare_train.py); images/s then '
                         'count the steps\' own time')
    ap.add_argument("--dump-grads", metavar="DIR",
                    help="write every trained parameter's gradient after the first step's backward pass to DIR/NNN.npy "
                         "(float32, in the optimiser's order), as dimtorch bench train --dump-grads does")
    ap.add_argument("--onednn-linear", action="store_true",
                    help="run float32 CPU linear layers as 1x1 convolutions (oneDNN's kernels) and bfloat16 1x1 "
                         "convolutions as matrix products, as dimtorch does by default, for step-by-step comparisons "
                         "with the same kernels; PyTorch's defaults are BLAS and oneDNN's convolution")
    a = ap.parse_args()
    a.channels_last = a.channels_last == "true"
    if a.method == "amdim":
        a.estimator = "nce"
    if a.onednn_linear:
        use_onednn_linear()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    # Networks in dimtorch's order (encoder, objective, prior), so the seed gives the same weights.
    amdim = a.method == "amdim"
    if a.encoder.startswith("amdim"):
        enc = AMDIMNet(a.encoder, a.channels, a.width or 32, a.depth or 1)
        lc = enc.local_channels
    else:
        enc = ConvNet(a.encoder, a.channels)
        lc = enc.stages[enc.local_at][0].out_channels
    pairs = a.amdim_pairs.split(",")
    if amdim:
        if not a.encoder.startswith("amdim"):
            raise SystemExit("bench/train_dim.py: --method amdim runs on amdim28 or amdim32")
        gh = MIHead(64, a.mi_units, False)
        lh = MIHead(lc, a.mi_units, True) if "1-7" in pairs else None
        ch = MIHead(enc.conv_channels, a.mi_units, True) if "1-5" in pairs or "5-5" in pairs else None
        mods = [m for m in (enc, gh, lh, ch) if m is not None]
    elif a.scorer == "concat":
        critic = Concat(lc, 64, a.mi_units)
        mods = [enc, critic]
        score = critic
    else:
        lh, gh = MIHead(lc, a.mi_units, True), MIHead(64, a.mi_units, False)
        mods = [enc, lh, gh]
        score = dot_scores
    if a.cross_view > 0:
        xh = MIHead(64, a.mi_units, False)
        mods.append(xh)
    disc = discriminator(64) if a.gamma > 0 else None
    for m in mods + ([disc] if disc else []):
        m.to(dev)
        if a.channels_last:
            m.to(memory_format=torch.channels_last)
    params = [p for m in mods for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.999)) if disc else None
    x = (torch.rand(a.views * a.batch_size, a.channels, enc.size, enc.size) * 2 - 1).to(dev)
    if a.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            if amdim:
                local, conv, y = enc(x)
            elif a.encoder.startswith("amdim"):
                local, _, y = enc(x)
            else:
                local, y = enc(x)
            if amdim:
                # Multi-scale DIM: the predictions in dimtorch's order, each
                # infoNCE across the views with the score stabilisation.
                g = gh(y)
                c5 = ch(conv) if ch is not None else None
                loss = 0
                for p in pairs:
                    if p == "1-7":
                        loss = loss + cross_views(a, lh(local), g, dot_scores)
                    elif p == "1-5":
                        loss = loss + cross_views(a, c5, g, dot_scores)
                    else:
                        r, l, _ = c5.shape
                        src = c5[torch.arange(r, device=dev), torch.randint(0, l, (r,), device=dev)]
                        loss = loss + cross_views(a, c5, src, dot_scores)
            elif a.scorer == "concat":
                loss = cross_views(a, local, y, score)
            else:
                loss = cross_views(a, lh(local), gh(y), score)
            if a.cross_view > 0:
                loss = loss + a.cross_view * cross_view_global(a, xh, y)
            if disc:
                gen = F.softplus(-disc(torch.sigmoid(y)).float()).mean()
                loss = loss + a.gamma * gen
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.dump_grads:
            dump_grads(a.dump_grads, params)
            a.dump_grads = None
        opt.step()
        d_loss = None
        if disc:
            d_opt.zero_grad(set_to_none=True)
            fake = y.detach().float().sigmoid()
            real = torch.rand(fake.shape, device=dev)
            adv = F.softplus(-disc(real)).mean() + F.softplus(disc(fake)).mean()
            total = adv
            if a.gp_weight > 0:
                total = adv + a.gp_weight * 0.5 * (gradient_penalty(disc, real) + gradient_penalty(disc, fake))
            total.backward()
            d_opt.step()
            d_loss = adv.item()
        return loss.item(), d_loss

    for _ in range(a.warmup):
        step()
    sync()
    if a.lockstep:
        print(json.dumps({"ready": True}), flush=True)
    start = time.perf_counter()
    first = last = None
    step_ms = []
    for i in range(a.steps):
        if a.lockstep:
            if not sys.stdin.readline():
                raise SystemExit(f"--lockstep: standard input ended before step {i + 1} of {a.steps}")
            t0 = time.perf_counter()
        last = step()
        if a.lockstep:
            sync()
            step_ms.append((time.perf_counter() - t0) * 1000)
            print(json.dumps({"step_ms": step_ms[-1]}), flush=True)
        first = last if first is None else first
    sync()
    sec = time.perf_counter() - start
    if a.lockstep:
        sec = sum(step_ms) / 1000
    r = {"impl": "pytorch", "encoder": a.encoder, "batch_size": a.batch_size, "mi_units": a.mi_units,
         "threads": a.threads, "device": str(dev), "bf16": a.bf16, "steps": a.steps,
         "images_per_sec": a.steps * a.batch_size / sec, "ms_per_step": sec * 1000 / a.steps,
         "first_loss": first[0], "last_loss": last[0], "first_d_loss": first[1], "last_d_loss": last[1],
         "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if a.lockstep:
        r["step_ms"] = step_ms
    print(json.dumps(r) if a.json else r)


if __name__ == "__main__":
    main()
