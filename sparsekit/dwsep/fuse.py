"""Finding depthwise -> (BatchNorm) -> (activation) -> pointwise -> (BatchNorm) -> (activation)
chains in a model and replacing each by one :class:`DepthwiseSeparableConv2d`.

``fuse_depthwise_separable(model)`` works on any model ``torch.fx`` can trace (MobileNet and
EfficientNet blocks, whose forward calls the layers one after another): it returns a
``GraphModule`` computing the same function in eval mode. ``DepthwiseSeparableConfig``
(:mod:`sparsekit.dwsep.config`) does the same in place for ``nn.Sequential`` containers through
:func:`sparsekit.convert`.

A depthwise convolution is an ``nn.Conv2d`` with ``groups == in_channels == out_channels``; a
pointwise one a 1 x 1, stride 1, unpadded, ungrouped ``nn.Conv2d``. Subclasses that pad the input
themselves through a ``static_padding`` module (TensorFlow "same" padding, as in the
EfficientNet ports) are understood: symmetric padding is folded into the fused layer, asymmetric
padding stays a separate ``ZeroPad2d`` before it. A chain is fused only where each intermediate
result has no other user (a residual branch reads the block's input, not its inside).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.fx
from torch import nn

from .module import DepthwiseSeparableConv2d, activation_name

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardtanh, nn.Identity)


def _conv_padding(conv: nn.Conv2d) -> Optional[tuple[Optional[nn.Module], tuple[int, int]]]:
    """(a padding module to keep in front, or None; the conv's symmetric zero padding), or None
    when the layer's padding is not understood."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    pad = tuple(conv.padding)
    if type(conv) is nn.Conv2d or type(conv).forward is nn.Conv2d.forward:
        return None, pad
    static = getattr(conv, "static_padding", None)
    # nn.Identity, or a port's own parameterless Identity class (the EfficientNet ports have one)
    if isinstance(static, nn.Identity) or (type(static).__name__ == "Identity" and not list(static.parameters())):
        return None, pad
    if isinstance(static, nn.ZeroPad2d):
        left, right, top, bottom = static.padding
        if left == right and top == bottom:
            return None, (pad[0] + top, pad[1] + left)
        return static, pad
    return None


def _is_depthwise(m) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels and _conv_padding(m) is not None


def _is_pointwise(m, channels: int) -> bool:
    return (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and tuple(m.stride) == (1, 1) and m.groups == 1
            and m.in_channels == channels and _conv_padding(m) == (None, (0, 0)))


def _is_activation(m) -> bool:
    if not isinstance(m, _ACTIVATIONS):
        return False
    try:
        activation_name(m)
    except TypeError:
        return False
    return True


def _match_chain(mods: list):
    """Splits a list of modules starting with a depthwise conv into the fusable prefix:
    (depthwise, bn1, act1, pointwise, bn2, act2, length) or None."""
    if not mods or not _is_depthwise(mods[0]):
        return None
    dw, i = mods[0], 1
    bn1 = act1 = bn2 = act2 = None
    if i < len(mods) and isinstance(mods[i], nn.BatchNorm2d):
        bn1, i = mods[i], i + 1
    if i < len(mods) and _is_activation(mods[i]):
        act1, i = mods[i], i + 1
    if i >= len(mods) or not _is_pointwise(mods[i], dw.out_channels):
        return None
    pw, i = mods[i], i + 1
    if i < len(mods) and isinstance(mods[i], nn.BatchNorm2d):
        bn2, i = mods[i], i + 1
    if i < len(mods) and _is_activation(mods[i]):
        act2, i = mods[i], i + 1
    return dw, bn1, act1, pw, bn2, act2, i


def _fused(dw, bn1, act1, pw, bn2, act2) -> nn.Module:
    keep, pad = _conv_padding(dw)
    plain = nn.Conv2d(dw.in_channels, dw.out_channels, tuple(dw.kernel_size), tuple(dw.stride), pad,
                      tuple(dw.dilation), dw.groups,
                      dw.bias is not None, device=dw.weight.device, dtype=dw.weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(dw.weight)
        if dw.bias is not None:
            plain.bias.copy_(dw.bias)
    fused = DepthwiseSeparableConv2d.from_dense(plain, pw, bn1=bn1, act1=act1, bn2=bn2, act2=act2)
    return nn.Sequential(keep, fused) if keep is not None else fused


class _Tracer(torch.fx.Tracer):
    """Keeps every convolution, batch norm and activation a single call (also subclasses)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.BatchNorm2d) + _ACTIVATIONS) or super().is_leaf_module(m, qualname)


def fuse_depthwise_separable(model: nn.Module) -> torch.fx.GraphModule:
    """A traced copy of ``model`` (sharing its parameters) with every fusable chain replaced by a
    :class:`DepthwiseSeparableConv2d`; batch norms are folded with their running statistics, so
    the result equals ``model`` in eval mode. Raises what ``torch.fx`` raises on untraceable code."""
    graph = _Tracer().trace(model)
    gm = torch.fx.GraphModule(model, graph)
    modules = dict(gm.named_modules())
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not _is_depthwise(modules.get(node.target)):
            continue
        chain = [node]  # follow single-user call_module nodes
        while len(chain) < 6 and len(chain[-1].users) == 1:
            nxt = next(iter(chain[-1].users))
            if nxt.op != "call_module" or nxt.args[:1] != (chain[-1],) or len(nxt.args) != 1 or nxt.kwargs:
                break
            chain.append(nxt)
        match = _match_chain([modules[n.target] for n in chain])
        if match is None:
            continue
        *parts, length = match
        chain = chain[:length]
        name = f"dwsep_fused_{count}"
        count += 1
        gm.add_submodule(name, _fused(*parts))
        with gm.graph.inserting_after(chain[-1]):
            new = gm.graph.call_module(name, (node.args[0],))
        chain[-1].replace_all_uses_with(new)
        for n in reversed(chain):
            gm.graph.erase_node(n)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
