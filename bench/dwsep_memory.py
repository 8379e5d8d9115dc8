"""Peak memory of the fused depthwise-separable convolution against PyTorch's two convolutions.

Each measurement runs in a fresh process: build the block and its input, read the process's
peak resident memory (VmHWM), run the block once, read it again; the difference is the memory
the call needed on top of its inputs and weights (its output, PyTorch's depthwise intermediate,
the kernel's scratch). The issue's four shapes (3 x 3 stride 1, batch 8) in both layouts.
Prints, and writes to ``<out>/dwsep_memory.md``.

    python bench/dwsep_memory.py [OUTDIR]
"""

from __future__ import annotations

import os
import subprocess
import sys

SHAPES = [(32, 64, 112, 112), (128, 128, 56, 56), (256, 256, 28, 28), (512, 512, 14, 14)]
N = 8

CHILD = r"""
import sys, torch
from torch import nn
torch.set_num_threads(2)
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
C, Co, H, W, N, fused, cl = map(int, sys.argv[1:8])
torch.manual_seed(0)
block = nn.Sequential(nn.Conv2d(C, C, 3, 1, 1, groups=C), nn.ReLU6(), nn.Conv2d(C, Co, 1)).eval()
if fused:
    import sparsekit
    block = sparsekit.nn.DepthwiseSeparableConv2d.from_dense(block[0], block[2], act1=block[1])
# made in place in its layout: a freed temporary of the input's size would be reused by the call
x = torch.empty(N, C, H, W, memory_format=torch.channels_last if cl else torch.contiguous_format).normal_()
with torch.no_grad():
    small = torch.randn(1, C, 8, 8)  # loads the kernels (and, for sparsekit, the extension) first
    block(small.contiguous(memory_format=torch.channels_last) if cl else small)
    before = hwm()
    y = block(x)
    print(hwm() - before)
"""


def peak(C, Co, H, W, fused: bool, cl: bool) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, (C, Co, H, W, N, int(fused), int(cl)))],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    outdir = argv[0] if argv else "bench/results"
    os.makedirs(outdir, exist_ok=True)
    mb = 1 << 20
    lines = [f"Peak memory of one call, batch {N}, 3x3 depthwise -> ReLU6 -> 1x1 (extra peak resident memory "
             "over inputs and weights, fresh process per cell):", "",
             "| C_in -> C_out, HxW | layout | output MB | depthwise intermediate MB | PyTorch MB | sparsekit MB |",
             "|---|---|---:|---:|---:|---:|"]
    for C, Co, H, W in SHAPES:
        for cl in (False, True):
            inter, output = N * C * H * W * 4 / mb, N * Co * H * W * 4 / mb
            torch_mb, ours_mb = peak(C, Co, H, W, False, cl) / mb, peak(C, Co, H, W, True, cl) / mb
            lines.append(f"| {C} -> {Co}, {H}x{W} | {'channels_last' if cl else 'NCHW'} | {output:.1f} | "
                         f"{inter:.1f} | {torch_mb:.1f} | {ours_mb:.1f} |")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(outdir, "dwsep_memory.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
