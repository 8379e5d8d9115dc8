"""``BinaryLinear``: XNOR-Net linear layer on bit-packed weights (a drop-in ``nn.Linear``).

Frozen (the default after :meth:`BinaryLinear.from_dense`), the layer keeps one bit per
weight (``weight_packed``, 64 signs per int64 word) and one float per output channel
(``weight_scale`` = mean |W| of that row, XNOR-Net's alpha); the input is binarized and
packed on the fly and the product runs as XNOR-popcount. With ``input_scale=True`` each
output row is also multiplied by mean |x| of its input row (XNOR-Net's beta).

Trainable (``from_dense(..., trainable=True)``), the layer keeps a latent float weight and
in training mode runs the same function in float with a clipped straight-through
estimator: sign() forward, gradient passed where |value| <= 1. Switching to eval mode (or
calling :meth:`freeze`) packs the latent weight, so a model is trained binary and then
runs on packed weights.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._conv import pair
from ..formats import VersionedFormat, format_tensor
from .format import FORMAT_VERSION, check_padding_bits, pack_conv_weight, pack_signs, packed_words, unpack_signs
from .op import binary_conv2d, binary_linear, sign_linear
from .reference import input_scale_of, sign_pm1


class SignSTE(torch.autograd.Function):
    """sign(x) (sign(0) = +1) forward; clipped straight-through gradient (|x| <= 1) backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign_pm1(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class _LatentWeight:
    """Training support shared by the binary modules: with a latent float weight (``trainable``)
    the module trains through :class:`SignSTE`; ``eval()`` packs the current latent weight and
    ``freeze()`` packs it for good and drops it."""

    latent_weight: Optional[nn.Parameter]

    def _pack(self, w: torch.Tensor) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def _init_from(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        """from_dense: the packed weight (and the latent one, when trainable) and the bias."""
        if self.latent_weight is not None:
            self.latent_weight.copy_(weight)
        self._pack(weight)
        if bias is not None:
            self.bias.copy_(bias)

    @torch.no_grad()
    def freeze(self):
        """Packs the latent weight and drops it: the layer becomes inference-only."""
        if self.latent_weight is not None:
            self._pack(self.latent_weight)
            self.latent_weight = None
        return self

    def train(self, mode: bool = True):
        if not mode and self.latent_weight is not None:
            self._pack(self.latent_weight)  # eval runs the packed kernel on the current weights
        return super().train(mode)


def _binarized(w: torch.Tensor) -> torch.Tensor:
    """sign(w) times the mean |w| of each output channel (dimension 0)."""
    return sign_pm1(w) * w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)


def _check_packed(words: torch.Tensor, K: int, where: str) -> None:
    """A loaded packed weight: int64 words whose padding bits are zero."""
    if words.dtype != torch.int64:
        raise ValueError(f"{where}: weight_packed must be int64, got {words.dtype}")
    check_padding_bits(words, K, f"{where}: weight_packed")


class BinaryLinear(_LatentWeight, VersionedFormat, nn.Module):
    FORMAT_KIND = "binary_linear"
    FORMAT_FIELDS = ("out_features", "in_features", "input_scale", "binarize_input")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, input_scale: bool = False,
                 trainable: bool = False, binarize_input: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        if input_scale and not binarize_input:
            raise ValueError("input_scale applies to binarized inputs (binarize_input=True)")
        self.input_scale = bool(input_scale)
        self.binarize_input = bool(binarize_input)
        factory = dict(device=device, dtype=dtype)
        self.register_buffer("weight_packed", torch.zeros(self.out_features, packed_words(self.in_features),
                                                          dtype=torch.int64, device=device))
        self.register_buffer("weight_scale", torch.ones(self.out_features, **factory))
        self.register_buffer("format", format_tensor(self._format_fields(), device=device))
        self.bias = nn.Parameter(torch.zeros(self.out_features, **factory)) if bias else None
        self.latent_weight = (nn.Parameter(torch.zeros(self.out_features, self.in_features, **factory))
                              if trainable else None)

    def _format_fields(self) -> list[int]:
        return [FORMAT_VERSION, self.out_features, self.in_features, int(self.input_scale), int(self.binarize_input)]

    @classmethod
    def from_dense(cls, linear: nn.Linear, binarize_input: bool = True, input_scale: bool = False,
                   trainable: bool = False) -> "BinaryLinear":
        """From a dense layer: sign(W) packed, alpha = mean |W| per output channel. XNOR-Net with
        ``binarize_input=True`` (inputs binarized too), BinaryConnect with ``False`` (real inputs)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        mod = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, input_scale=input_scale,
                  trainable=trainable, binarize_input=binarize_input, device=w.device, dtype=w.dtype)
        mod._init_from(w, linear.bias)
        return mod

    @torch.no_grad()
    def _pack(self, w: torch.Tensor) -> None:
        self.weight_packed.copy_(pack_signs(w))
        self.weight_scale.copy_(w.abs().mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, b = self._parameters, self._buffers  # (not __getattr__: see BlockSparseLinear.forward)
        if self.training and p.get("latent_weight") is not None:
            w = self.latent_weight
            wb = SignSTE.apply(w) * w.abs().mean(dim=1, keepdim=True)
            y = nn.functional.linear(SignSTE.apply(x) if self.binarize_input else x, wb)
            if self.input_scale:
                y = y * input_scale_of(x)
            return y if self.bias is None else y + self.bias
        if not self.binarize_input:  # BinaryConnect
            return sign_linear(x, b["weight_packed"], b["weight_scale"], p.get("bias"), self.in_features)
        return binary_linear(x, b["weight_packed"], b["weight_scale"], p.get("bias"), self.in_features, self.input_scale)

    def weight_signs(self) -> torch.Tensor:
        return unpack_signs(self.weight_packed, self.in_features, self.weight_scale.dtype)

    def dense_weight(self) -> torch.Tensor:
        """The weight the layer computes with, ``[out_features, in_features]``: sign(W) times each
        row's alpha (in training mode with a latent weight, that weight binarized, as forward does)."""
        if self.latent_weight is not None and self.training:
            return _binarized(self.latent_weight.detach())
        return self.weight_signs() * self.weight_scale[:, None]

    def _validate_loaded(self, where: str) -> None:
        _check_packed(self.weight_packed, self.in_features, where)

    def _stored_tensors(self) -> list:  # nbytes: packed weight, scales, bias (not the latent weight)
        return [self.weight_packed, self.weight_scale, self.bias]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"binarize_input={self.binarize_input}, input_scale={self.input_scale}, bias={self.bias is not None}, "
                f"trainable={self.latent_weight is not None}")


