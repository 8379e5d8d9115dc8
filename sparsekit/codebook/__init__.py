"""Weight clustering: k-means codebooks of 1-4 bit indices and the matmul that runs on them."""

from . import triton as _triton  # noqa: F401  (registers the Triton kernel where Triton runs)
from .config import CodebookConfig
from .format import (
    FORMAT_VERSION,
    SUPPORTED_BITS,
    cluster_weight,
    codebook_dense,
    field_bits,
    index_words,
    kmeans_1d,
    pack_indices,
    sqnr_db,
    unpack_indices,
)
from .module import CodebookLinear
from .op import (
    codebook_linear,
    codebook_linear_kernels,
    codebook_linear_q8,
    codebook_linear_q8_kernels,
)
from .reference import (
    codebook_linear_q8_reference,
    codebook_linear_reference,
    codebook_q8_error_bound,
    quantize_codebook_q8,
    quantize_rows_q8,
)

__all__ = [
    "CodebookConfig",
    "CodebookLinear",
    "FORMAT_VERSION",
    "SUPPORTED_BITS",
    "cluster_weight",
    "codebook_dense",
    "codebook_linear",
    "codebook_linear_kernels",
    "codebook_linear_q8",
    "codebook_linear_q8_kernels",
    "codebook_linear_q8_reference",
    "codebook_linear_reference",
    "codebook_q8_error_bound",
    "quantize_codebook_q8",
    "quantize_rows_q8",
    "field_bits",
    "index_words",
    "kmeans_1d",
    "pack_indices",
    "sqnr_db",
    "unpack_indices",
]
