"""``BinaryConfig``: the ``sparsekit.convert`` config for XNOR-Net linear layers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import Config, register_handler
from .module import BinaryConv2d, BinaryLinear


@dataclass
class BinaryConfig(Config):
    """Replace every ``nn.Linear`` by a :class:`BinaryLinear` and every ``nn.Conv2d`` with
    groups=1 and zero padding by a :class:`BinaryConv2d` (packed signs, XNOR-popcount)."""

    binarize_input: bool = True  # False: BinaryConnect (real activations) for the linear layers
    input_scale: bool = False
    trainable: bool = False

    def accepts(self, module: nn.Module) -> bool:
        if type(module) is nn.Conv2d:
            return module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)
        return type(module) is nn.Linear


@register_handler(BinaryConfig)
def _convert(module: nn.Module, config: BinaryConfig) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        return BinaryConv2d.from_dense(module, trainable=config.trainable)
    return BinaryLinear.from_dense(module, binarize_input=config.binarize_input, input_scale=config.input_scale,
                                   trainable=config.trainable)
