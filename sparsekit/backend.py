"""The one switch that chooses which kernel runs an op.

``auto`` (default) picks the fastest backend for the input's device: the native CPU
kernels on CPU, Triton (then CUDA) on GPU. ``cpu``, ``triton``, ``cuda`` and
``reference`` force one; a forced backend that cannot run on the input's device is
an error, never a silent fallback. The environment variable SPARSEKIT_BACKEND sets
the initial choice.

Every op keeps its kernels in a :class:`KernelTable`; the registered torch op calls
``table.dispatch(...)`` so the choice happens at run time, also under
``torch.compile`` and ``torch.export``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable, Iterator

import torch

from . import _ext

BACKENDS = ("auto", "cpu", "triton", "cuda", "reference")

# backends tried by "auto", in order, per device type
_AUTO_ORDER = {"cpu": ("cpu",), "cuda": ("triton", "cuda")}


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_current = _check_name(os.environ.get("SPARSEKIT_BACKEND", "auto") or "auto")


def get_backend() -> str:
    return _current


def set_backend(name: str) -> None:
    global _current
    _current = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Forces a backend inside the block: ``with sparsekit.use_backend("reference"): ...``."""
    global _current
    old, _current = _current, _check_name(name)
    try:
        yield
    finally:
        _current = old


class KernelTable:
    """The kernels of one op: backend name -> (function, device types, availability check)."""

    def __init__(self, op_name: str):
        self.op_name = op_name
        self._kernels: dict[str, tuple[Callable, tuple[str, ...], Callable[[], bool], Callable]] = {}
        self._warned: set[str] = set()

    def register(
        self,
        backend: str,
        devices: tuple[str, ...],
        available: Callable[[], bool] = lambda: True,
        supports: Callable[..., bool] = lambda *a, **k: True,
    ):
        """Decorator. ``supports(*args)`` says whether this kernel handles these inputs (e.g. dtype)."""
        _check_name(backend)

        def deco(fn: Callable) -> Callable:
            self._kernels[backend] = (fn, devices, available, supports)
            return fn

        return deco

    def backends_for(self, device_type: str) -> list[str]:
        """Backends with a kernel that can run on this device type here (for tests)."""
        return [
            b
            for b, (_, devs, avail, _s) in self._kernels.items()
            if (device_type in devs or "any" in devs) and avail()
        ]

    def choose(self, device_type: str, *args) -> Callable:
        want = _current
        if want != "auto":
            if want not in self._kernels:
                raise ValueError(f"{self.op_name}: no {want!r} kernel (has {sorted(self._kernels)})")
            fn, devs, avail, supports = self._kernels[want]
            if device_type not in devs and "any" not in devs:
                raise ValueError(
                    f"{self.op_name}: backend {want!r} runs on {devs}, but the input is on {device_type!r}"
                )
            if not avail():
                raise RuntimeError(f"{self.op_name}: backend {want!r} is not available on this machine")
            return fn
        for name in _AUTO_ORDER.get(device_type, ()):
            if name not in self._kernels:
                continue
            fn, devs, avail, supports = self._kernels[name]
            if not supports(*args):
                continue
            if name == "cpu" or avail():  # the CPU kernel raises its own load error when missing
                return fn
        key = f"{device_type}"
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"{self.op_name}: no fast kernel for these inputs on {device_type!r}; using the reference",
                stacklevel=3,
            )
        return self._kernels["reference"][0]

    def dispatch(self, device_type: str, *args):
        return self.choose(device_type, *args)(*args)


def needs_dispatcher(x, *params) -> bool:
    """Whether a module call must go through its registered ``torch.ops.sparsekit`` op
    (autograd, tracing, tensor subclasses) rather than straight to the op's implementation.
    Calling the op costs about 15 us of dispatch in eager mode, more than the whole product
    on a small layer; modules call the implementation directly for plain eager inference."""
    if type(x) is not torch.Tensor or torch.compiler.is_compiling():
        return True
    return tracks_grad(x, *params)


def tracks_grad(x, *params) -> bool:
    """Whether autograd records a call on ``x`` with these parameters: gradients are on and the
    input or a parameter needs one. A parameter that is an inference tensor (made under
    ``torch.inference_mode``) can never get a gradient, since autograd refuses to save it, so
    it does not count: a model built under ``inference_mode`` and called with gradients on
    runs its inference path, as ``nn.Linear`` does for an input that needs no gradient."""
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p is not None and p.requires_grad and not p.is_inference() for p in params))


def native_cpu_applies(x) -> bool:
    """Whether a module's eager call on ``x`` may go straight to a native CPU kernel: a float32
    CPU tensor, the backend switch allowing the CPU kernels, and the extension loaded."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and _current in ("auto", "cpu") and _ext.available()


def triton_available() -> bool:
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def cupy_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import cupy  # noqa: F401
    except Exception:
        return False
    return True
