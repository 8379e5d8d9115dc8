"""What every Triton kernel module shares: the guarded import, the autotune switch, the
device check, the fp32 precision rule, and how a kernel describes its launches to the
ahead-of-time compile check (``python -m sparsekit._triton_aot``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

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


# the (x dtype, PRECISION) pairs dot_precision gives a launcher: fp32 under either matmul setting
DOT_DTYPES = (("fp32", "ieee"), ("fp32", "tf32"), ("fp16", "tf32"), ("bf16", "tf32"))


@dataclass(frozen=True)
class AotCase:
    """One compile of the ahead-of-time check: ``kernel`` (a ``@triton.jit`` function) with the
    signature, constants and argument attributes a launch of the specialisation ``spec`` gets,
    and one tile config (``tile`` constexprs, num_warps, num_stages)."""

    kernel: object
    spec: str
    signature: dict
    constexprs: dict
    attrs: dict
    tile: dict
    num_warps: int
    num_stages: int
    fixed: bool = False  # a tile of the launcher without autotuning (SPARSEKIT_TRITON_AUTOTUNE=0), no autotune config

    @property
    def config(self) -> str:
        tile = " ".join(f"{k}={v}" for k, v in self.tile.items())
        return f"{tile} w{self.num_warps} s{self.num_stages}" + (" (fixed)" if self.fixed else "")


def compile_cases(kernel, spec: str, pointers: dict, constexprs: dict, configs: list, fixed: list = (),
                  ones: tuple = (), plain=()) -> list:
    """An :class:`AotCase` per tile config (``configs``: the autotune list; ``fixed``: the launcher's
    tiles without autotuning, those equal to an autotune config left out) of one launch
    specialisation, typed as triton's launcher types a launch on aligned tensors: ``pointers``
    (name -> element type, e.g. "fp16") 16-byte aligned, each integer argument an i32 divisible
    by 16 except those in ``plain`` (``True``: all of them) and those in ``ones``, equal to 1 and
    so compiled as constants (e.g. the unit stride of a contiguous dimension). ``constexprs``: the
    kernel's constexpr arguments other than the tile's."""
    if not hasattr(kernel, "params"):
        raise TypeError(f"{kernel!r} cannot be compiled: triton's interpreter made it (TRITON_INTERPRET=1)")
    signature, consts, attrs = {}, dict(constexprs), {}
    for i, p in enumerate(kernel.params):
        name = p.name
        if p.is_constexpr or name in ones:
            signature[name] = "constexpr"
            if name in ones:
                consts[name] = 1
        elif name in pointers:
            signature[name] = "*" + pointers[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "i32"
            if plain is not True and name not in plain:
                attrs[(i,)] = [["tt.divisibility", 16]]
    seen = [(c.kwargs, c.num_warps, c.num_stages) for c in configs]
    out = [AotCase(kernel, spec, signature, consts, attrs, dict(c.kwargs), c.num_warps, c.num_stages) for c in configs]
    for c in fixed:
        if (c.kwargs, c.num_warps, c.num_stages) not in seen:
            seen.append((c.kwargs, c.num_warps, c.num_stages))
            out.append(AotCase(kernel, spec, signature, consts, attrs, dict(c.kwargs), c.num_warps, c.num_stages, True))
    return out
