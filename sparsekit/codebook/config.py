"""``CodebookConfig``: the ``sparsekit.convert`` config for k-means weight clustering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from ..config import Config, register_handler
from .module import CodebookLinear


@dataclass
class CodebookConfig(Config):
    """Replace every ``nn.Linear`` by a :class:`CodebookLinear` of ``2**bits`` centroids per
    group of ``group_size`` output rows (one codebook per layer when None)."""

    bits: int = 2
    group_size: Optional[int] = None
    iters: int = 100
    compute: str = "exact"  # "int8": the opt-in quantized compute (see CodebookLinear)
    keep_zeros: bool = False  # a pruned layer: its zeros keep a centroid fixed at 0.0

    def accepts(self, module: nn.Module) -> bool:
        return type(module) is nn.Linear


@register_handler(CodebookConfig)
def _convert_linear(module: nn.Linear, config: CodebookConfig) -> CodebookLinear:
    return CodebookLinear.from_dense(module, bits=config.bits, group_size=config.group_size, iters=config.iters,
                                     compute=config.compute, keep_zeros=config.keep_zeros)
