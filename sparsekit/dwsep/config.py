"""``DepthwiseSeparableConfig``: the ``sparsekit.convert`` config for fusing depthwise-separable chains."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import Config, register_handler
from .fuse import _fused, _match_chain


@dataclass
class DepthwiseSeparableConfig(Config):
    """``sparsekit.convert`` config: in every ``nn.Sequential``, each run depthwise -> (BN) ->
    (activation) -> pointwise -> (BN) -> (activation) becomes one DepthwiseSeparableConv2d (batch
    norms folded: convert models in eval mode). For models whose blocks are not Sequential, use
    :func:`fuse_depthwise_separable`."""

    def accepts(self, module: nn.Module) -> bool:
        if type(module) is not nn.Sequential:
            return False
        mods = list(module)
        return any(_match_chain(mods[i:]) is not None for i in range(len(mods)))


@register_handler(DepthwiseSeparableConfig)
def _convert_sequential(module: nn.Sequential, config: DepthwiseSeparableConfig) -> nn.Sequential:
    mods, out, i = list(module), [], 0
    while i < len(mods):
        match = _match_chain(mods[i:])
        if match is None:
            out.append(mods[i])
            i += 1
            continue
        *parts, length = match
        out.append(_fused(*parts))
        i += length
    return nn.Sequential(*out)
