#!/usr/bin/env python3
"""dimtorch's GPU check: one script, run from a bundle made by
bench/gpu_bundle.sh, on a machine that has Python's PyTorch (with its
libtorch), cmake and a C++ compiler but no Go toolchain and no network.

    python3 gpu_check.py [--device cuda] [--out summary.json] [--quick]

It builds libdimtorch_shim.so there against that PyTorch's libtorch, then runs
the Go binaries built elsewhere against it:
  1. `dimtorch env` (libtorch version, CUDA, the shim's interface version);
  2. the torch package's tests, TestCUDA included (it must pass, not skip,
     with --device cuda);
  3. `dimtorch bench train` against bench/train_dim.py (PyTorch eager) on the
     same device: dcgan32, batch 64, 512 and 2048 MI units, float32 and bf16
     autocast, alternating pairs; the median and range of the paired ratios;
  4. training on the device: every mode x estimator briefly, bf16, two views,
     then one epoch of DIM(L) on 10,000 Fashion-MNIST images;
  5. the linear probe of that checkpoint and of the untrained encoder, on the
     device;
  6. export to ONNX of the device-trained checkpoint, and agreement of
     onnxruntime's output with the torch backend's on the device.
Each stage's result goes into one JSON summary (also printed as the last
line); the exit status is 0 only when every stage passed. With --device cpu
--quick it checks its own logic on a machine without a GPU (CI does).
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class Check:
    def __init__(self, a):
        self.a = a
        self.work = os.path.abspath(a.work)
        os.makedirs(self.work, exist_ok=True)
        self.shim_dir = os.path.abspath(a.shim_dir) if a.shim_dir else os.path.join(self.work, "shim")
        self.summary = {"device": a.device, "quick": a.quick, "bundle": HERE, "stages": {}}
        self.env = dict(os.environ)
        self.env["DIMTORCH_LOG_FORMAT"] = "json"
        self.env["LD_LIBRARY_PATH"] = self.shim_dir + (":" + self.env["LD_LIBRARY_PATH"] if self.env.get("LD_LIBRARY_PATH") else "")
        self.bin = os.path.join(HERE, "bin", "dimtorch")
        self.data = os.path.join(HERE, "data")
        self.log = open(os.path.join(self.work, "gpu-check.log"), "w")

    def say(self, msg):
        print(msg, flush=True)
        self.log.write(msg + "\n")
        self.log.flush()

    def run(self, cmd, timeout, cwd=None, check=True):
        """Runs cmd; returns its stdout; raises with the output's tail on failure."""
        self.log.write("$ " + " ".join(cmd) + "\n")
        self.log.flush()
        t0 = time.time()
        try:
            p = subprocess.run(cmd, cwd=cwd or self.work, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"")
            out = out.decode(errors="replace") if isinstance(out, bytes) else out
            self.log.write(out + "\n")
            raise RuntimeError(f"timed out after {timeout} s: {' '.join(cmd)}\n{out[-2000:]}")
        self.log.write(p.stdout + p.stderr + f"\n(exit {p.returncode}, {time.time() - t0:.1f} s)\n")
        self.log.flush()
        if check and p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {' '.join(cmd)}\n{(p.stdout + p.stderr)[-3000:]}")
        return p.stdout if check else p

    def stage(self, name, fn):
        self.say(f"== {name}")
        t0 = time.time()
        try:
            res = fn() or {}
            res.setdefault("ok", True)
        except Exception as e:  # a stage's failure is recorded; the next stages still run
            res = {"ok": False, "error": str(e)[-4000:]}
        res["seconds"] = round(time.time() - t0, 1)
        self.summary["stages"][name] = res
        self.say(f"   {'ok' if res['ok'] else 'FAILED'} in {res['seconds']} s" + ("" if res["ok"] else ": " + res["error"].splitlines()[0]))
        return res

    # ---- stages ----------------------------------------------------------

    def machine(self):
        import torch
        r = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
             "cpus": os.cpu_count(), "version": open(os.path.join(HERE, "VERSION")).read().strip()}
        if torch.cuda.is_available():
            r["gpu"] = torch.cuda.get_device_name(0)
            r["cuda"] = torch.version.cuda
        if self.a.device.startswith("cuda") and not torch.cuda.is_available():
            r["ok"] = False
            r["error"] = "--device cuda but PyTorch sees no GPU"
        return r

    def shim(self):
        if self.a.shim_dir:
            if not os.path.exists(os.path.join(self.shim_dir, "libdimtorch_shim.so")):
                raise RuntimeError(f"--shim-dir {self.shim_dir} holds no libdimtorch_shim.so")
            return {"prebuilt": self.shim_dir}
        import torch.utils
        prefix = torch.utils.cmake_prefix_path
        cfg = ["cmake", "-S", os.path.join(HERE, "shim"), "-B", self.shim_dir, "-DCMAKE_BUILD_TYPE=Release"]
        if os.path.exists(os.path.join(prefix, "Torch", "TorchConfig.cmake")):
            cfg.append("-DCMAKE_PREFIX_PATH=" + prefix)  # the Python package's libtorch
        if shutil.which("ninja"):
            cfg += ["-G", "Ninja"]
        self.run(cfg, 300)
        self.run(["cmake", "--build", self.shim_dir, "-j", str(os.cpu_count() or 2)], 900)
        return {"cmake_prefix": prefix}

    def dimtorch_env(self):
        out = self.run([self.bin, "env", "--json"], 120)
        r = json.loads(out)
        res = {"libtorch": r.get("libtorch"), "cuda": r.get("cuda"), "cuda_devices": r.get("cuda_devices"), "shim_abi": r.get("shim_abi")}
        if self.a.device.startswith("cuda") and not r.get("cuda"):
            res.update(ok=False, error="the shim's libtorch sees no CUDA")
        return res

    def torch_tests(self):
        p = self.run([os.path.join(HERE, "bin", "torch.test"), "-test.v", "-test.count=1", "-test.timeout=600s"],
                     700, cwd=os.path.join(HERE, "shim"), check=False)
        out = p.stdout + p.stderr
        with open(os.path.join(self.work, "torch-tests.log"), "w") as f:
            f.write(out)
        res = {"passed": len(re.findall(r"^--- PASS", out, re.M)), "failed": re.findall(r"^--- FAIL: (\S+)", out, re.M),
               "skipped": re.findall(r"^--- SKIP: (\S+)", out, re.M), "exit": p.returncode}
        m = re.search(r"^--- (PASS|FAIL|SKIP): TestCUDA\b", out, re.M)
        res["TestCUDA"] = m.group(1) if m else "missing"
        res["ok"] = p.returncode == 0 and not res["failed"] and (res["TestCUDA"] == "PASS" or not self.a.device.startswith("cuda"))
        if not res["ok"]:
            res["error"] = "\n".join(out.splitlines()[-40:])
        return res

    def bench(self):
        dev = self.a.device
        if self.a.quick:
            units, steps, warmup, repeats, batch = [64], 2, 1, 1, 8
        else:
            units, steps, warmup, repeats, batch = [512, 2048], self.a.bench_steps, 10, self.a.repeats, 64
        threads = str(self.a.threads)
        rows = []
        for u in units:
            for bf16 in (False, True):
                common = ["--encoder", "dcgan32", "--batch-size", str(batch), "--mi-units", str(u), "--steps", str(steps),
                          "--warmup", str(warmup), "--threads", threads, "--device", dev, "--json",
                          "--channels-last=false"] + (["--bf16"] if bf16 else [])  # the same layout on both sides
                cmds = {"dimtorch": [self.bin, "bench", "train"] + common,
                        "pytorch": [sys.executable, os.path.join(HERE, "bench", "train_dim.py")] + common}
                runs = {"dimtorch": [], "pytorch": []}
                for i in range(repeats):
                    order = ["dimtorch", "pytorch"] if i % 2 == 0 else ["pytorch", "dimtorch"]
                    for impl in order:
                        out = self.run(cmds[impl], 600)
                        runs[impl].append(json.loads(out.strip().splitlines()[-1]))
                ratios = [d["images_per_sec"] / p["images_per_sec"] for d, p in zip(runs["dimtorch"], runs["pytorch"])]
                row = {"mi_units": u, "bf16": bf16, "batch_size": batch, "steps": steps, "pairs": repeats,
                       "dimtorch_images_per_sec": round(statistics.median(r["images_per_sec"] for r in runs["dimtorch"]), 1),
                       "pytorch_images_per_sec": round(statistics.median(r["images_per_sec"] for r in runs["pytorch"]), 1),
                       "ratio_median": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                       "dimtorch_last_loss": runs["dimtorch"][-1]["last_loss"], "pytorch_last_loss": runs["pytorch"][-1]["last_loss"]}
                self.say(f"   {u} units, bf16 {bf16}: dimtorch {row['dimtorch_images_per_sec']} images/s, PyTorch {row['pytorch_images_per_sec']}, "
                         f"ratio {row['ratio_median']} ({row['ratio_min']}-{row['ratio_max']})")
                rows.append(row)
        return {"rows": rows}

    def train_cmd(self, out, extra, limit, epochs=1):
        return [self.bin, "train", "--device", self.a.device, "--data", "fashion-mnist", "--data-dir", self.data,
                "--encoder", "basic28", "--batch-size", "64", "--epochs", str(epochs), "--limit", str(limit), "--lr", "1e-3",
                "--seed", "1", "--threads", str(self.a.threads), "--out", out] + extra

    def last_metrics(self, run_dir):
        last = None
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            for line in f:
                if line.strip():
                    last = json.loads(line)
        return last

    def train_modes(self):
        if self.a.quick:
            variants = [["--mode", "local", "--estimator", "jsd"], ["--mode", "local+global", "--estimator", "nce", "--bf16"]]
        else:
            variants = [["--mode", m, "--estimator", e] for m in ("local", "global", "local+global") for e in ("jsd", "nce", "dv")]
            variants += [["--mode", "local", "--estimator", "jsd", "--bf16"], ["--mode", "local+global", "--estimator", "nce", "--bf16"],
                         ["--mode", "local", "--estimator", "nce", "--views", "2", "--crop-scale", "0.4", "--score-clip", "10", "--bf16"],
                         ["--mode", "local", "--estimator", "jsd", "--scorer", "concat"]]
        runs = []
        for i, v in enumerate(variants):
            d = os.path.join(self.work, f"mode-{i}")
            shutil.rmtree(d, ignore_errors=True)
            t0 = time.time()
            self.run(self.train_cmd(d, v, 128 if self.a.quick else 1024), 300)
            m = self.last_metrics(d)
            runs.append({"flags": " ".join(v), "seconds": round(time.time() - t0, 1), "last_metrics": m})
        return {"runs": runs}

    def train_main(self):
        d = os.path.join(self.work, "run")
        shutil.rmtree(d, ignore_errors=True)
        limit = 512 if self.a.quick else 10000
        t0 = time.time()
        self.run(self.train_cmd(d, ["--mode", "local", "--estimator", "jsd", "--mi-units", "256"], limit), 600)
        sec = time.time() - t0
        with open(os.path.join(d, "checkpoint", "checkpoint.json")) as f:
            meta = json.load(f)
        res = {"images": limit, "seconds": round(sec, 1), "last_metrics": self.last_metrics(d), "device_in_config": meta.get("config", {}).get("device")}
        if res["device_in_config"] != self.a.device:
            res.update(ok=False, error=f"the checkpoint says device {res['device_in_config']!r}")
        return res

    def probe(self):
        limit = "512" if self.a.quick else "10000"
        common = ["--device", self.a.device, "--data", "fashion-mnist", "--data-dir", self.data, "--probe", "linear",
                  "--features", "conv,fc,y", "--limit-train", limit, "--threads", str(self.a.threads), "--json"]
        t0 = time.time()
        trained = json.loads(self.run([self.bin, "eval", "--checkpoint", os.path.join(self.work, "run")] + common, 600).strip().splitlines()[-1])
        t1 = time.time()
        untrained = json.loads(self.run([self.bin, "eval", "--random-init", "--encoder", "basic28", "--seed", "1",
                                         "--out", os.path.join(self.work, "untrained")] + common, 600).strip().splitlines()[-1])
        def accs(r):
            return {k: r[k] for k in ("conv", "fc", "y") if k in r}
        trained, untrained = accs(trained), accs(untrained)
        res = {"limit_train": int(limit), "trained": trained, "untrained": untrained, "trained_seconds": round(t1 - t0, 1)}
        if not self.a.quick and not trained.get("y", 0) > untrained.get("y", 1):
            res.update(ok=False, error="the trained encoder's Y does not beat the untrained encoder's")
        return res

    def export(self):
        run_dir = os.path.join(self.work, "run")
        onnx_path = os.path.join(self.work, "enc.onnx")
        self.run([self.bin, "export", "--onnx", "--checkpoint", run_dir, "--out", onnx_path, "--outputs", "y"], 300)
        limit = "256" if self.a.quick else "2048"
        torch_npy = os.path.join(self.work, "embed-torch.npy")
        self.run([self.bin, "embed", "--backend", "torch", "--device", self.a.device, "--checkpoint", run_dir, "--data", "fashion-mnist",
                  "--data-dir", self.data, "--split", "test", "--limit", limit, "--out", torch_npy], 300)
        import numpy as np
        ref = np.load(torch_npy)
        try:
            import onnxruntime as ort
            runtime = "onnxruntime " + ort.__version__ + " (Python)"
            sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            images = load_test_images(os.path.join(self.data, "fashion-mnist"), int(limit))
            got = sess.run(None, {sess.get_inputs()[0].name: images})[0]
        except ImportError:
            lib = self.a.onnxruntime_lib or os.path.join(HERE, "lib", "libonnxruntime.so.1")
            if not os.path.exists(lib):
                return {"ok": False, "error": "no onnxruntime: neither Python's onnxruntime nor a library (--onnxruntime-lib, or bundle it with DIMTORCH_BUNDLE_ORT=1)"}
            runtime = "onnxruntime (bundled library, through dimtorch embed)"
            onnx_npy = os.path.join(self.work, "embed-onnx.npy")
            self.run([self.bin, "embed", "--model", onnx_path, "--onnxruntime-lib", lib, "--data", "fashion-mnist", "--data-dir", self.data,
                      "--split", "test", "--limit", limit, "--out", onnx_npy], 300)
            got = np.load(onnx_npy)
        diff = float(np.abs(got - ref).max())
        res = {"runtime": runtime, "images": int(limit), "max_abs_diff": diff, "tolerance": 1e-3}
        if got.shape != ref.shape or not diff <= 1e-3:
            res.update(ok=False, error=f"onnxruntime and the torch backend on {self.a.device} differ: shapes {got.shape} {ref.shape}, max |diff| {diff}")
        return res

    def main(self):
        t0 = time.time()
        self.stage("machine", self.machine)
        if not self.stage("shim", self.shim)["ok"]:
            return self.finish(t0)
        if not self.stage("env", self.dimtorch_env)["ok"]:
            return self.finish(t0)
        self.stage("torch_tests", self.torch_tests)
        self.stage("bench_train", self.bench)
        self.stage("train_modes", self.train_modes)
        if self.stage("train", self.train_main)["ok"]:
            self.stage("probe", self.probe)
            self.stage("export", self.export)
        return self.finish(t0)

    def finish(self, t0):
        self.summary["seconds"] = round(time.time() - t0, 1)
        self.summary["ok"] = all(s["ok"] for s in self.summary["stages"].values())
        text = json.dumps(self.summary)
        with open(self.a.out, "w") as f:
            f.write(json.dumps(self.summary, indent=1) + "\n")
        print(text, flush=True)
        return 0 if self.summary["ok"] else 1


