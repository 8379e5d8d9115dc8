"""``BlockSparseLinear``: a drop-in ``nn.Linear`` whose weight is stored in BSR form."""

from __future__ import annotations

import torch
from torch import nn

from ..formats import VersionedFormat, format_tensor
from .format import FORMAT_VERSION, BSRWeight, _pair, block_rows, grid_shape, validate_bsr
from .op import bsr_linear


class BlockSparseLinear(VersionedFormat, nn.Module):
    """``y = x @ W.T + b`` with ``W`` block-sparse.

    Buffer shapes follow from the constructor arguments alone, so a model can be built
    on the ``meta`` device and filled with ``load_state_dict(..., assign=True)``.
    ``values`` is a trainable parameter (gradients only for stored blocks); the index
    tensors are buffers, validated whenever a state dict is loaded.
    """

    FORMAT_KIND = "bsr"
    FORMAT_FIELDS = ("out_features", "in_features", "block_h", "block_w", "nnz_blocks")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        block_size=32,
        nnz_blocks: int = 0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        bh, bw = _pair(block_size)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.block_size = (bh, bw)
        Nb, Kb = grid_shape((self.out_features, self.in_features), self.block_size)
        if not 0 <= nnz_blocks <= Nb * Kb:
            raise ValueError(f"nnz_blocks must be in [0, {Nb * Kb}], got {nnz_blocks}")
        factory = dict(device=device, dtype=dtype)
        self.values = nn.Parameter(torch.zeros(nnz_blocks, bh, bw, **factory))
        self.register_buffer("col_indices", torch.zeros(nnz_blocks, dtype=torch.int32, device=device))
        offsets = torch.zeros(Nb + 1, dtype=torch.int32, device=device)
        if offsets.device.type != "meta":
            offsets[Nb] = nnz_blocks  # a valid (if odd) structure until real data is loaded
            if Nb > 0 and nnz_blocks > 0:
                # place the blocks column by column in the first rows, so the module is valid as built
                k = torch.arange(nnz_blocks)
                offsets[1:] = torch.bincount(k // max(1, Kb), minlength=Nb)[:Nb].cumsum(0).to(torch.int32)
                self.col_indices.copy_((k % max(1, Kb)).to(torch.int32))
        self.register_buffer("row_offsets", offsets)
        self.register_buffer("format", format_tensor(self._format_fields(), device=device))
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.out_features, **factory))
        else:
            self.register_parameter("bias", None)

    def _format_fields(self) -> list[int]:
        bh, bw = self.block_size
        return [FORMAT_VERSION, self.out_features, self.in_features, bh, bw, self.nnz_blocks]

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_bsr(cls, weight: BSRWeight, bias: torch.Tensor | None = None) -> "BlockSparseLinear":
        N, K = weight.shape
        mod = cls(K, N, bias=bias is not None, block_size=weight.block_size, nnz_blocks=weight.nnz_blocks,
                  device="meta", dtype=weight.values.dtype)
        state = {
            "values": weight.values.detach().clone(),
            "col_indices": weight.col_indices.clone(),
            "row_offsets": weight.row_offsets.clone(),
            "format": format_tensor(mod._format_fields(), device=weight.values.device),
        }
        if bias is not None:
            state["bias"] = bias.detach().clone()
        mod.load_state_dict(state, assign=True)
        return mod

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        block_size=32,
        sparsity: float | None = None,
        mask: torch.Tensor | None = None,
        norm: str = "l1",
    ) -> "BlockSparseLinear":
        """Prunes ``linear.weight`` to blocks (by block norm to ``sparsity``, or by a block ``mask``
        of shape ``[ceil(out/bh), ceil(in/bw)]``) and returns the block-sparse layer."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        if sparsity is None and mask is None:
            sparsity = 0.9
        w = BSRWeight.from_dense(linear.weight.detach(), block_size, sparsity=sparsity, mask=mask, norm=norm)
        return cls.from_bsr(w, linear.bias)

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the tensors straight from the module's dicts: nn.Module.__getattr__ costs about 0.7 us a
        # name, as much as the whole product of a small layer (see bench/test_overhead.py)
        p, b = self._parameters, self._buffers
        return bsr_linear(x, p["values"], b["col_indices"], b["row_offsets"], p.get("bias"), self.out_features,
                          self.in_features)

    # ---------------------------------------------------------------- views
    def bsr(self) -> BSRWeight:
        return BSRWeight(self.values.detach(), self.col_indices, self.row_offsets,
                         (self.out_features, self.in_features), self.block_size)

    def dense_weight(self) -> torch.Tensor:
        """The weight the layer stands for, ``[out_features, in_features]`` (zeros outside the stored blocks)."""
        return self.bsr().dense_weight()

    @property
    def nnz_blocks(self) -> int:
        return int(self.values.shape[0])

    @property
    def density(self) -> float:
        """Fraction of the weight's blocks that are stored."""
        Nb, Kb = grid_shape((self.out_features, self.in_features), self.block_size)
        return self.nnz_blocks / max(1, Nb * Kb)

    def _stored_tensors(self) -> list:  # nbytes: values, indices and bias
        return [self.values, self.col_indices, self.row_offsets, self.bias]

    @property
    def dense_nbytes(self) -> int:
        """Bytes the same layer takes as a dense nn.Linear of this dtype."""
        n = self.out_features * self.in_features + (self.out_features if self.bias is not None else 0)
        return n * self.values.element_size()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"block_size={self.block_size}, density={self.density:.3f}, bias={self.bias is not None}")

    # ---------------------------------------------------------------- state dict
    def _validate_loaded(self, where: str) -> None:
        try:
            validate_bsr(self.values, self.col_indices, self.row_offsets,
                         (self.out_features, self.in_features), self.block_size)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: corrupted block-sparse state: {exc}") from exc

def prune_block_sparse(module: BlockSparseLinear, sparsity: float, norm: str = "l1") -> BlockSparseLinear:
    """A new layer that keeps, of ``module``'s stored blocks, those of largest norm so that
    ``sparsity`` of all the weight's blocks are removed (the next step of an iterative schedule)."""
    Nb, Kb = grid_shape((module.out_features, module.in_features), module.block_size)
    keep = int(round((1.0 - float(sparsity)) * Nb * Kb))
    if keep > module.nnz_blocks:
        raise ValueError(f"sparsity {sparsity} keeps {keep} blocks but only {module.nnz_blocks} are stored")
    w = module.bsr()
    dims = (1, 2)
    v = w.values.detach().float().abs()
    scores = v.sum(dims) if norm == "l1" else v.square().sum(dims).sqrt()
    order = torch.argsort(scores, descending=True, stable=True)[:keep]
    kept = torch.zeros(module.nnz_blocks, dtype=torch.bool, device=scores.device)
    kept[order] = True
    mask = torch.zeros(Nb, Kb, dtype=torch.bool, device=scores.device)
    rows = block_rows(w.row_offsets, w.nnz_blocks)
    mask[rows[kept], w.col_indices.long()[kept]] = True
    pruned = BSRWeight.from_dense(w.dense_weight(), module.block_size, mask=mask)
    return BlockSparseLinear.from_bsr(pruned, module.bias)
