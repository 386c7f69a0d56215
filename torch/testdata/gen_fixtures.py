#!/usr/bin/python3
"""Reference values for dimtorch's torch package tests, computed by PyTorch.

Run with Debian's python3-torch (the same libtorch build the binding links):
    /usr/bin/python3 torch/testdata/gen_fixtures.py > torch/testdata/fixtures.json
Every case stores its inputs and PyTorch's outputs (float64), so the Go tests
recompute the outputs through the binding and compare.
"""
import json
import torch
import torch.nn.functional as F

torch.manual_seed(1234)
torch.set_default_dtype(torch.float64)
cases = []


def enc(t):
    t = t.detach()
    if t.dtype == torch.int64:
        return {"shape": list(t.shape), "dtype": "int64", "data": t.flatten().tolist()}
    return {"shape": list(t.shape), "dtype": "float64", "data": t.double().flatten().tolist()}


def case(name, inputs, outputs, **params):
    cases.append({"name": name, "params": params,
                  "inputs": {k: enc(v) for k, v in inputs.items()},
                  "outputs": {k: enc(v) for k, v in outputs.items()}})


def with_grads(name, inputs, fn, **params):
    """Forward and the gradients of sum(out * r) with respect to every float input."""
    ins = {k: v.clone().requires_grad_(v.dtype.is_floating_point) for k, v in inputs.items()}
    out = fn(**ins)
    r = torch.randn_like(out)
    (out * r).sum().backward()
    outs = {"out": out}
    for k, v in ins.items():
        if v.grad is not None:
            outs["grad_" + k] = v.grad
    ins["r"] = r
    case(name, ins, outs, **params)


x = torch.randn(2, 3, 7, 7)
w = torch.randn(4, 3, 3, 3)
b = torch.randn(4)
with_grads("conv2d", {"x": x, "w": w, "b": b}, lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1))
wt = torch.randn(3, 2, 4, 4)
bt = torch.randn(2)
with_grads("conv_transpose2d", {"x": x, "w": wt, "b": bt},
           lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1))
with_grads("max_pool2d", {"x": x}, lambda x: F.max_pool2d(x, 3, stride=2, padding=1))
with_grads("avg_pool2d", {"x": x}, lambda x: F.avg_pool2d(x, 2))
with_grads("adaptive_avg_pool2d", {"x": x}, lambda x: F.adaptive_avg_pool2d(x, (3, 3)))
with_grads("interpolate_bilinear", {"x": x}, lambda x: F.interpolate(x, size=(10, 12), mode="bilinear", align_corners=False))
with_grads("interpolate_nearest", {"x": x}, lambda x: F.interpolate(x, size=(14, 14), mode="nearest"))

xb = torch.randn(5, 3, 4, 4)
g = torch.randn(3)
bb = torch.randn(3)
rm = torch.randn(3)
rv = torch.rand(3) + 0.5
rm2, rv2 = rm.clone(), rv.clone()
out = F.batch_norm(xb, rm2, rv2, g, bb, training=True, momentum=0.1, eps=1e-5)
case("batch_norm_train", {"x": xb, "w": g, "b": bb, "rm": rm, "rv": rv},
     {"out": out, "rm": rm2, "rv": rv2})
out = F.batch_norm(xb, rm, rv, g, bb, training=False, eps=1e-5)
case("batch_norm_eval", {"x": xb, "w": g, "b": bb, "rm": rm, "rv": rv}, {"out": out})

xl = torch.randn(4, 5, 6)
with_grads("layer_norm", {"x": xl, "w": torch.randn(6), "b": torch.randn(6)},
           lambda x, w, b: F.layer_norm(x, (6,), w, b, 1e-5))
with_grads("linear", {"x": torch.randn(4, 5), "w": torch.randn(3, 5), "b": torch.randn(3)},
           lambda x, w, b: F.linear(x, w, b))

