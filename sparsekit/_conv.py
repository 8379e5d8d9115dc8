"""Convolution geometry shared by the convolution ops (binary and depthwise-separable)."""

from __future__ import annotations

import torch


def pair(v) -> tuple[int, int]:
    """An int or a pair of ints as a pair of ints (kernel size, stride, padding, dilation)."""
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_output_size(H: int, W: int, kernel_size, stride, padding, dilation) -> tuple[int, int]:
    """(OH, OW) of a convolution over an H x W input (per-axis pairs; zero padding)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    return (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether x's memory is channels_last and not also plain contiguous (as with C = 1 or 1 x 1
    images, where both layouts are the same memory)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
