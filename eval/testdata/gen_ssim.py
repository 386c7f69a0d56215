#!/usr/bin/python3
"""Reference SSIM and MS-SSIM values for dimtorch's eval tests.

SSIM: scikit-image's structural_similarity (Gaussian weights, sigma 1.5,
11-pixel window, population covariance, data range 2), computed per image.
MS-SSIM: an independent NumPy/SciPy implementation of Wang et al. (2003)
(Gaussian filtering with scipy.ndimage on the valid region, 2x2 average
pooling between scales, the published weights renormalised over the scales
used). Needs Debian's python3-skimage and python3-scipy:
    /usr/bin/python3 eval/testdata/gen_ssim.py > eval/testdata/ssim.json
"""
import json

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

rng = np.random.default_rng(3)
W = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]


def smooth(img):
    # sigma 1.5 truncated at 3.5 sigma: an 11-tap window; keep valid positions.
    f = gaussian_filter(img, 1.5, truncate=3.5, mode="constant")
    return f[5:-5, 5:-5]


def terms(x, y, data_range=2.0):
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = smooth(x), smooth(y)
    sxx = smooth(x * x) - mx * mx
    syy = smooth(y * y) - my * my
    sxy = smooth(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return (lum * cs).mean(), cs.mean()


def pool(img):
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    return img[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def msssim(x, y, scales):
    w = np.array(W[:scales]) / sum(W[:scales])
    v = 1.0
    for i in range(scales):
        s, cs = terms(x, y)
        t = s if i == scales - 1 else cs
        v *= max(t, 1e-8) ** w[i]
        x, y = pool(x), pool(y)
    return v


cases = []
for h, w, noise in [(24, 24, 0.1), (30, 26, 0.5), (48, 48, 0.3)]:
    x = np.clip(rng.standard_normal((h, w)) * 0.5, -1, 1)
    # Smooth structure so that the images are not pure noise.
    x = np.clip(gaussian_filter(x, 1.0) * 2, -1, 1)
    y = np.clip(x + rng.standard_normal((h, w)) * noise, -1, 1)
    ssim = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=2.0, win_size=11)
    scales = 1
    while scales < 5 and h // 2 ** scales >= 11 and w // 2 ** scales >= 11:
        scales += 1
    cases.append({"h": h, "w": w, "x": x.flatten().tolist(), "y": y.flatten().tolist(),
                  "ssim": float(ssim), "scales": scales, "msssim": float(msssim(x, y, scales))})
json.dump({"cases": cases}, __import__("sys").stdout)
