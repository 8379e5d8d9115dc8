"""Block-sparse (BSR) linear layers: structured pruning in blocks that really runs faster."""

from . import triton as _triton  # noqa: F401  (registers the Triton kernel)
from .config import BlockSparseConfig
from .format import FORMAT_VERSION, BSRWeight, block_norms, bsr_to_dense, topk_mask, validate_bsr
from .module import BlockSparseLinear
from .op import bsr_linear, bsr_linear_kernels
from .reference import bsr_linear_reference, bsr_sddmm_reference, bsr_transpose_reference

__all__ = [
    "BSRWeight",
    "BlockSparseConfig",
    "BlockSparseLinear",
    "FORMAT_VERSION",
    "block_norms",
    "bsr_linear",
    "bsr_linear_kernels",
    "bsr_linear_reference",
    "bsr_sddmm_reference",
    "bsr_to_dense",
    "bsr_transpose_reference",
    "topk_mask",
    "validate_bsr",
]
