"""Argument checks shared by every op's fake and real implementations.

They read only metadata (dtype, device, shape), so they also run under fake tensors
during ``torch.compile`` / ``torch.export`` tracing, and they raise ``TypeError`` /
``ValueError`` naming the argument and what was expected.
"""

from __future__ import annotations

import torch


def check_tensor(name: str, t, *, dtypes=None, dim: int | None = None, device=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        want = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {want}, got {str(t.dtype).replace('torch.', '')}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {list(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on {device} (the device of the input), got {t.device}")


def check_shape(name: str, t: torch.Tensor, expected: tuple) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {list(expected)}, got {list(t.shape)}")


FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
