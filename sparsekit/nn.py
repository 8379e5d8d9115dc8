"""Drop-in ``torch.nn`` modules for compressed formats."""

from .binary.module import BinaryConv2d, BinaryLinear
from .block_sparse.module import BlockSparseLinear
from .codebook.module import CodebookLinear
from .dwsep.module import DepthwiseSeparableConv2d
from .dynamic import EarlyExitNetwork, SlimmableConv2d, SlimmableLinear, SwitchableBatchNorm2d
from .lowrank import LowRankLinear

__all__ = ["BinaryConv2d", "BinaryLinear", "BlockSparseLinear", "CodebookLinear", "DepthwiseSeparableConv2d",
           "EarlyExitNetwork", "LowRankLinear", "SlimmableConv2d", "SlimmableLinear", "SwitchableBatchNorm2d"]
