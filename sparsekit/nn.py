"""Drop-in ``torch.nn`` modules for compressed formats."""

from .binary.module import BinaryLinear
from .block_sparse.module import BlockSparseLinear

__all__ = ["BinaryLinear", "BlockSparseLinear"]
