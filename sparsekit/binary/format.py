"""Bit-packed sign format for binary (+-1) tensors.

Packing runs along the last dimension K: element ``k`` of a row goes to word ``k // 64``,
bit ``k % 64`` (least significant bit first). A set bit means +1 (the value was >= 0, so
sign(0) = +1), a clear bit -1. Words are stored as int64 (the bit pattern of a uint64).
When K is not a multiple of 64 the last word is padded with zero bits; the XNOR dot product
``K - 2 * popcount(a ^ b)`` masks the padding bits of the last word, so results equal the
+-1 reference exactly whatever the padding holds.
"""

from __future__ import annotations

import functools

import torch

from .._conv import conv_output_size

# version of the packing above, as the binary modules' state dicts record it (the first field of
# their ``format`` record): bump it when the packing changes, so old checkpoints are refused, not misread
FORMAT_VERSION = 1

WORD_BITS = 64


def packed_words(K: int) -> int:
    """Words per packed row of K signs."""
    return (int(K) + WORD_BITS - 1) // WORD_BITS


def _bit_weights(device) -> torch.Tensor:
    w = torch.ones(WORD_BITS, dtype=torch.int64, device=device) << torch.arange(WORD_BITS, device=device)
    return w  # bit 63 wraps to the sign bit: the int64 pattern of 1 << 63


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """``[..., K]`` floats -> ``[..., ceil(K/64)]`` int64 words (bit 1 where x >= 0)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError(f"x must be a tensor with at least one dimension, got {getattr(x, 'shape', type(x))}")
    if not (x.is_floating_point() or x.dtype == torch.bool):
        raise TypeError(f"x must be floating point (or bool), got {x.dtype}")
    K = x.shape[-1]
    W = packed_words(K)
    bits = (x >= 0) if x.dtype != torch.bool else x
    bits = torch.nn.functional.pad(bits.to(torch.int64), (0, W * WORD_BITS - K))
    bits = bits.reshape(*x.shape[:-1], W, WORD_BITS)
    # distinct powers of two never carry, so the int64 sum is the bitwise OR
    return (bits * _bit_weights(x.device)).sum(dim=-1)


@functools.lru_cache(maxsize=64)
def valid_bits(K: int, device=None) -> torch.Tensor:
    """``[packed_words(K)]`` int64: the bits of a packed row that hold its K elements (every bit
    but the padding of the last word). A constant of K, made once per (K, device): read only."""
    mask = torch.full((packed_words(K),), -1, dtype=torch.int64, device=device)
    if K % WORD_BITS:
        mask[-1] = (1 << (K % WORD_BITS)) - 1
    return mask


def clear_padding_bits(words: torch.Tensor, K: int) -> torch.Tensor:
    """``words [..., packed_words(K)]`` with the padding bits of each last word cleared (the same
    tensor when K leaves no padding). The reference drops them; a kernel that counts every bit
    of a row gets the same result from the cleared words."""
    return words if K % WORD_BITS == 0 else words & valid_bits(K, words.device)


def check_padding_bits(words: torch.Tensor, K: int, where: str) -> None:
    """ValueError if a padding bit of ``words [..., packed_words(K)]`` is set: the format keeps
    them zero (:func:`pack_signs`), so a set one means a corrupted or foreign packed tensor."""
    if K % WORD_BITS and words.device.type != "meta" and bool((words[..., -1] & ~valid_bits(K, words.device)[-1]).any()):
        raise ValueError(f"{where}: padding bits past element {K} of a packed row are set (the packed format keeps "
                         "them zero: corrupted or foreign data)")


def unpack_signs(words: torch.Tensor, K: int, dtype=torch.float32) -> torch.Tensor:
    """``[..., W]`` int64 words -> ``[..., K]`` of +-1 (padding bits dropped)."""
    if words.dtype != torch.int64:
        raise TypeError(f"words must be int64, got {words.dtype}")
    if words.shape[-1] != packed_words(K):
        raise ValueError(f"words must have {packed_words(K)} words per row for K={K}, got {words.shape[-1]}")
    shifts = torch.arange(WORD_BITS, device=words.device)
    bits = (words.unsqueeze(-1) >> shifts) & 1
    bits = bits.reshape(*words.shape[:-1], words.shape[-1] * WORD_BITS)[..., :K]
    return (bits * 2 - 1).to(dtype)


CONV_ROW_ALIGN = 8  # words: a convolution row is padded to whole 512-bit vectors


def conv_row_words(in_channels: int, kh: int, kw: int) -> int:
    """Words per packed convolution row: kh * kw groups of ceil(C_in / 64) words, then zero
    words up to a multiple of 8 (so the XNOR kernel runs whole vectors, no scalar tail)."""
    w = kh * kw * packed_words(in_channels)
    return -(-w // CONV_ROW_ALIGN) * CONV_ROW_ALIGN


def pack_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[C_out, C_in, kh, kw]`` -> ``[C_out, kh * kw * ceil(C_in / 64)]`` int64: for each kernel
    position (row-major over kh, kw) the signs of its C_in input channels, packed as one group
    with zero padding bits. The kernels extend each row with zero words to
    :func:`conv_row_words` (the layout of :func:`im2col_words`); every padding bit is zero in
    the weights and in the activations, so no padding ever counts."""
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape [C_out, C_in, kh, kw], got {list(weight.shape)}")
    return pack_signs(weight.permute(0, 2, 3, 1)).reshape(weight.shape[0], -1)


def pad_conv_rows(rows: torch.Tensor, in_channels: int, kh: int, kw: int) -> torch.Tensor:
    """Packed convolution rows extended with zero words to :func:`conv_row_words`."""
    return torch.nn.functional.pad(rows, (0, conv_row_words(in_channels, kh, kw) - rows.shape[1]))


def pad_word_row(C: int, device=None) -> torch.Tensor:
    """Packed signs of one padding pixel: C channels of value 0, i.e. +1 (zero padding bits)."""
    return pack_signs(torch.zeros(1, C, device=device))[0]


def im2col_words(xw: torch.Tensor, C: int, kernel_size, stride, padding, dilation) -> torch.Tensor:
    """Word im2col. ``xw`` ``[N, H, W, Wc]``: the packed channels of every pixel (channels last).
    Returns ``[N * OH * OW, conv_row_words(C, kh, kw)]``: for each output pixel, the words of its
    receptive field in kernel order, then zero words; pixels outside the input are
    zero-padding pixels (+1, see :func:`pad_word_row`)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    N, H, W, Wc = xw.shape
    OH, OW = conv_output_size(H, W, kernel_size, stride, padding, dilation)
    padded = pad_word_row(C, xw.device).expand(N, H + 2 * ph, W + 2 * pw, Wc).clone()
    padded[:, ph : ph + H, pw : pw + W] = xw
    cols = [
        padded[:, i * dh : i * dh + (OH - 1) * sh + 1 : sh, j * dw : j * dw + (OW - 1) * sw + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    rows = torch.stack(cols, dim=3).reshape(N * OH * OW, kh * kw * Wc)
    return pad_conv_rows(rows, C, kh, kw), (OH, OW)
