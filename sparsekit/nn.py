"""Drop-in ``torch.nn`` modules for compressed formats."""

from .binary.module import BinaryConv2d, BinaryLinear
from .block_sparse.module import BlockSparseLinear

__all__ = ["BinaryConv2d", "BinaryLinear", "BlockSparseLinear"]