def load_test_images(d, n):
    """The first n Fashion-MNIST test images as float32 [n, 1, 28, 28] in [0, 1] (the exported model's input)."""
    import gzip
    import numpy as np
    with gzip.open(os.path.join(d, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read()
    pix = np.frombuffer(raw, dtype=np.uint8, offset=16)[: n * 784]
    return (pix.astype(np.float32) / 255.0).reshape(n, 1, 28, 28)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--out", default=None, help="the JSON summary (default WORK/summary.json)")
    ap.add_argument("--work", default=os.path.join(HERE, "work"), help="where the shim, runs and logs go")
    ap.add_argument("--shim-dir", default=None, help="use a libdimtorch_shim.so already built there")
    ap.add_argument("--threads", type=int, default=4, help="CPU threads of every run")
    ap.add_argument("--repeats", type=int, default=3, help="alternating pairs per benchmark configuration")
    ap.add_argument("--bench-steps", type=int, default=100, help="timed steps per benchmark run")
    ap.add_argument("--onnxruntime-lib", default=None, help="libonnxruntime.so.1 for the export stage when Python has no onnxruntime")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script's logic (CI, --device cpu)")
    a = ap.parse_args()
    if a.out is None:
        a.out = os.path.join(a.work, "summary.json")
    if a.onnxruntime_lib:
        a.onnxruntime_lib = os.path.abspath(a.onnxruntime_lib)
    sys.exit(Check(a).main())


if __name__ == "__main__":
    main()
