#!/usr/bin/python3
"""Reference loss of multi-scale DIM (method amdim), written independently in
plain PyTorch from AMDIM's formulation (Bachman, Hjelm and Buchwalter, 2019),
in its style: sources [R, U] against targets [U, R*L] by one matrix product,
a 0/1 mask of the positive pairs, and a log-softmax of each positive score
against the scores of every position of every other image. For
objectives/amdim_test.go.

    /usr/bin/python3 amdim_ref.py DIR

DIR holds what the Go test wrote: config.json (pairs, views, units, clip),
the taps as leaves (y.npy [V*N, D], local.npy, conv.npy [V*N, C, H, W]),
positions.npy (the conv-map position of each row that predicts in 5-5) and
the heads' weights and buffers as p.NAME.npy. Prints one JSON object of
losses and writes the gradients of the total with respect to the taps as
ref_grad_y.npy, ref_grad_local.npy, ref_grad_conv.npy.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

D = sys.argv[1]
cfg = json.load(open(os.path.join(D, "config.json")))
V, U, CLIP = cfg["views"], cfg["units"], cfg["clip"]


def load(name):
    return torch.from_numpy(np.load(os.path.join(D, name + ".npy")))


def p(name):
    return load("p." + name)


def head_map(x, pre):
    """The head on a map [R, C, H, W] -> [R, H*W, U] (1x1 convolutions)."""
    h = F.conv2d(x, p(pre + ".block.0.weight"))
    h = F.batch_norm(h, None, None, p(pre + ".block.1.weight"), p(pre + ".block.1.bias"), training=True, eps=1e-5)
    h = F.conv2d(F.relu(h), p(pre + ".block.3.weight"), p(pre + ".block.3.bias"))
    h = h + F.conv2d(x, p(pre + ".shortcut.weight"))
    h = h.flatten(2).transpose(1, 2)
    return F.layer_norm(h, (U,), p(pre + ".norm.weight"), p(pre + ".norm.bias"), eps=1e-5)


def head_vec(x, pre):
    """The head on vectors [R, D] -> [R, U] (linear layers)."""
    h = F.linear(x, p(pre + ".block.0.weight"))
    h = F.batch_norm(h, None, None, p(pre + ".block.1.weight"), p(pre + ".block.1.bias"), training=True, eps=1e-5)
    h = F.linear(F.relu(h), p(pre + ".block.3.weight"), p(pre + ".block.3.bias"))
    h = h + F.linear(x, p(pre + ".shortcut.weight"))
    return F.layer_norm(h, (U,), p(pre + ".norm.weight"), p(pre + ".norm.bias"), eps=1e-5)


def nce(src, trg):
    """AMDIM's NCE: src [N, U] (one vector per image) predicts every
    position of trg [N, L, U]; the negatives of image i's positives are all
    positions of every other image. Returns the loss and the score penalty."""
    n, l, _ = trg.shape
    raw = torch.mm(src, trg.reshape(n * l, U).t()).reshape(n, n, l)  # [src image, trg image, position]
    pen = torch.zeros(())
    if CLIP > 0:
        raw = raw / math.sqrt(U)
        pen = 0.05 * (raw ** 2).mean()
        raw = CLIP * torch.tanh(raw / CLIP)
    pos_mask = torch.eye(n).unsqueeze(2).expand(n, n, l)
    pos = (pos_mask * raw).sum(1)  # [N, L]: image i's score at each of its own positions
    neg = raw.masked_fill(pos_mask.bool(), float("-inf")).reshape(n, n * l)  # [N, N*L]
    neg_lse = torch.logsumexp(neg, 1, keepdim=True)  # shared by image i's positives
    log_softmax = pos - torch.logaddexp(pos, neg_lse.expand(n, l))
    return -log_softmax.mean(), pen


y, local, conv = load("y").requires_grad_(), load("local").requires_grad_(), load("conv").requires_grad_()
pos_idx = load("positions")
n = y.shape[0] // V
g = head_vec(y, "global_head")
maps = {}
if "1-7" in cfg["pairs"]:
    maps["7"] = head_map(local, "local_head")
if "1-5" in cfg["pairs"] or "5-5" in cfg["pairs"]:
    maps["5"] = head_map(conv, "conv_head")
src5 = None
if "5" in maps:
    src5 = maps["5"][torch.arange(maps["5"].shape[0]), pos_idx]  # [V*N, U]


def view(t, k):
    return t[k * n:(k + 1) * n]


out = {}
total = torch.zeros(())
pen_total = torch.zeros(())
for pair in cfg["pairs"]:
    src_all, trg_all = {"1-7": (g, maps.get("7")), "1-5": (g, maps.get("5")), "5-5": (src5, maps.get("5"))}[pair]
    losses, pens = [], []
    for a in range(V):  # source view
        for b in range(V):  # target view
            if a == b:
                continue
            lo, pe = nce(view(src_all, a), view(trg_all, b))
            losses.append(lo)
            pens.append(pe)
    loss = torch.stack(losses).mean() + torch.stack(pens).mean()
    out["amdim_" + pair.replace("-", "t")] = loss.item()
    total = total + loss
    pen_total = pen_total + torch.stack(pens).mean()
out["total"] = total.item()
if CLIP > 0:
    out["score_penalty"] = pen_total.item()
total.backward()
for name, t in (("y", y), ("local", local), ("conv", conv)):
    if t.grad is not None:
        np.save(os.path.join(D, "ref_grad_" + name + ".npy"), t.grad.numpy())
print(json.dumps(out))
