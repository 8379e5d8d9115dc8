"""Drop-in ``torch.nn`` modules for compressed formats."""

from .block_sparse.module import BlockSparseLinear

__all__ = ["BlockSparseLinear"]
