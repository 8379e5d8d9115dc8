"""``BlockSparseConfig``: the ``sparsekit.convert`` config for block-sparse linear layers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import Config, register_handler
from .module import BlockSparseLinear


@dataclass
class BlockSparseConfig(Config):
    """Prune every ``nn.Linear`` to ``block_size`` blocks by block norm to ``sparsity``."""

    block_size: int | tuple[int, int] = 32
    sparsity: float = 0.9
    norm: str = "l1"

    def accepts(self, module: nn.Module) -> bool:
        return type(module) is nn.Linear


@register_handler(BlockSparseConfig)
def _convert_linear(module: nn.Linear, config: BlockSparseConfig) -> BlockSparseLinear:
    return BlockSparseLinear.from_dense(module, config.block_size, sparsity=config.sparsity, norm=config.norm)
