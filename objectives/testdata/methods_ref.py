#!/usr/bin/python3
"""Reference losses of the baselines (VAE, AAE, BiGAN, NAT, CPC), written
independently in plain PyTorch from the papers' formulas, for
objectives/methods_test.go.

    /usr/bin/python3 methods_ref.py DIR

DIR holds what the Go test wrote: config.json (method, likelihood, rows, skip),
the batch x.npy, the encoder's taps (y.npy, fc.npy, local.npy), the noise
the Go side drew (noise.npy: the VAE's epsilon or BiGAN's codes; real.npy:
the AAE prior's samples), NAT's indices.npy, and every weight and buffer
of the method and its critic as p.NAME.npy. Prints one JSON object of
losses (and NAT's new assignment of the batch's images), and writes the
gradients of the total loss with respect to the taps it depends on as
ref_grad_y.npy, ref_grad_fc.npy, ref_grad_local.npy.
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


def load(name):
    a = np.load(os.path.join(D, name + ".npy"))
    return torch.from_numpy(a)


def p(name):
    return load("p." + name)


def bn(x, prefix):
    # Training-mode BatchNorm: batch statistics, biased variance.
    return F.batch_norm(x, None, None, p(prefix + ".weight"), p(prefix + ".bias"), training=True, eps=1e-5)


def decoder(z, prefix, c, h, w, tanh):
    h0, w0 = h // 4, w // 4
    x = F.relu(bn(F.linear(z, p(prefix + ".0.weight")), prefix + ".1"))
    x = x.reshape(-1, 128, h0, w0)
    x = F.interpolate(x, size=(2 * h0, 2 * w0), mode="nearest")
    x = F.relu(bn(F.conv2d(x, p(prefix + ".5.weight"), padding=1), prefix + ".6"))
    x = F.interpolate(x, size=(h, w), mode="nearest")
    x = F.conv2d(x, p(prefix + ".9.weight"), p(prefix + ".9.bias"), padding=1)
    return torch.tanh(x) if tanh else x


def nll(out, x):
    """Negative log-likelihood per image (batch mean)."""
    n = x.shape[0]
    if cfg["likelihood"] == "bernoulli":
        t = (x + 1) / 2
        # -[t log sigmoid(o) + (1 - t) log(1 - sigmoid(o))]
        per = -(t * F.logsigmoid(out) + (1 - t) * F.logsigmoid(-out))
        return per.sum() / n
    ls = p("log_scale")[0]
    var = torch.exp(2 * ls)
    per = 0.5 * (x - out) ** 2 / var + ls + 0.5 * math.log(2 * math.pi)
    return per.sum() / n


def mlp_d(v, prefix):
    v = F.relu(F.linear(v, p(prefix + ".0.weight"), p(prefix + ".0.bias")))
    v = F.relu(F.linear(v, p(prefix + ".2.weight"), p(prefix + ".2.bias")))
    return F.linear(v, p(prefix + ".4.weight"), p(prefix + ".4.bias"))


def joint_d(x, z):
    a = F.leaky_relu(F.conv2d(x, p("discriminator.x.0.weight"), p("discriminator.x.0.bias"), stride=2, padding=1), 0.2)
    a = F.leaky_relu(F.conv2d(a, p("discriminator.x.2.weight"), p("discriminator.x.2.bias"), stride=2, padding=1), 0.2)
    b = F.leaky_relu(F.linear(z, p("discriminator.z.0.weight"), p("discriminator.z.0.bias")), 0.2)
    j = torch.cat([a.flatten(1), b], 1)
    j = F.leaky_relu(F.linear(j, p("discriminator.joint.0.weight"), p("discriminator.joint.0.bias")), 0.2)
    return F.linear(j, p("discriminator.joint.2.weight"), p("discriminator.joint.2.bias")).flatten()


x = load("x")
n, c, h, w = x.shape
y = load("y").requires_grad_(True)
fc = load("fc").requires_grad_(True)
local = load("local").requires_grad_(True)
total = None
out = {}
m = cfg["method"]
if m == "vae":
    mu, lv = y, F.linear(fc, p("logvar.weight"), p("logvar.bias"))
    z = mu + torch.exp(0.5 * lv) * load("noise")
    recon = nll(decoder(z, "decoder", c, h, w, False), x)
    # KL(N(mu, sigma^2) || N(0, 1)) per dimension, summed, batch mean.
    kl = (0.5 * (mu ** 2 + torch.exp(lv) - 1 - lv)).sum() / n
    total = recon + kl
    out["recon"], out["kl"] = recon.item(), kl.item()
elif m == "aae":
    recon = nll(decoder(y, "decoder", c, h, w, False), x) / (c * h * w)
    gen = F.softplus(-mlp_d(y, "prior")).mean()
    total = recon + gen
    out["recon"], out["prior"] = recon.item(), gen.item()
    real = load("real")
    r = real.clone().requires_grad_(True)
    f = y.detach().clone().requires_grad_(True)
    dr, df = mlp_d(r, "prior"), mlp_d(f, "prior")
    out["d_loss"] = (F.softplus(-dr).mean() + F.softplus(df).mean()).item()
    gr, = torch.autograd.grad(dr.sum(), r)
    gf, = torch.autograd.grad(df.sum(), f)
    out["grad_penalty"] = (0.5 * ((gr ** 2).sum(1).mean() + (gf ** 2).sum(1).mean())).item()
elif m == "bigan":
    zs = load("noise")
    gz = decoder(zs, "generator", c, h, w, True)
    real, fake = joint_d(x, y), joint_d(gz, zs)
    # Encoder and generator: labels flipped (non-saturating).
    total = (F.binary_cross_entropy_with_logits(real, torch.zeros_like(real))
             + F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake)))
    out["adversarial"] = total.item()
    out["d_loss"] = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                     + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))).item()
elif m == "nat":
    from scipy.optimize import linear_sum_assignment
    idx = load("indices").long()
    targets, assign = p("targets"), p("assign").long()
    u = y / y.norm(dim=1, keepdim=True)
    cur = assign[idx]
    rows, cols = linear_sum_assignment((u.detach() @ targets[cur].T).double().numpy(), maximize=True)
    new = cur[torch.from_numpy(cols)]
    out["assign"] = new.tolist()
    total = ((u - targets[new]) ** 2).sum(1).mean()
    out["nat"] = total.item()
elif m == "cpc":
    z = local
    rows, skip = cfg["rows"], cfg["skip"]
    cc, hh = z.shape[1], z.shape[2]

    def context_layer(v, i):
        # The context at row r sees rows r-2..r: the map shifted down by one
        # row (row r holds row r-1), then an ordinary 3x3 convolution with
        # padding 1 (rows r-1..r+1 of the shifted map).
        shifted = F.pad(v, (0, 0, 1, 0))[:, :, :hh]
        return F.relu(F.conv2d(shifted, p("context.%d.1.weight" % i), p("context.%d.1.bias" % i), padding=1))

    ctx = context_layer(context_layer(z, 0), 1)
    pred = F.conv2d(ctx, p("predict.weight"), p("predict.bias"))
    losses = []
    for j in range(rows):
        k = skip + 1 + j
        g = pred[:, j * cc:(j + 1) * cc, : hh - k].permute(0, 2, 3, 1).reshape(-1, cc)
        t = z[:, :, k:].permute(0, 2, 3, 1).reshape(-1, cc)
        s = g @ t.T
        losses.append(F.cross_entropy(s, torch.arange(s.shape[0])))
    total = torch.stack(losses).mean()
    out["cpc"] = total.item()
out["total"] = total.item()
total.backward()
for name, v in (("y", y), ("fc", fc), ("local", local)):
    if v.grad is not None:
        np.save(os.path.join(D, "ref_grad_%s.npy" % name), v.grad.numpy().astype(np.float32))
print(json.dumps(out))
