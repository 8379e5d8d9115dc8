"""Binary (+-1) networks: bit-packed signs, the XNOR-popcount GEMM, XNOR-Net linear layers."""

from . import cuda as _cuda  # noqa: F401  (registers the CUDA kernels; they need CuPy at run time)
from .format import FORMAT_VERSION, WORD_BITS, pack_signs, packed_words, unpack_signs
from .config import BinaryConfig
from .module import BinaryConv2d, BinaryLinear, SignSTE
from .op import (
    binary_conv2d,
    binary_conv2d_kernels,
    binary_linear,
    binary_linear_kernels,
    sign_linear,
    sign_linear_kernels,
    xnor_gemm,
    xnor_gemm_kernels,
)
from .reference import (
    binary_conv2d_reference,
    binary_linear_reference,
    sign_linear_reference,
    sign_pm1,
    xnor_gemm_reference,
)

__all__ = [
    "BinaryConfig",
    "BinaryConv2d",
    "FORMAT_VERSION",
    "binary_conv2d",
    "binary_conv2d_kernels",
    "binary_conv2d_reference",
    "BinaryLinear",
    "SignSTE",
    "WORD_BITS",
    "binary_linear",
    "binary_linear_kernels",
    "binary_linear_reference",
    "sign_linear",
    "sign_linear_kernels",
    "sign_linear_reference",
    "sign_pm1",
    "pack_signs",
    "packed_words",
    "unpack_signs",
    "xnor_gemm",
    "xnor_gemm_kernels",
    "xnor_gemm_reference",
]