class BinaryConv2d(_LatentWeight, VersionedFormat, nn.Module):
    """XNOR-Net convolution (groups = 1) on bit-packed weights, a drop-in ``nn.Conv2d``.

    The weight keeps one bit per element, packed per kernel position over the input
    channels (see :func:`~sparsekit.binary.format.pack_conv_weight`), and one scale per
    output channel (mean |W|). The input is binarized inside. **Padding semantics:** the
    input is padded with zeros *before* binarization, and sign(0) = +1, so padded
    positions count as +1 (the reference :func:`binary_conv2d_reference` does the same).
    Stride, padding and dilation as in ``nn.Conv2d`` (``padding_mode="zeros"``).

    ``trainable=True`` keeps a latent float weight and trains through the clipped
    straight-through estimator (the same padding semantics); ``eval()``/``freeze()`` pack it.
    """

    FORMAT_KIND = "binary_conv2d"
    FORMAT_FIELDS = ("out_channels", "in_channels", "kernel_h", "kernel_w", "stride_h", "stride_w", "padding_h",
                     "padding_w", "dilation_h", "dilation_w")

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, trainable: bool = False, device=None, dtype=None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation = pair(padding), pair(dilation)
        kh, kw = self.kernel_size
        factory = dict(device=device, dtype=dtype)
        self.register_buffer("weight_packed", torch.zeros(self.out_channels, kh * kw * packed_words(self.in_channels),
                                                          dtype=torch.int64, device=device))
        self.register_buffer("weight_scale", torch.ones(self.out_channels, **factory))
        self.register_buffer("format", format_tensor(self._format_fields(), device=device))
        self.bias = nn.Parameter(torch.zeros(self.out_channels, **factory)) if bias else None
        self.latent_weight = (nn.Parameter(torch.zeros(self.out_channels, self.in_channels, kh, kw, **factory))
                              if trainable else None)

    def _format_fields(self) -> list[int]:
        return [FORMAT_VERSION, self.out_channels, self.in_channels, *self.kernel_size, *self.stride, *self.padding,
                *self.dilation]

    @torch.no_grad()
    def _pack(self, w: torch.Tensor) -> None:
        self.weight_packed.copy_(pack_conv_weight(w))
        self.weight_scale.copy_(w.abs().mean(dim=(1, 2, 3)))

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, trainable: bool = False) -> "BinaryConv2d":
        """sign(W) packed per kernel position, alpha = mean |W| per output channel; with
        ``trainable`` the dense weight is kept as the latent weight for straight-through training."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("BinaryConv2d supports groups=1, padding_mode='zeros' and numeric padding; got "
                             f"groups={conv.groups}, padding_mode={conv.padding_mode!r}, padding={conv.padding!r}")
        w = conv.weight.detach()
        mod = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  bias=conv.bias is not None, trainable=trainable, device=w.device, dtype=w.dtype)
        mod._init_from(w, conv.bias)
        return mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, b = self._parameters, self._buffers  # (not __getattr__: see BlockSparseLinear.forward)
        if self.training and p.get("latent_weight") is not None:
            w = self.latent_weight
            wb = SignSTE.apply(w) * w.abs().mean(dim=(1, 2, 3), keepdim=True)
            ph, pw = self.padding
            xb = SignSTE.apply(nn.functional.pad(x, (pw, pw, ph, ph)))  # zero padding, then sign: +1
            return nn.functional.conv2d(xb, wb, self.bias, self.stride, 0, self.dilation)
        return binary_conv2d(x, b["weight_packed"], b["weight_scale"], p.get("bias"), self.in_channels,
                             list(self.kernel_size), list(self.stride), list(self.padding), list(self.dilation))

    def dense_weight(self) -> torch.Tensor:
        """The weight the layer computes with, ``[out_channels, in_channels, kh, kw]``: sign(W) times
        each output channel's alpha (in training mode with a latent weight, that weight binarized)."""
        if self.latent_weight is not None and self.training:
            return _binarized(self.latent_weight.detach())
        kh, kw = self.kernel_size
        words = self.weight_packed.view(self.out_channels, kh * kw, -1)
        signs = unpack_signs(words, self.in_channels, self.weight_scale.dtype)  # [C_out, kh * kw, C_in]
        signs = signs.reshape(self.out_channels, kh, kw, self.in_channels).permute(0, 3, 1, 2)
        return signs * self.weight_scale.view(-1, 1, 1, 1)

    def _validate_loaded(self, where: str) -> None:
        kh, kw = self.kernel_size
        _check_packed(self.weight_packed.view(self.out_channels, kh * kw, -1), self.in_channels, where)

    def _stored_tensors(self) -> list:  # nbytes: packed weight, scales, bias
        return [self.weight_packed, self.weight_scale, self.bias]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
                f"trainable={self.latent_weight is not None}")
