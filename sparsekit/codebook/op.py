"""``sparsekit::codebook_linear`` and its int8 option: schemas, fakes, the Python kernels and
the gradient ops. The native CPU kernels, their checks and the autograd formula (which calls the
gradient ops below) are in ``csrc/codebook/register.cpp``.

``codebook_linear(x, indices, codebook, bias, in_features, bits, group_size)``:
``y = x @ W.T + bias`` with ``W[n, k] = codebook[n // group_size, idx[n, k]]``, ``indices``
the packed int32 index words of :mod:`.format`. Gradients: x (through the dense weight), the
centroids (a centroid's gradient is the sum of its members' weight gradients, as in Deep
Compression) and the bias; the indices are fixed.
"""

from __future__ import annotations

import torch

from .._checks import FLOAT_DTYPES, check_shape, check_tensor
from ..backend import KernelTable, define
from .format import check_bits, codebook_dense, index_words, num_groups, unpack_indices
from .reference import codebook_linear_q8_reference, codebook_linear_reference

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


def _fake(x, indices, codebook, bias, in_features, bits, group_size):  # both ops: [..., N] like x
    check_codebook_linear_args(x, indices, codebook, bias, in_features, bits, group_size)
    return x.new_empty(*x.shape[:-1], indices.shape[0])


_SCHEMA = ("(Tensor x, Tensor indices, Tensor codebook, Tensor? bias, int in_features, int bits, int group_size) "
           "-> Tensor")

# Linear layer on a k-means codebook weight: the product runs on the indices
codebook_linear_kernels = KernelTable("codebook_linear", _SCHEMA, fake=_fake, check=check_codebook_linear_args)
codebook_linear_kernels.register("reference", ("any",))(codebook_linear_reference)
codebook_linear = codebook_linear_kernels.op


def _grad_input(grad, indices, codebook, in_features: int, bits: int, group_size: int):
    """dL/dx ``[rows, in_features]`` = grad ``[..., N]`` times the dense weight."""
    N = indices.shape[0]
    w = codebook_dense(indices, codebook, bits, in_features, group_size).to(grad.dtype)
    return grad.reshape(-1, N) @ w


def _grad_input_fake(grad, indices, codebook, in_features, bits, group_size):
    return grad.new_empty(grad.numel() // max(1, indices.shape[0]) if indices.shape[0] else 0, in_features)


def _grad_codebook(grad, x, indices, codebook, in_features: int, bits: int, group_size: int):
    """dL/dcodebook: dL/dW ``[N, K]`` summed over each centroid's members (as in Deep Compression)."""
    N = indices.shape[0]
    gw = grad.reshape(-1, N).T @ x.reshape(-1, in_features).to(grad.dtype)
    idx = unpack_indices(indices, bits, in_features)
    slot = (torch.arange(N, device=idx.device) // group_size).unsqueeze(1) * 2**bits + idx
    out = torch.zeros(codebook.numel(), dtype=gw.dtype, device=gw.device)
    out.index_add_(0, slot.reshape(-1), gw.reshape(-1))
    return out.view_as(codebook).to(codebook.dtype)


def _grad_codebook_fake(grad, x, indices, codebook, in_features, bits, group_size):
    return torch.empty_like(codebook)


define("codebook_linear_grad_input", "(Tensor grad, Tensor indices, Tensor codebook, int in_features, int bits, "
       "int group_size) -> Tensor", impl=_grad_input, fake=_grad_input_fake)
define("codebook_linear_grad_codebook", "(Tensor grad, Tensor x, Tensor indices, Tensor codebook, int in_features, "
       "int bits, int group_size) -> Tensor", impl=_grad_codebook, fake=_grad_codebook_fake)


# The int8 option (opt-in, never a default): activations quantized per row, centroids per group
# to int8, exact integer sums. Inference only (training uses the exact op). Error bound:
# reference.codebook_q8_error_bound.
codebook_linear_q8_kernels = KernelTable("codebook_linear_q8", _SCHEMA, fake=_fake, check=check_codebook_linear_args)
codebook_linear_q8_kernels.register("reference", ("any",))(codebook_linear_q8_reference)
codebook_linear_q8 = codebook_linear_q8_kernels.op