s = torch.randn(3, 4, 5) * 3
with_grads("logsumexp", {"x": s}, lambda x: torch.logsumexp(x, dim=(1, 2)))
with_grads("softmax", {"x": s}, lambda x: torch.softmax(x, dim=1))
with_grads("log_softmax", {"x": s}, lambda x: torch.log_softmax(x, dim=2))
with_grads("softplus", {"x": s * 10}, lambda x: F.softplus(x))
with_grads("leaky_relu", {"x": s}, lambda x: F.leaky_relu(x, 0.2))
with_grads("bmm", {"a": torch.randn(3, 4, 5), "b": torch.randn(3, 5, 2)}, lambda a, b: torch.bmm(a, b))
with_grads("einsum", {"a": torch.randn(2, 6, 4), "b": torch.randn(2, 3, 4)},
           lambda a, b: torch.einsum("nlc,mgc->nmlg", a, b))
with_grads("unfold", {"x": torch.randn(2, 1, 8, 8)}, lambda x: x.unfold(2, 4, 2).unfold(3, 4, 2))

logits = torch.randn(6, 4)
target = torch.tensor([0, 3, 1, 1, 2, 0])
li = logits.clone().requires_grad_(True)
ce = F.cross_entropy(li, target)
ce.backward()
case("cross_entropy", {"x": logits, "t": target}, {"out": ce, "grad_x": li.grad})
y = torch.rand(6, 4)
li = logits.clone().requires_grad_(True)
bce = F.binary_cross_entropy_with_logits(li, y)
bce.backward()
case("bce_with_logits", {"x": logits, "y": y}, {"out": bce, "grad_x": li.grad})
a, c = torch.randn(3, 5), torch.randn(3, 5)
case("mse_loss", {"a": a, "b": c}, {"out": F.mse_loss(a, c), "sum": F.mse_loss(a, c, reduction="sum")})

# Optimisers: three steps on loss = sum(c * p^2) + sum(d * p).
p0 = torch.randn(4, 3)
cc = torch.rand(4, 3) + 0.5
dd = torch.randn(4, 3)


def run(opt_fn, steps=3):
    p = p0.clone().requires_grad_(True)
    opt = opt_fn([p])
    for _ in range(steps):
        opt.zero_grad()
        (cc * p * p + dd * p).sum().backward()
        opt.step()
    return p.detach()


case("adam", {"p": p0, "c": cc, "d": dd},
     {"out": run(lambda ps: torch.optim.Adam(ps, lr=0.1, betas=(0.5, 0.999), eps=1e-8, weight_decay=0.01))})
case("adamw", {"p": p0, "c": cc, "d": dd},
     {"out": run(lambda ps: torch.optim.AdamW(ps, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1))})
case("sgd_nesterov", {"p": p0, "c": cc, "d": dd},
     {"out": run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01))})
case("sgd_momentum", {"p": p0, "c": cc, "d": dd},
     {"out": run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1))})

# Gradient clipping.
gs = [torch.randn(3, 3), torch.randn(5)]
ps = [torch.zeros_like(t, requires_grad=True) for t in gs]
for p, gg in zip(ps, gs):
    p.grad = gg.clone()
total = torch.nn.utils.clip_grad_norm_(ps, 1.5)
case("clip_grad_norm", {"g0": gs[0], "g1": gs[1]},
     {"total": total, "g0": ps[0].grad, "g1": ps[1].grad})

# Gradient of a gradient: d/dx sum((d/dx sum(x^3 * w))^2).
xg = torch.randn(5).requires_grad_(True)
wg = torch.randn(5)
(gx,) = torch.autograd.grad((xg ** 3 * wg).sum(), xg, create_graph=True)
(ggx,) = torch.autograd.grad((gx ** 2).sum(), xg)
case("double_grad", {"x": xg, "w": wg}, {"grad": gx, "gradgrad": ggx})

json.dump({"torch_version": torch.__version__, "cases": cases}, __import__("sys").stdout)
