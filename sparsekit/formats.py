"""The format-version tensor every sparsekit module keeps in its state dict.

A state dict holds tensors only; each packed module stores an int64 buffer
``format = [version, *shape fields]``. Loading checks it against the module the
state is loaded into, so a checkpoint of another version, shape or packing fails
with a clear error instead of producing garbage.
"""

from __future__ import annotations

import torch


def format_tensor(fields: list[int], device=None) -> torch.Tensor:
    return torch.tensor(fields, dtype=torch.int64, device=device)


def check_format_tensor(saved, kind: str, expected: list[int], names: list[str], where: str) -> None:
    if not isinstance(saved, torch.Tensor) or saved.dtype != torch.int64 or saved.dim() != 1:
        raise ValueError(f"{where}: 'format' entry of a {kind} state dict must be a 1-D int64 tensor")
    if saved.device.type == "meta":
        return
    got = [int(v) for v in saved.cpu().tolist()]
    if len(got) != len(expected):
        raise ValueError(f"{where}: {kind} format record has {len(got)} fields, expected {len(expected)} ({names})")
    if got[0] != expected[0]:
        raise ValueError(f"{where}: {kind} format version {got[0]} is not supported (this sparsekit reads {expected[0]})")
    diffs = [f"{n}={g} (module has {e})" for n, g, e in zip(names[1:], got[1:], expected[1:]) if g != e]
    if diffs:
        raise ValueError(f"{where}: checkpoint does not match this {kind} module: " + ", ".join(diffs))
