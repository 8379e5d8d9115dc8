"""What every Triton kernel module shares: the guarded import, the autotune switch, the
device check and the fp32 precision rule."""

from __future__ import annotations

import os

import torch

try:
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
except Exception:  # triton missing or broken: the kernels are simply not registered
    HAS_TRITON = False

# SPARSEKIT_TRITON_AUTOTUNE=0 uses one fixed tile (tests: many shapes, each would autotune)
AUTOTUNE = os.environ.get("SPARSEKIT_TRITON_AUTOTUNE", "1") != "0"


def tile_configs(names: tuple, rows: tuple) -> list:
    """The autotune candidates: a ``triton.Config`` per row of tile sizes (named by ``names``)
    followed by num_warps and num_stages."""
    return [triton.Config(dict(zip(names, row[:-2])), num_warps=row[-2], num_stages=row[-1]) for row in rows]


def next_pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def interpreting(x: torch.Tensor) -> bool:
    """Whether the kernel runs under TRITON_INTERPRET=1; ValueError for a CPU tensor without it."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if x.device.type != "cuda" and not interpret:
        raise ValueError(f"the triton backend needs CUDA tensors (or TRITON_INTERPRET=1), got {x.device}")
    return interpret


def dot_precision(x: torch.Tensor) -> str:
    """fp32 follows torch's own matmul setting (full fp32 by default, like cuBLAS)."""
    return "tf32" if x.dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32 else "ieee"
