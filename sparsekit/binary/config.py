"""``BinaryConfig``: the ``sparsekit.convert`` config for XNOR-Net linear layers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import Config, register_handler
from .module import BinaryLinear


@dataclass
class BinaryConfig(Config):
    """Replace every ``nn.Linear`` by a :class:`BinaryLinear` (packed signs, XNOR-popcount)."""

    input_scale: bool = False
    trainable: bool = False

    def accepts(self, module: nn.Module) -> bool:
        return type(module) is nn.Linear


@register_handler(BinaryConfig)
def _convert_linear(module: nn.Linear, config: BinaryConfig) -> BinaryLinear:
    return BinaryLinear.from_dense(module, input_scale=config.input_scale, trainable=config.trainable)
