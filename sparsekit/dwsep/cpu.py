"""The channels_last layout of the pointwise weight the native ``dwsep_conv2d`` kernel
(``csrc/dwsep/kernel.h``) reads.

In channels_last the pointwise product reads the weight transposed, in panels of 64 output
channels ([ceil(C_out / 64), C, 64], :func:`pointwise_panels`). The op makes that copy itself
on each call (in parallel, 16 x 16 blocks); ``DepthwiseSeparableConv2d`` keeps its own copy
between eager calls and passes it in (``pw_panels``), since the copy moves the whole weight
again: a 7 x 7 image with 1024 channels took 1.6x as long with it (AMD EPYC, 2 threads).
"""

from __future__ import annotations

import torch



def pointwise_panels(pw_weight: torch.Tensor) -> torch.Tensor:
    """The channels_last kernel's layout of ``pw_weight [Co, C, 1, 1]``: ``[ceil(Co / 64), C, 64]``,
    panel p holding output channels 64p .. 64p + 63 (zeros past Co) for every input channel."""
    Co, C = pw_weight.shape[:2]
    panels = (Co + 63) // 64
    wt = torch.zeros(panels * 64, C, dtype=torch.float32)
    wt[:Co] = pw_weight.detach().reshape(Co, C)
    return wt.reshape(panels, 64, C).transpose(1, 2).contiguous()
