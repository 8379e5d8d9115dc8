"""Binary (+-1) networks: bit-packed signs and the XNOR-popcount GEMM."""

from . import cpu as _cpu  # noqa: F401  (registers the CPU kernel)
from .format import WORD_BITS, pack_signs, packed_words, unpack_signs
from .op import xnor_gemm, xnor_gemm_kernels
from .reference import xnor_gemm_reference

__all__ = [
    "WORD_BITS",
    "pack_signs",
    "packed_words",
    "unpack_signs",
    "xnor_gemm",
    "xnor_gemm_kernels",
    "xnor_gemm_reference",
]
