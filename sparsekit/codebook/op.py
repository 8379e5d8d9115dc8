"""``sparsekit::codebook_linear``: schema, fake, autograd and dispatch.

``codebook_linear(x, indices, codebook, bias, in_features, bits, group_size)``:
``y = x @ W.T + bias`` with ``W[n, k] = codebook[n // group_size, idx[n, k]]``, ``indices``
the packed int32 index words of :mod:`.format`. Gradients: x (through the dense weight), the
centroids (a centroid's gradient is the sum of its members' weight gradients, as in Deep
Compression) and the bias; the indices are fixed.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._checks import FLOAT_DTYPES, check_shape, check_tensor
from ..backend import KernelTable
from .format import check_bits, codebook_dense, index_words, num_groups, unpack_indices
from .reference import codebook_linear_q8_reference, codebook_linear_reference

codebook_linear_kernels = KernelTable("sparsekit::codebook_linear")
codebook_linear_kernels.register("reference", ("any",))(codebook_linear_reference)


def check_codebook_linear_args(x, indices, codebook, bias, in_features, bits, group_size) -> None:
    check_bits(bits)
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape [..., {in_features}] (in_features), got {list(x.shape)}")
    check_tensor("indices", indices, dtypes=(torch.int32,), dim=2, device=x.device)
    N = indices.shape[0]
    check_shape("indices", indices, (N, index_words(in_features, bits)))
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    check_tensor("codebook", codebook, dtypes=(x.dtype,), dim=2, device=x.device)
    check_shape("codebook", codebook, (num_groups(N, group_size), 2**bits))
    if bias is not None:
        check_tensor("bias", bias, dtypes=(x.dtype,), dim=1, device=x.device)
        check_shape("bias", bias, (N,))


def codebook_linear_impl(x, indices, codebook, bias, in_features: int, bits: int, group_size: int):
    """What the op runs: argument checks, then the kernel the backend switch picks."""
    check_codebook_linear_args(x, indices, codebook, bias, in_features, bits, group_size)
    return codebook_linear_kernels.dispatch(x.device.type, x, indices, codebook, bias, in_features, bits, group_size)


@torch.library.custom_op("sparsekit::codebook_linear", mutates_args=())
def codebook_linear(x: Tensor, indices: Tensor, codebook: Tensor, bias: Optional[Tensor], in_features: int,
                    bits: int, group_size: int) -> Tensor:
    """Linear layer on a k-means codebook weight: the product runs on the indices."""
    return codebook_linear_impl(x, indices, codebook, bias, in_features, bits, group_size)


def _fake(x, indices, codebook, bias, in_features, bits, group_size):  # both ops: [..., N] like x
    check_codebook_linear_args(x, indices, codebook, bias, in_features, bits, group_size)
    return x.new_empty(*x.shape[:-1], indices.shape[0])


codebook_linear.register_fake(_fake)


def _setup_context(ctx, inputs, output):
    x, indices, codebook, bias, in_features, bits, group_size = inputs
    ctx.save_for_backward(x, indices, codebook)
    ctx.meta = (in_features, bits, group_size, bias is not None)


def _backward(ctx, grad):
    x, indices, codebook = ctx.saved_tensors
    in_features, bits, group_size, has_bias = ctx.meta
    N = indices.shape[0]
    g2 = grad.reshape(-1, N)
    x2 = x.reshape(-1, in_features)
    grad_x = grad_codebook = grad_bias = None
    if ctx.needs_input_grad[0]:
        w = codebook_dense(indices, codebook, bits, in_features, group_size).to(grad.dtype)
        grad_x = (g2 @ w).reshape(x.shape)
    if ctx.needs_input_grad[2]:
        gw = g2.T @ x2.to(g2.dtype)  # dL/dW [N, K], then summed per centroid
        idx = unpack_indices(indices, bits, in_features)
        slot = (torch.arange(N, device=idx.device) // group_size).unsqueeze(1) * 2**bits + idx
        grad_codebook = torch.zeros(codebook.numel(), dtype=gw.dtype, device=gw.device)
        grad_codebook.index_add_(0, slot.reshape(-1), gw.reshape(-1))
        grad_codebook = grad_codebook.view_as(codebook).to(codebook.dtype)
    if has_bias and ctx.needs_input_grad[3]:
        grad_bias = g2.sum(dim=0)
    return grad_x, None, grad_codebook, grad_bias, None, None, None


codebook_linear.register_autograd(_backward, setup_context=_setup_context)


# The int8 option (opt-in, never a default): activations quantized per row, centroids per group
# to int8, exact integer sums. Inference only (training uses the exact op). Error bound:
# reference.codebook_q8_error_bound.
codebook_linear_q8_kernels = KernelTable("sparsekit::codebook_linear_q8")
codebook_linear_q8_kernels.register("reference", ("any",))(codebook_linear_q8_reference)


def codebook_linear_q8_impl(x, indices, codebook, bias, in_features: int, bits: int, group_size: int):
    check_codebook_linear_args(x, indices, codebook, bias, in_features, bits, group_size)
    return codebook_linear_q8_kernels.dispatch(x.device.type, x, indices, codebook, bias, in_features, bits,
                                               group_size)


@torch.library.custom_op("sparsekit::codebook_linear_q8", mutates_args=())
def codebook_linear_q8(x: Tensor, indices: Tensor, codebook: Tensor, bias: Optional[Tensor], in_features: int,
                       bits: int, group_size: int) -> Tensor:
    """The int8 option of :func:`codebook_linear` (see :func:`codebook_q8_error_bound`)."""
    return codebook_linear_q8_impl(x, indices, codebook, bias, in_features, bits, group_size)


codebook_linear_q8.register_fake(_fake)
