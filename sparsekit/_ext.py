"""Loads the native CPU extension ``sparsekit._C``.

``import sparsekit`` never fails because of the extension: if it cannot be loaded,
the original error is kept and raised (as the cause) the first time a native kernel
is needed.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch  # first: the extension links libtorch

try:
    from . import _C  # type: ignore[attr-defined]  (registers the native kernels with the dispatcher)

    _LOAD_ERROR: BaseException | None = None
except Exception as exc:  # ImportError, or a ValueError from a bad SPARSEKIT_CPU_ISA
    _C = None
    _LOAD_ERROR = exc


class NativeExtensionError(RuntimeError):
    """The CPU extension sparsekit._C is needed but could not be loaded."""


def available() -> bool:
    return _C is not None


def native():
    """The loaded extension module (its ops are under ``torch.ops.sparsekit``); raises NativeExtensionError (caused by the load error) if absent."""
    if _C is None:
        raise NativeExtensionError(
            "sparsekit's CPU kernels (sparsekit._C) failed to load: "
            f"{type(_LOAD_ERROR).__name__}: {_LOAD_ERROR}. Rebuild with "
            "`pip install --no-build-isolation -e .`, or choose the reference backend "
            "with sparsekit.set_backend('reference')."
        ) from _LOAD_ERROR
    return _C


def supported_isas() -> list[str]:
    """CPU instruction sets the kernels can use on this machine, best first."""
    native()
    return list(torch.ops.sparsekit._supported_cpu_isas())


def cpu_isa() -> str:
    """Instruction set the CPU kernels currently run with (SPARSEKIT_CPU_ISA forces a lower one)."""
    native()
    return torch.ops.sparsekit._cpu_isa()


def set_cpu_isa(name: str) -> None:
    native()
    torch.ops.sparsekit._set_cpu_isa(name)


@contextlib.contextmanager
def use_cpu_isa(name: str) -> Iterator[None]:
    """Runs the CPU kernels with the given instruction set inside the block."""
    old = cpu_isa()
    set_cpu_isa(name)
    try:
        yield
    finally:
        set_cpu_isa(old)
