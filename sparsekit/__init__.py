"""sparsekit: kernels that make compressed neural networks actually faster.

Importing the package registers every op under ``torch.ops.sparsekit``. It never
fails because the native CPU extension is missing; the load error is raised when a
native kernel is first needed.
"""

from . import (  # noqa: F401  (_ext: the native loader)
    _ext, backend, binary, block_sparse, channel_pruning, codebook, datasets, distill, dwsep, dynamic, lowrank, nn,
    pruning, storage, timing)
from .backend import get_backend, set_backend, use_backend
from .binary import BinaryConfig
from .block_sparse import BlockSparseConfig, BSRWeight
from .channel_pruning import iterative_prune_channels, prune_channels
from .codebook import CodebookConfig
from .config import Config, register_handler
from .dwsep import DepthwiseSeparableConfig, fuse_depthwise_separable
from .lowrank import LowRankConfig
from .convert import ConvertReport, convert
from .storage import CompressedReport, load_compressed, save_compressed

__version__ = "0.1.0"

__all__ = [
    "BSRWeight",
    "BinaryConfig",
    "BlockSparseConfig",
    "CodebookConfig",
    "Config",
    "LowRankConfig",
    "CompressedReport",
    "DepthwiseSeparableConfig",
    "ConvertReport",
    "backend",
    "binary",
    "block_sparse",
    "channel_pruning",
    "codebook",
    "convert",
    "datasets",
    "distill",
    "dwsep",
    "dynamic",
    "fuse_depthwise_separable",
    "get_backend",
    "iterative_prune_channels",
    "load_compressed",
    "lowrank",
    "nn",
    "prune_channels",
    "pruning",
    "register_handler",
    "save_compressed",
    "set_backend",
    "storage",
    "timing",
    "use_backend",
]
