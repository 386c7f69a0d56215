#!/usr/bin/python3
"""A 1x1 convolution's forward and backward in bfloat16 (y summed against a
fixed gradient, backward to the input and the weight) two ways on the same
libtorch: oneDNN's convolution on an NHWC (channels_last) map, and the same
product as a matrix product over the map's [N*H*W, C] rows (oneDNN's matmul,
AMX where the CPU has it), which is how dimtorch runs bfloat16 1x1
convolutions on the CPU (torch.SetLowPrecision1x1Matmul); float32 for
reference. The shapes are the local MI heads' at batch 64: dcgan32's and
basic28's local maps (128 channels, 8x8 and 7x7) into 256 and 512 units, and
the units-to-units layer.

    /usr/bin/python3 bench/conv_kernels.py --threads 2
"""

import torch
import torch.nn.functional as F

from linear_kernels import bench, parse_args

# (batch, channels in, height = width, channels out)
SHAPES = [(64, 128, 8, 512), (64, 512, 8, 512), (64, 128, 7, 256), (64, 256, 7, 256)]


def main():
    a = parse_args()
    torch.manual_seed(0)
    print(f"1x1 convolution, forward + backward to input and weight, ms ({a.threads} threads, median of 3 runs of {a.repeats})")
    print("| N x C x H x W -> O | float32 convolution | bfloat16 convolution | bfloat16 matmul over NHWC rows | matmul speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for n, c, hw, o in SHAPES:
        times = {}
        for name, dt, mm in (("f32", torch.float32, False), ("conv", torch.bfloat16, False), ("mm", torch.bfloat16, True)):
            x = torch.randn(n, c, hw, hw).to(dt).contiguous(memory_format=torch.channels_last).requires_grad_(True)
            w = (torch.randn(o, c, 1, 1) * c ** -0.5).to(dt).contiguous(memory_format=torch.channels_last).requires_grad_(True)
            g = torch.randn(n, o, hw, hw).to(dt).contiguous(memory_format=torch.channels_last)

            def step():
                if mm:
                    y = F.linear(x.permute(0, 2, 3, 1).reshape(-1, c), w.reshape(o, c)).reshape(n, hw, hw, o).permute(0, 3, 1, 2)
                else:
                    y = F.conv2d(x, w)
                torch.autograd.grad(y, [x, w], g)

            times[name] = sorted(bench(step, a.repeats) for _ in range(3))[1]
        print(f"| {n} x {c} x {hw} x {hw} -> {o} | {times['f32']:.2f} | {times['conv']:.2f} | {times['mm']:.2f} | "
              f"{times['conv'] / times['mm']:.2f}x |")


if __name__ == "__main__":
    main()
