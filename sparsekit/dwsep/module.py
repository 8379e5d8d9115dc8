"""``DepthwiseSeparableConv2d``: depthwise k x k -> activation -> pointwise 1 x 1 -> activation,
run as one fused op (``sparsekit::dwsep_conv2d``) in inference."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .._conv import is_channels_last, pair
from ..backend import tracks_grad
from .cpu import pointwise_panels
from .op import dwsep_conv2d
from .reference import ACTIVATIONS, activation_code, dwsep_conv2d_reference


def activation_name(module: Optional[nn.Module]) -> str:
    """The activation a module computes, as one of ACTIVATIONS (TypeError for anything else)."""
    if module is None or isinstance(module, nn.Identity):
        return "identity"
    if isinstance(module, nn.ReLU6) or (isinstance(module, nn.Hardtanh) and (module.min_val, module.max_val) == (0, 6)):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.SiLU):
        return "silu"
    raise TypeError(f"activation must be None, Identity, ReLU, ReLU6 or SiLU, got {type(module).__name__}")


@torch.no_grad()
def fold_batchnorm(weight: torch.Tensor, bias: Optional[torch.Tensor], bn: nn.BatchNorm2d):
    """(weight, bias) of a convolution followed by ``bn`` in eval mode, as one convolution."""
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"bn must be an nn.BatchNorm2d, got {type(bn).__name__}")
    if bn.num_features != weight.shape[0]:
        raise ValueError(f"bn has {bn.num_features} features, the convolution {weight.shape[0]} output channels")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn must track running statistics (track_running_stats=True) to be folded")
    def f64(t):
        return None if t is None else t.detach().double()

    # PyTorch's folding, in float64 so that a float16/bfloat16 layer is rounded once, at the end
    w, b = fuse_conv_bn_weights(f64(weight), f64(bias), f64(bn.running_mean), f64(bn.running_var), bn.eps,
                                f64(bn.weight), f64(bn.bias))
    return w.detach().to(weight.dtype), b.detach().to(weight.dtype)


class DepthwiseSeparableConv2d(nn.Module):
    """``act2(pointwise(act1(depthwise(x))))`` with a ``kernel_size`` depthwise convolution over
    ``in_channels`` and a 1 x 1 convolution to ``out_channels``.

    Parameters ``dw_weight [C, 1, kh, kw]``, ``dw_bias [C]``, ``pw_weight [Co, C, 1, 1]``,
    ``pw_bias [Co]`` (the biases optional) are those of the two ``nn.Conv2d`` it replaces, so
    training works as usual (through PyTorch's convolutions); without gradients (``torch.no_grad``,
    ``inference_mode``, ``torch.compile``/``export`` of an inference model) the fused op runs, and
    the depthwise output is never materialised. ``act1``/``act2``: None, "relu", "relu6", "silu".
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0, dilation=1,
                 bias: bool = True, act1: Optional[str] = None, act2: Optional[str] = None, device=None, dtype=None):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation = pair(padding), pair(dilation)
        self.act1, self.act2 = activation_code(act1), activation_code(act2)
        f = {"device": device, "dtype": dtype}
        self.dw_weight = nn.Parameter(torch.empty(in_channels, 1, *self.kernel_size, **f))
        self.pw_weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1, **f))
        self.dw_bias = nn.Parameter(torch.empty(in_channels, **f)) if bias else None
        self.pw_bias = nn.Parameter(torch.empty(out_channels, **f)) if bias else None
        self._panels = None  # (key, source, panels): see _pointwise_panels
        self.reset_parameters()

    def reset_parameters(self) -> None:  # as nn.Conv2d's
        for w, b in ((self.dw_weight, self.dw_bias), (self.pw_weight, self.pw_bias)):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            if b is not None:
                fan_in = w[0].numel()
                nn.init.uniform_(b, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    @classmethod
    def from_dense(cls, depthwise: nn.Conv2d, pointwise: nn.Conv2d, bn1: Optional[nn.BatchNorm2d] = None,
                     act1: Optional[nn.Module] = None, bn2: Optional[nn.BatchNorm2d] = None,
                     act2: Optional[nn.Module] = None) -> "DepthwiseSeparableConv2d":
        """The fused layer computing ``act2(bn2(pointwise(act1(bn1(depthwise(x))))))``, the batch
        norms folded into the convolutions (their running statistics: the result matches the
        chain in eval mode)."""
        for name, conv in (("depthwise", depthwise), ("pointwise", pointwise)):
            if not isinstance(conv, nn.Conv2d):
                raise TypeError(f"{name} must be an nn.Conv2d, got {type(conv).__name__}")
            if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                raise ValueError(f"{name} must use explicit zero padding, got padding={conv.padding!r}, "
                                 f"padding_mode={conv.padding_mode!r}")
        C = depthwise.in_channels
        if depthwise.groups != C or depthwise.out_channels != C:
            raise ValueError(f"depthwise must have groups == in_channels == out_channels, got groups={depthwise.groups}"
                             f", in={C}, out={depthwise.out_channels}")
        if (pointwise.kernel_size != (1, 1) or pointwise.stride != (1, 1) or pointwise.padding != (0, 0)
                or pointwise.groups != 1 or pointwise.in_channels != C):
            raise ValueError(f"pointwise must be a 1x1, stride 1, unpadded, ungrouped conv from {C} channels, got "
                             f"{pointwise}")
        dw_w, dw_b = depthwise.weight.detach(), None if depthwise.bias is None else depthwise.bias.detach()
        pw_w, pw_b = pointwise.weight.detach(), None if pointwise.bias is None else pointwise.bias.detach()
        if bn1 is not None:
            dw_w, dw_b = fold_batchnorm(dw_w, dw_b, bn1)
        if bn2 is not None:
            pw_w, pw_b = fold_batchnorm(pw_w, pw_b, bn2)
        has_bias = dw_b is not None or pw_b is not None
        mod = cls(C, pointwise.out_channels, depthwise.kernel_size, depthwise.stride, depthwise.padding,
                  depthwise.dilation, bias=has_bias, act1=activation_name(act1), act2=activation_name(act2),
                  device=dw_w.device, dtype=dw_w.dtype)
        with torch.no_grad():
            mod.dw_weight.copy_(dw_w)
            mod.pw_weight.copy_(pw_w)
            if has_bias:
                mod.dw_bias.copy_(dw_b if dw_b is not None else torch.zeros_like(mod.dw_bias))
                mod.pw_bias.copy_(pw_b if pw_b is not None else torch.zeros_like(mod.pw_bias))
        return mod

    def dense_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense weights of the two convolutions the layer stands for (batch norms folded in):
        ``(dw_weight [C, 1, kh, kw], pw_weight [C_out, C, 1, 1])``, detached. Two tensors, not one:
        with an activation between them the pair is no single convolution."""
        return self.dw_weight.detach(), self.pw_weight.detach()

    @property
    def nbytes(self) -> int:
        """Bytes of the weights and biases (the state dict; not the channels_last kernel's kept copy)."""
        return sum(t.numel() * t.element_size() for t in self.parameters(recurse=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = (x, self.dw_weight, self.dw_bias, self.pw_weight, self.pw_bias, list(self.stride), list(self.padding),
                list(self.dilation), self.act1, self.act2)
        if tracks_grad(x, self.dw_weight, self.dw_bias, self.pw_weight, self.pw_bias):
            return dwsep_conv2d_reference(*args)  # training: PyTorch's differentiable convolutions
        # the module's own channels_last copy of the pointwise weight, for the native CPU kernel
        panels = self._pointwise_panels() if self._keeps_panels(x) else None
        return dwsep_conv2d(*args, panels)

    def _keeps_panels(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and x.dtype == torch.float32 and self.pw_weight.dtype == torch.float32
                and is_channels_last(x) and not torch.compiler.is_compiling())

    def _pointwise_panels(self) -> torch.Tensor:
        """The channels_last kernel's copy of ``pw_weight`` (:func:`~sparsekit.dwsep.cpu.pointwise_panels`),
        kept between calls. It is made again when the weight is replaced (``p.data = ...``,
        ``.to()``), loaded (``load_state_dict``) or updated in place through autograd-visible
        writes (an optimizer step: the version counter moves). The copy holds the weight's
        memory, so a replaced weight can never land at the address it was made from. Writes
        the version counter does not see, through ``.data`` or in place under
        ``inference_mode``, need :meth:`refresh`."""
        w = self.pw_weight
        key = (w.data_ptr(), w.shape, w.stride(), None if w.is_inference() else w._version)
        cached = self._panels
        if cached is None or cached[0] != key:
            cached = (key, w.detach(), pointwise_panels(w))  # w.detach() pins the memory the key names
            self._panels = cached
        return cached[2]

    def refresh(self) -> "DepthwiseSeparableConv2d":
        """Forget the kept copy of the pointwise weight (after writing it through ``.data`` or in
        place under ``inference_mode``); the next channels_last call makes it again."""
        self._panels = None
        return self

    def _load_from_state_dict(self, *args, **kwargs):
        self._panels = None  # loaded weights may be inference tensors, which have no version counter
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}, dilation={self.dilation}, bias={self.dw_bias is not None}")
        return s + f", act1={ACTIVATIONS[self.act1]!r}, act2={ACTIVATIONS[self.act2]!r}"
