#!/usr/bin/python3
"""One epoch of `dimtorch train` (its defaults: loader, metrics, online probe,
test-set probe, checkpoint, all included) against bench/train_epoch.py, the
plain PyTorch script that trains the same networks on the same data with a
DataLoader, taken in turns (A B A B ...), each a fresh process. Wall time is
the process's from start to exit; CPU time is user + system of the process
and its children (the DataLoader's workers).

    /usr/bin/python3 bench/compare_epoch.py [--repeats 2] [--threads 2] [--workers 2] [--limit 0]
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(cmd, cwd=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dimtorch", default=os.path.join(HERE, "..", "bin", "dimtorch"))
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args()
    rows = {"dimtorch": [], "pytorch": []}
    for r in range(a.repeats):
        out = tempfile.mkdtemp(prefix="compare_epoch.")
        try:
            d = [a.dimtorch, "train", "--data", "fashion-mnist", "--data-dir", a.data_dir, "--threads", str(a.threads),
                 "--workers", str(a.workers), "--limit", str(a.limit), "--out", os.path.join(out, "run"), "--json"]
            p = [sys.executable, os.path.join(HERE, "train_epoch.py"), "--data-dir", a.data_dir, "--threads", str(a.threads),
                 "--workers", str(a.workers), "--limit", str(a.limit), "--out", out]
            for name, cmd in (("dimtorch", d), ("pytorch", p)) if r % 2 == 0 else (("pytorch", p), ("dimtorch", d)):
                wall, cpu, res = timed(cmd)
                rows[name].append({"wall": wall, "cpu": cpu, "probe_test_acc": res.get("probe_test_acc"), "loss": res.get("loss")})
                print(f"round {r + 1} {name}: wall {wall:.1f} s, CPU {cpu:.1f} s, online probe {res.get('probe_test_acc')}", flush=True)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall", "cpu")} for k, v in rows.items()}
    print()
    print(f"| one epoch, {a.threads} threads, {a.workers} loader workers | wall (s) | CPU (s) | online probe (test) |")
    print("|---|---|---|---|")
    for k in ("dimtorch", "pytorch"):
        accs = ", ".join(f"{100 * x['probe_test_acc']:.2f}" for x in rows[k] if x["probe_test_acc"] is not None)
        print(f"| {k} | {med[k]['wall']:.1f} | {med[k]['cpu']:.1f} | {accs} |")
    print(f"| PyTorch / dimtorch | {med['pytorch']['wall'] / med['dimtorch']['wall']:.2f}x | "
          f"{med['pytorch']['cpu'] / med['dimtorch']['cpu']:.2f}x | |")
    print(json.dumps({"median": med, "runs": rows}))


if __name__ == "__main__":
    main()
