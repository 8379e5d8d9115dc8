"""``CodebookLinear``: a drop-in ``nn.Linear`` whose weight is a k-means codebook plus indices."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..formats import VersionedFormat, format_tensor
from .format import (
    FORMAT_VERSION,
    check_bits,
    check_index_fields,
    cluster_weight,
    codebook_dense,
    index_words,
    num_groups,
    pack_indices,
    resolve_group_size,
    unpack_indices,
)
from .op import codebook_linear, codebook_linear_q8


class CodebookLinear(VersionedFormat, nn.Module):
    """``y = x @ W.T + b`` with ``W[n, k] = codebook[n // group_size, idx[n, k]]``.

    ``codebook [G, 2**bits]`` is a trainable parameter (fine-tuning moves the centroids, the
    indices stay: Deep Compression's weight sharing); ``indices`` is an int32 buffer of packed
    ``bits``-bit indices (layout in :mod:`sparsekit.codebook.format`). Shapes follow from the
    constructor arguments alone, so a model can be built on ``meta`` and loaded with
    ``load_state_dict(..., assign=True)``.

    ``compute="exact"`` (default): the products use the fp32 centroids and activations.
    ``compute="int8"`` (opt-in, inference): activations quantized to int8 per row and centroids
    per group, exact int32 sums (AMX tiles where the CPU has them); each output is off from the
    exact value by at most :func:`~sparsekit.codebook.reference.codebook_q8_error_bound`. It is a
    run-time choice, not part of the stored format.
    """

    FORMAT_KIND = "codebook_linear"
    FORMAT_FIELDS = ("out_features", "in_features", "bits", "group_size")

    COMPUTE = ("exact", "int8")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 2,
                 group_size: Optional[int] = None, compute: str = "exact", keep_zeros: bool = False,
                 device=None, dtype=None):
        super().__init__()
        self.keep_zeros = bool(keep_zeros)
        if compute not in self.COMPUTE:
            raise ValueError(f"compute must be one of {self.COMPUTE}, got {compute!r}")
        self.compute = compute
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.bits = check_bits(bits)
        self.group_size = resolve_group_size(self.out_features, group_size)
        factory = dict(device=device, dtype=dtype)
        G = num_groups(self.out_features, self.group_size)
        self.codebook = nn.Parameter(torch.zeros(G, 2**self.bits, **factory))
        self.register_buffer("indices", torch.zeros(self.out_features, index_words(self.in_features, self.bits),
                                                    dtype=torch.int32, device=device))
        self.register_buffer("format", format_tensor(self._format_fields(), device=device))
        self.bias = nn.Parameter(torch.zeros(self.out_features, **factory)) if bias else None

    def _format_fields(self) -> list[int]:
        return [FORMAT_VERSION, self.out_features, self.in_features, self.bits, self.group_size]

    @classmethod
    def from_dense(cls, linear: nn.Linear, bits: int = 2, group_size: Optional[int] = None, iters: int = 100,
                   compute: str = "exact", keep_zeros: bool = False) -> "CodebookLinear":
        """k-means of ``linear.weight`` into ``2**bits`` centroids per group of ``group_size``
        output rows (one codebook for the whole weight when None). ``keep_zeros`` (a pruned
        weight): its zeros get centroid 0, held at exactly 0.0 through fine-tuning (its
        gradient is masked), the other weights share the other centroids."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        mod = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, bits=bits,
                  group_size=group_size, compute=compute, keep_zeros=keep_zeros, device=w.device, dtype=w.dtype)
        codebook, idx = cluster_weight(w, bits, mod.group_size, iters, keep_zeros=keep_zeros)
        with torch.no_grad():
            mod.codebook.copy_(codebook)
            mod.indices.copy_(pack_indices(idx, bits))
            if linear.bias is not None:
                mod.bias.copy_(linear.bias)
        return mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, indices = self._parameters, self._buffers["indices"]  # (not __getattr__: see BlockSparseLinear.forward)
        codebook, bias = p["codebook"], p.get("bias")
        if self.compute == "int8":  # inference only: no gradients flow through the quantized path
            if torch.is_grad_enabled():
                if x.requires_grad:
                    raise RuntimeError("compute='int8' is an inference option (no gradients); use compute='exact'")
                codebook, bias = codebook.detach(), None if bias is None else bias.detach()
            return codebook_linear_q8(x, indices, codebook, bias, self.in_features, self.bits, self.group_size)
        if self.keep_zeros and codebook.requires_grad and torch.is_grad_enabled():
            # centroid 0 of every group stays 0.0: a constant zero column in its place gets no gradient
            codebook = nn.functional.pad(codebook[:, 1:], (1, 0))
        return codebook_linear(x, indices, codebook, bias, self.in_features, self.bits, self.group_size)

    def dense_weight(self) -> torch.Tensor:
        """The weight the layer stands for, ``[out_features, in_features]``."""
        return codebook_dense(self.indices, self.codebook.detach(), self.bits, self.in_features, self.group_size)

    @property
    def density(self) -> float:
        """Fraction of the weights not pruned: with ``keep_zeros``, those off the zero centroid
        (centroid 0 of every group); 1.0 without (nothing is pruned)."""
        if not self.keep_zeros:
            return 1.0
        idx = unpack_indices(self.indices, self.bits, self.in_features)
        return int(idx.count_nonzero()) / max(1, idx.numel())

    def _validate_loaded(self, where: str) -> None:
        try:  # 3-bit indices sit in 4-bit fields: none may be >= 8 (see format.check_index_fields)
            check_index_fields(self.indices, self.bits)
        except ValueError as e:
            raise ValueError(f"{where}: corrupted codebook state: {e}") from None

    def _stored_tensors(self) -> list:  # nbytes: packed indices, codebook, bias
        return [self.indices, self.codebook, self.bias]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, bias={self.bias is not None}, compute={self.compute!r}"
                + (", keep_zeros=True" if self.keep_zeros else ""))
