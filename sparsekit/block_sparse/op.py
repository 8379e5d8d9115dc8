"""``sparsekit::bsr_linear`` and its helper ops: schemas, fakes and the Python kernels.

``bsr_linear(x, values, col_indices, row_offsets, bias, out_features, in_features)``
computes ``x @ W.T + bias`` for ``x`` of any leading shape and ``W`` in BSR form
(see :mod:`.format`). On the CPU the native kernel (``csrc/block_sparse/register.cpp``)
checks the arguments and runs float32; other dtypes, and every call under a forced backend,
run the kernel :mod:`sparsekit.backend` picks from the table below (reference, Triton).

Autograd (registered from C++): ``grad_x`` is the block-sparse product with ``W.T``
(``bsr_transpose`` then ``bsr_linear``), ``grad_values`` is computed only for the stored blocks
(``bsr_sddmm``), so pruned models fine-tune in the sparse format.
"""

from __future__ import annotations

import torch

from .._checks import FLOAT_DTYPES, check_shape, check_tensor
from ..backend import KernelTable, define
from .format import grid_shape
from .reference import bsr_linear_reference, bsr_sddmm_reference, bsr_transpose_reference


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


def _fake(x, values, col_indices, row_offsets, bias, out_features, in_features):
    check_bsr_linear_args(x, values, col_indices, row_offsets, bias, out_features, in_features)
    return x.new_empty(*x.shape[:-1], out_features)


bsr_linear_kernels = KernelTable(
    "bsr_linear",
    "(Tensor x, Tensor values, Tensor col_indices, Tensor row_offsets, Tensor? bias, int out_features, "
    "int in_features) -> Tensor",
    fake=_fake,
    check=check_bsr_linear_args,
)
bsr_linear_kernels.register("reference", ("any",))(bsr_linear_reference)
bsr_linear = bsr_linear_kernels.op


def _sddmm_fake(grad_out, x, col_indices, row_offsets, bh, bw):
    return grad_out.new_empty(col_indices.shape[0], bh, bw)


# [nnz, bh, bw]: for each stored block (r, c), grad_out[:, r-block].T @ x[:, c-block]
define("bsr_sddmm", "(Tensor grad_out, Tensor x, Tensor col_indices, Tensor row_offsets, int bh, int bw) -> Tensor",
       impl=bsr_sddmm_reference, fake=_sddmm_fake)


def _transpose_fake(values, col_indices, row_offsets, out_features, in_features):
    nnz, bh, bw = values.shape
    _, Kb = grid_shape((out_features, in_features), (bh, bw))
    return values.new_empty(nnz, bw, bh), col_indices.new_empty(nnz), row_offsets.new_empty(Kb + 1)


# the BSR arrays of W.T ([in_features, out_features], blocks bw x bh)
define("bsr_transpose", "(Tensor values, Tensor col_indices, Tensor row_offsets, int out_features, "
       "int in_features) -> (Tensor, Tensor, Tensor)", impl=bsr_transpose_reference, fake=_transpose_fake)
