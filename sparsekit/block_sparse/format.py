"""The BSR (block compressed sparse row) weight format.

A weight ``W`` of shape ``(N, K)`` (out_features, in_features) is cut into blocks of
``bh x bw``; only the blocks kept by pruning are stored:

* ``values``       float ``[nnz, bh, bw]``: the stored blocks, row-major inside a block
* ``col_indices``  int32 ``[nnz]``: block column of each stored block, strictly
  increasing within a block row
* ``row_offsets``  int32 ``[ceil(N / bh) + 1]``: blocks of block row ``r`` are
  ``row_offsets[r]:row_offsets[r + 1]``

Dimensions that are not multiples of the block are handled exactly: the last block
row/column is partial, and the part of such a block that lies outside ``W`` is stored
as zeros (and never read into the result). Every constructor validates the indices,
so a kernel never reads out of bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# version of the layout above, as ``BlockSparseLinear``'s state dict records it (the first field of
# its ``format`` record): bump it when the layout changes, so old checkpoints are refused, not misread
FORMAT_VERSION = 1


def _pair(block_size) -> tuple[int, int]:
    if isinstance(block_size, int):
        block_size = (block_size, block_size)
    bh, bw = (int(v) for v in block_size)
    if bh < 1 or bw < 1:
        raise ValueError(f"block_size must be positive, got {(bh, bw)}")
    return bh, bw


def grid_shape(shape: tuple[int, int], block_size: tuple[int, int]) -> tuple[int, int]:
    """Number of block rows and block columns covering ``shape``."""
    return math.ceil(shape[0] / block_size[0]), math.ceil(shape[1] / block_size[1])


def validate_bsr(values, col_indices, row_offsets, shape, block_size) -> None:
    """Raises ValueError/TypeError unless the arrays describe a valid BSR matrix."""
    N, K = shape
    bh, bw = block_size
    Nb, Kb = grid_shape(shape, block_size)
    if not isinstance(values, torch.Tensor) or values.dim() != 3 or tuple(values.shape[1:]) != (bh, bw):
        raise ValueError(f"values must have shape [nnz, {bh}, {bw}], got {getattr(values, 'shape', None)}")
    if not values.is_floating_point():
        raise TypeError(f"values must be a floating tensor, got {values.dtype}")
    for name, t, n in (("col_indices", col_indices, values.shape[0]), ("row_offsets", row_offsets, Nb + 1)):
        if t.dtype != torch.int32:
            raise TypeError(f"{name} must be int32, got {t.dtype}")
        if t.dim() != 1 or t.shape[0] != n:
            raise ValueError(f"{name} must have shape [{n}], got {list(t.shape)}")
        if t.device != values.device:
            raise ValueError(f"{name} is on {t.device} but values is on {values.device}")
    if values.device.type == "meta":
        return
    ro = row_offsets.to("cpu", torch.int64)
    ci = col_indices.to("cpu", torch.int64)
    nnz = values.shape[0]
    if ro[0] != 0 or ro[-1] != nnz:
        raise ValueError(f"row_offsets must start at 0 and end at nnz={nnz}, got {ro[0]} .. {ro[-1]}")
    counts = ro[1:] - ro[:-1]
    if bool((counts < 0).any()):
        raise ValueError("row_offsets must be non-decreasing")
    if nnz and bool(((ci < 0) | (ci >= Kb)).any()):
        bad = int(ci[(ci < 0) | (ci >= Kb)][0])
        raise ValueError(f"col_indices must lie in [0, {Kb}), found {bad}")
    if nnz > 1:
        # strictly increasing inside each block row: a decrease is only allowed where a new row starts
        rows = torch.repeat_interleave(torch.arange(Nb), counts)
        same_row = rows[1:] == rows[:-1]
        if bool((same_row & (ci[1:] <= ci[:-1])).any()):
            raise ValueError("col_indices must be strictly increasing within each block row (no duplicates)")


def block_rows(row_offsets: torch.Tensor, nnz: int) -> torch.Tensor:
    """Block-row index of every stored block (static output size, so it traces)."""
    nb = row_offsets.shape[0] - 1
    counts = (row_offsets[1:] - row_offsets[:-1]).long()
    return torch.repeat_interleave(
        torch.arange(nb, device=row_offsets.device), counts, output_size=nnz
    )


def block_norms(weight: torch.Tensor, block_size, norm: str = "l1") -> torch.Tensor:
    """Per-block L1 or L2 norm of a dense 2-D weight, shape ``[Nb, Kb]`` (partial blocks padded with 0)."""
    bh, bw = _pair(block_size)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D, got shape {list(weight.shape)}")
    N, K = weight.shape
    Nb, Kb = grid_shape((N, K), (bh, bw))
    w = torch.nn.functional.pad(weight.detach().float(), (0, Kb * bw - K, 0, Nb * bh - N))
    blocks = w.reshape(Nb, bh, Kb, bw).abs()
    if norm == "l1":
        return blocks.sum(dim=(1, 3))
    if norm == "l2":
        return blocks.square().sum(dim=(1, 3)).sqrt()
    raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")


def topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask keeping the ``round((1 - sparsity) * numel)`` largest scores (ties broken by position)."""
    if not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    keep = int(round((1.0 - float(sparsity)) * scores.numel()))
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if keep > 0:
        idx = torch.argsort(scores.flatten(), descending=True, stable=True)[:keep]
        mask[idx] = True
    return mask.view_as(scores)


