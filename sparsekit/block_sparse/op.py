"""``sparsekit::bsr_linear`` and its helper ops: schemas, fakes, autograd, dispatch.

``bsr_linear(x, values, col_indices, row_offsets, bias, out_features, in_features)``
computes ``x @ W.T + bias`` for ``x`` of any leading shape and ``W`` in BSR form
(see :mod:`.format`). The kernel that runs is chosen by :mod:`sparsekit.backend`.

Autograd: ``grad_x`` is the block-sparse product with ``W.T`` (``bsr_transpose`` then
``bsr_linear``), ``grad_values`` is computed only for the stored blocks
(``bsr_sddmm``), so pruned models fine-tune in the sparse format.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._checks import FLOAT_DTYPES, check_shape, check_tensor
from ..backend import KernelTable
from .format import grid_shape
from .reference import bsr_linear_reference, bsr_sddmm_reference, bsr_transpose_reference

bsr_linear_kernels = KernelTable("sparsekit::bsr_linear")
bsr_linear_kernels.register("reference", ("any",))(bsr_linear_reference)


def check_bsr_linear_args(x, values, col_indices, row_offsets, bias, out_features, in_features) -> None:
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    check_tensor("values", values, dtypes=FLOAT_DTYPES, dim=3, device=x.device)
    check_tensor("col_indices", col_indices, dtypes=(torch.int32,), dim=1, device=x.device)
    check_tensor("row_offsets", row_offsets, dtypes=(torch.int32,), dim=1, device=x.device)
    if values.dtype != x.dtype:
        raise TypeError(f"values must have the dtype of x ({x.dtype}), got {values.dtype}")
    if out_features < 0 or in_features < 0:
        raise ValueError(f"out_features and in_features must be >= 0, got {out_features}, {in_features}")
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape [..., {in_features}] (in_features), got {list(x.shape)}")
    nnz, bh, bw = values.shape
    Nb, _ = grid_shape((out_features, in_features), (bh, bw))
    check_shape("col_indices", col_indices, (nnz,))
    check_shape("row_offsets", row_offsets, (Nb + 1,))
    if bias is not None:
        check_tensor("bias", bias, dtypes=(x.dtype,), dim=1, device=x.device)
        check_shape("bias", bias, (out_features,))


def bsr_linear_impl(x, values, col_indices, row_offsets, bias, out_features: int, in_features: int):
    """What the op runs: argument checks, then the kernel the backend switch picks."""
    check_bsr_linear_args(x, values, col_indices, row_offsets, bias, out_features, in_features)
    return bsr_linear_kernels.dispatch(
        x.device.type, x, values, col_indices, row_offsets, bias, out_features, in_features
    )


@torch.library.custom_op("sparsekit::bsr_linear", mutates_args=())
def bsr_linear(
    x: Tensor,
    values: Tensor,
    col_indices: Tensor,
    row_offsets: Tensor,
    bias: Optional[Tensor],
    out_features: int,
    in_features: int,
) -> Tensor:
    return bsr_linear_impl(x, values, col_indices, row_offsets, bias, out_features, in_features)


@bsr_linear.register_fake
def _(x, values, col_indices, row_offsets, bias, out_features, in_features):
    check_bsr_linear_args(x, values, col_indices, row_offsets, bias, out_features, in_features)
    return x.new_empty(*x.shape[:-1], out_features)


@torch.library.custom_op("sparsekit::bsr_sddmm", mutates_args=())
def bsr_sddmm(grad_out: Tensor, x: Tensor, col_indices: Tensor, row_offsets: Tensor, bh: int, bw: int) -> Tensor:
    """``[nnz, bh, bw]``: for each stored block (r, c), ``grad_out[:, r-block].T @ x[:, c-block]``."""
    return bsr_sddmm_reference(grad_out, x, col_indices, row_offsets, bh, bw)


@bsr_sddmm.register_fake
def _(grad_out, x, col_indices, row_offsets, bh, bw):
    return grad_out.new_empty(col_indices.shape[0], bh, bw)


@torch.library.custom_op("sparsekit::bsr_transpose", mutates_args=())
def bsr_transpose(
    values: Tensor, col_indices: Tensor, row_offsets: Tensor, out_features: int, in_features: int
) -> tuple[Tensor, Tensor, Tensor]:
    """BSR arrays of ``W.T`` (shape ``[in_features, out_features]``, blocks ``bw x bh``)."""
    return bsr_transpose_reference(values, col_indices, row_offsets, out_features, in_features)


@bsr_transpose.register_fake
def _(values, col_indices, row_offsets, out_features, in_features):
    nnz, bh, bw = values.shape
    _, Kb = grid_shape((out_features, in_features), (bh, bw))
    return (
        values.new_empty(nnz, bw, bh),
        col_indices.new_empty(nnz),
        row_offsets.new_empty(Kb + 1),
    )


def _setup_context(ctx, inputs, output):
    x, values, col_indices, row_offsets, bias, out_features, in_features = inputs
    ctx.save_for_backward(x, values, col_indices, row_offsets)
    ctx.shape = (out_features, in_features)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out):
    x, values, col_indices, row_offsets = ctx.saved_tensors
    N, K = ctx.shape
    _, bh, bw = values.shape
    g2 = grad_out.reshape(-1, N)
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        vt, ct, rt = torch.ops.sparsekit.bsr_transpose(values, col_indices, row_offsets, N, K)
        grad_x = torch.ops.sparsekit.bsr_linear(grad_out, vt, ct, rt, None, K, N)
    if ctx.needs_input_grad[1]:
        grad_values = torch.ops.sparsekit.bsr_sddmm(g2, x.reshape(-1, K), col_indices, row_offsets, bh, bw)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        grad_bias = g2.sum(0)
    return grad_x, grad_values, None, None, grad_bias, None, None


bsr_linear.register_autograd(_backward, setup_context=_setup_context)
