#!/usr/bin/python3
"""Generate a folder of JPEG photos-like images for the loader benchmark
and the end-to-end shards run: OUT/cK/NNNNNNN.jpg, ten classes (class k:
stripes at k x 18 degrees, each image with its own frequency, phase, colour
tint, a second random texture and noise), sizes drawn from --sizes. No
download: everything is made here, deterministic in --seed.

    /usr/bin/python3 bench/make_jpegs.py OUT N [--sizes 256x256,500x375] [--seed 1] [--quality 85] [--procs 2]
"""
import argparse
import io
import math
import os
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image


def make(args):
    out, i, sizes, seed, quality = args
    rng = np.random.default_rng([seed, i])
    w, h = sizes[rng.integers(len(sizes))]
    k = i % 10
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = math.radians(18 * k + rng.normal(0, 3))
    freq = rng.uniform(0.04, 0.12)
    stripes = np.sin((x * math.cos(ang) + y * math.sin(ang)) * freq * 2 * math.pi + rng.uniform(0, 6.3))
    a2 = rng.uniform(0, math.pi)
    texture = np.sin((x * math.cos(a2) + y * math.sin(a2)) * rng.uniform(0.01, 0.05) * 2 * math.pi)
    tint = rng.uniform(0.3, 1.0, 3)
    img = 128 + 70 * stripes[..., None] * tint + 30 * texture[..., None] + rng.normal(0, 3, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    d = os.path.join(out, f"c{k}")
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, "JPEG", quality=quality)
    with open(os.path.join(d, f"{i:07d}.jpg"), "wb") as f:
        f.write(buf.getvalue())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("n", type=int)
    p.add_argument("--sizes", default="256x256,500x375")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quality", type=int, default=85)
    p.add_argument("--procs", type=int, default=os.cpu_count())
    a = p.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    for k in range(10):
        os.makedirs(os.path.join(a.out, f"c{k}"), exist_ok=True)
    with Pool(a.procs) as pool:
        for j, _ in enumerate(pool.imap_unordered(make, ((a.out, i, sizes, a.seed, a.quality) for i in range(a.n)), chunksize=64)):
            if (j + 1) % 10000 == 0:
                print(f"{j + 1} of {a.n}", file=sys.stderr)


if __name__ == "__main__":
    main()