@dataclass(frozen=True)
class BSRWeight:
    """A validated block-sparse weight. Build with :meth:`from_dense`; :meth:`dense_weight` is the inverse."""

    values: torch.Tensor
    col_indices: torch.Tensor
    row_offsets: torch.Tensor
    shape: tuple[int, int]
    block_size: tuple[int, int]

    def __post_init__(self):
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        object.__setattr__(self, "block_size", _pair(self.block_size))
        validate_bsr(self.values, self.col_indices, self.row_offsets, self.shape, self.block_size)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dense(
        cls,
        weight: torch.Tensor,
        block_size=32,
        sparsity: float | None = None,
        mask: torch.Tensor | None = None,
        norm: str = "l1",
    ) -> "BSRWeight":
        """Packs ``weight`` keeping either the blocks of largest norm (``sparsity`` = fraction of
        blocks removed) or the blocks where ``mask`` (shape ``[Nb, Kb]``) is true."""
        bh, bw = _pair(block_size)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ValueError(f"weight must be a 2-D tensor, got {getattr(weight, 'shape', type(weight))}")
        if not weight.is_floating_point():
            raise TypeError(f"weight must be floating point, got {weight.dtype}")
        N, K = weight.shape
        Nb, Kb = grid_shape((N, K), (bh, bw))
        if (sparsity is None) == (mask is None):
            raise ValueError("give exactly one of sparsity= or mask=")
        if mask is None:
            mask = topk_mask(block_norms(weight, (bh, bw), norm), sparsity)
        else:
            if mask.dtype != torch.bool or tuple(mask.shape) != (Nb, Kb):
                raise ValueError(f"mask must be a bool tensor of shape [{Nb}, {Kb}], got {mask.dtype} {list(mask.shape)}")
            mask = mask.to(weight.device)
        w = torch.nn.functional.pad(weight.detach(), (0, Kb * bw - K, 0, Nb * bh - N))
        blocks = w.reshape(Nb, bh, Kb, bw).permute(0, 2, 1, 3)  # [Nb, Kb, bh, bw]
        rows, cols = mask.nonzero(as_tuple=True)  # row-major order: sorted by row, then column
        values = blocks[rows, cols].contiguous()
        counts = mask.sum(dim=1)
        row_offsets = torch.zeros(Nb + 1, dtype=torch.int32, device=weight.device)
        row_offsets[1:] = counts.cumsum(0).to(torch.int32)
        return cls(values, cols.to(torch.int32), row_offsets, (N, K), (bh, bw))

    # ---------------------------------------------------------------- views
    @property
    def nnz_blocks(self) -> int:
        return int(self.values.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        return grid_shape(self.shape, self.block_size)

    @property
    def density(self) -> float:
        """Fraction of blocks stored."""
        Nb, Kb = self.grid
        return self.nnz_blocks / max(1, Nb * Kb)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.values, self.col_indices, self.row_offsets))

    def block_mask(self) -> torch.Tensor:
        Nb, Kb = self.grid
        mask = torch.zeros(Nb, Kb, dtype=torch.bool, device=self.values.device)
        mask[block_rows(self.row_offsets, self.nnz_blocks), self.col_indices.long()] = True
        return mask

    def dense_weight(self) -> torch.Tensor:
        """The dense ``[N, K]`` weight (zeros where no block is stored)."""
        return bsr_to_dense(self.values, self.col_indices, self.row_offsets, self.shape)


def bsr_to_dense(values, col_indices, row_offsets, shape) -> torch.Tensor:
    """Dense ``[N, K]`` matrix of a BSR weight (zeros where no block is stored)."""
    N, K = shape
    nnz, bh, bw = values.shape
    Nb, Kb = grid_shape((N, K), (bh, bw))
    dense = values.new_zeros(Nb, Kb, bh, bw)
    dense[block_rows(row_offsets, nnz), col_indices.long()] = values
    return dense.permute(0, 2, 1, 3).reshape(Nb * bh, Kb * bw)[:N, :K]
