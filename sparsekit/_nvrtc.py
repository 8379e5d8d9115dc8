"""CUDA kernels compiled at run time with NVRTC through CuPy, launched on PyTorch's stream.

Sources live in ``sparsekit/cuda/*.cu`` (shipped as package data; CI compile-checks them
with nvcc for sm_80 and sm_90). Modules are cached per (source, options, device).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CUDA_DIR = Path(__file__).parent / "cuda"


@functools.lru_cache(maxsize=None)
def get_function(source: str, name: str, device_index: int, options: tuple[str, ...] = ("-std=c++17",)):
    import cupy

    code = (CUDA_DIR / source).read_text()
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=code, options=options, backend="nvrtc").get_function(name)


def as_cupy(t: torch.Tensor):
    """Zero-copy CuPy view of a CUDA tensor (through __cuda_array_interface__)."""
    import cupy

    return cupy.asarray(t.detach() if t.requires_grad else t)


def launch(source: str, name: str, grid: tuple, block: tuple, args: tuple, device: torch.device) -> None:
    """Runs ``name`` from ``source`` on ``device``, on torch's current stream there."""
    import cupy

    index = device.index if device.index is not None else torch.cuda.current_device()
    fn = get_function(source, name, index)
    stream = torch.cuda.current_stream(index)
    with cupy.cuda.Device(index), cupy.cuda.ExternalStream(stream.cuda_stream):
        fn(grid, block, args)
