"""Depthwise-separable convolution: the depthwise k x k and pointwise 1 x 1 convolutions fused."""

from . import cpu as _cpu  # noqa: F401  (registers the CPU kernel)
from . import triton as _triton  # noqa: F401  (registers the Triton kernel where Triton imports)
from .format import FORMAT_VERSION
from .config import DepthwiseSeparableConfig
from .fuse import fuse_depthwise_separable
from .module import DepthwiseSeparableConv2d, activation_name, fold_batchnorm
from .op import dwsep_conv2d, dwsep_conv2d_kernels
from .reference import ACTIVATIONS, dwsep_conv2d_reference

__all__ = [
    "ACTIVATIONS",
    "DepthwiseSeparableConfig",
    "DepthwiseSeparableConv2d",
    "FORMAT_VERSION",
    "activation_name",
    "dwsep_conv2d",
    "dwsep_conv2d_kernels",
    "dwsep_conv2d_reference",
    "fold_batchnorm",
    "fuse_depthwise_separable",
]
