#!/usr/bin/python3
"""Reference losses of every DIM estimator on fixed score tensors.

An implementation independent of dimtorch's: plain loops over positive and
negative pairs, straight from the formulas in shared/docs/dim-reference.md,
in float64 PyTorch (Debian's python3-torch).
    /usr/bin/python3 objectives/testdata/gen_estimators.py > objectives/testdata/estimators.json
"""
import json
import math

import torch

torch.manual_seed(99)
F = torch.nn.functional
LOG2 = math.log(2)

POS = {
    "gan": lambda t: -F.softplus(-t),
    "jsd": lambda t: LOG2 - F.softplus(-t),
    "kl": lambda t: t,
    "rkl": lambda t: -torch.exp(-t),
    "h2": lambda t: 1 - torch.exp(-t),
    "x2": lambda t: t,
}
NEG = {
    "gan": lambda t: F.softplus(t),
    "jsd": lambda t: F.softplus(t) - LOG2,
    "kl": lambda t: torch.exp(t - 1),
    "rkl": lambda t: t - 1,
    "h2": lambda t: torch.exp(t) - 1,
    "x2": lambda t: t * t / 4 + t,
}


def pairs(s):
    n = s.shape[0]
    pos = [s[i, i] for i in range(n)]
    neg = [s[i, k] for i in range(n) for k in range(n) if i != k]
    return torch.stack(pos), torch.stack(neg)


def reference(name, s):
    n, _, L, M = s.shape
    p, q = pairs(s)
    if name in POS:
        return -(POS[name](p).mean() - NEG[name](q).mean())
    if name == "dv":
        return -(p.mean() - (torch.logsumexp(q.flatten(), 0) - math.log(q.numel())))
    if name == "nce":
        total, count = 0.0, 0
        for i in range(n):
            for m in range(M):
                negs = torch.stack([s[j, i, lp, m] for j in range(n) if j != i for lp in range(L)])
                for l in range(L):
                    cand = torch.cat([s[i, i, l, m].reshape(1), negs])
                    total += -(s[i, i, l, m] - torch.logsumexp(cand, 0))
                    count += 1
        return total / count
    raise ValueError(name)


cases = []
for shape in [(4, 3, 1), (3, 2, 2), (5, 1, 1), (2, 4, 3)]:
    n, L, M = shape
    s = torch.randn(n, n, L, M, dtype=torch.float64) * 2
    losses = {name: reference(name, s).item() for name in list(POS) + ["dv", "nce"]}
    cases.append({"shape": [n, n, L, M], "scores": s.flatten().tolist(), "losses": losses})
json.dump({"torch_version": torch.__version__, "cases": cases}, __import__("sys").stdout, indent=1)
