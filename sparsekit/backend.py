"""How an op reaches its kernel, and the one switch that chooses which kernel runs.

Every op is registered with PyTorch's dispatcher: its schema and fake here in Python (one
:class:`KernelTable` per op, in ``sparsekit/<format>/op.py``), its native CPU kernel and autograd
formula from C++ (``csrc/<format>/register.cpp``), and its Python kernels (the reference,
Triton, CUDA through CuPy) on the CUDA key and on the op's *fallback* ``_<op>_fallback`` (same
schema), which the native CPU kernel calls for the inputs it does not run. A module calls
``torch.ops.sparsekit.<op>``: one path in eager mode, under ``torch.compile`` and in
``torch.export``.

``auto`` (default) picks the fastest backend for the input's device: the native CPU kernels on
CPU (float32; other dtypes run the reference), Triton (then CUDA) on GPU. ``cpu``, ``triton``,
``cuda`` and ``reference`` force one; a forced backend that cannot run on the input's device is
an error, never a silent fallback. The environment variable SPARSEKIT_BACKEND sets the initial
choice. The switch is process-wide (the native kernels read it with every call).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable, Iterator, Optional

import torch

from . import _ext

BACKENDS = ("auto", "cpu", "triton", "cuda", "reference")

# backends tried by "auto", in order, per device type (the CPU's native kernel runs in C++
# before any of these: it hands over only what it does not run)
_AUTO_ORDER = {"cuda": ("triton", "cuda")}

# the native CPU kernels' switch (csrc/common/tensor.h CpuBackend): auto, native, python
_CPU_MODE = {"auto": 0, "cpu": 1}

# the library every Python registration of sparsekit goes through (kept alive with the module)
LIB = torch.library.Library("sparsekit", "FRAGMENT")


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_current = "auto"


def get_backend() -> str:
    return _current


def set_backend(name: str) -> None:
    global _current
    _current = _check_name(name)
    if _ext.available():
        torch.ops.sparsekit._set_cpu_backend(_CPU_MODE.get(name, 2))


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Forces a backend inside the block: ``with sparsekit.use_backend("reference"): ...``."""
    old = _current
    set_backend(name)
    try:
        yield
    finally:
        set_backend(old)


def define(name: str, schema: str, impl: Optional[Callable] = None, fake: Optional[Callable] = None) -> None:
    """Defines ``sparsekit::<name>`` with ``schema`` (arguments and returns: ``"(Tensor x) -> Tensor"``);
    ``impl``, if given, runs it on every device (an op with no native kernel)."""
    LIB.define(name + schema)
    if impl is not None:
        LIB.impl(name, impl, "CompositeExplicitAutograd")
    if fake is not None:
        torch.library.register_fake(f"sparsekit::{name}", fake, lib=LIB)


class KernelTable:
    """One op: its schema (defined here), its fake, and its Python kernels, by backend name ->
    (function, device types, availability check, whether it supports the inputs).

    ``check(*args)`` validates a call's arguments before any Python kernel runs (the native
    kernel checks its own in C++). ``native_cpu=True``: the op has a C++ CPU kernel (registered
    when sparsekit._C loads), which runs float32 and hands other inputs, or every call when
    another backend is forced, to the op's fallback, whose kernel :meth:`choose` picks here.
    Without the extension the Python kernels take the CPU key themselves."""

    def __init__(self, name: str, schema: str, fake: Callable, check: Callable, native_cpu: bool = True):
        self.name = name
        self.schema = schema
        self.check = check
        self.op_name = f"sparsekit::{name}"
        self._kernels: dict[str, tuple[Optional[Callable], tuple[str, ...], Callable[[], bool], Callable]] = {}
        self._warned: set[str] = set()
        define(name, schema, fake=fake)
        define(f"_{name}_fallback", schema, impl=self._run)
        LIB.impl(name, self._run, "CUDA")
        if native_cpu:
            self._kernels["cpu"] = (None, ("cpu",), _ext.available, lambda *a, **k: True)
        if not (native_cpu and _ext.available()):
            LIB.impl(name, self._run, "CPU")

    @property
    def op(self):
        """The op's default overload, ``torch.ops.sparsekit.<name>.default`` (what modules call)."""
        return getattr(torch.ops.sparsekit, self.name).default

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
        """The Python kernel for a call that reached Python (GPU, or handed over by the native CPU kernel)."""
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
            if fn is None:  # the native kernel, forced, on a machine without the extension
                _ext.native()
            return fn
        if device_type == "cpu" and "cpu" in self._kernels and not _ext.available():
            _ext.native()  # the native kernel is the CPU's: its load error, not a silent reference
        for name in _AUTO_ORDER.get(device_type, ()):
            if name not in self._kernels:
                continue
            fn, devs, avail, supports = self._kernels[name]
            if supports(*args) and avail():
                return fn
        if device_type not in self._warned:
            self._warned.add(device_type)
            warnings.warn(
                f"{self.op_name}: no fast kernel for these inputs on {device_type!r}; using the reference",
                stacklevel=3,
            )
        return self._kernels["reference"][0]

    def trace_into(self, backend: str, op) -> None:
        """Under ``torch.compile`` (AOTAutograd's functional tracing), a CUDA call of this op whose
        kernel :meth:`choose` would pick is ``backend`` is traced as ``op`` instead: the kernel's
        own ``torch.library.triton_op``, whose launches ``wrap_triton`` exposes, so Inductor sees
        the Triton kernel rather than an opaque call. Other calls stay the op. (``torch.export``
        keeps the op, as PyTorch keeps triton ops in exported programs.)"""
        from torch._subclasses.functional_tensor import FunctionalTensorMode

        def rule(mode, func, types, args, kwargs):
            from torch.export._trace import custom_triton_ops_decomposition_disabled

            x = args[0]
            if (x.device.type == "cuda" and not custom_triton_ops_decomposition_disabled()
                    and self._kernels.get(backend, (None,))[0] is not None
                    and self.choose("cuda", *args) is self._kernels[backend][0]):
                self.check(*args)
                with mode:
                    return op(*args, **kwargs)
            return mode.__torch_dispatch__(func, types, args, kwargs)

        torch.library.register_torch_dispatch(self.op_name, FunctionalTensorMode, rule, lib=LIB)

    def _run(self, *args):
        self.check(*args)
        device = next(a.device.type for a in args if isinstance(a, torch.Tensor))
        return self.choose(device, *args)(*args)


def tracks_grad(x, *params) -> bool:
    """Whether autograd records a call on ``x`` with these parameters: gradients are on and the
    input or a parameter needs one. A parameter that is an inference tensor (made under
    ``torch.inference_mode``) can never get a gradient, since autograd refuses to save it, so
    it does not count: a model built under ``inference_mode`` and called with gradients on
    runs its inference path, as ``nn.Linear`` does for an input that needs no gradient."""
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p is not None and p.requires_grad and not p.is_inference() for p in params))


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


set_backend(_check_name(os.environ.get("SPARSEKIT_BACKEND", "auto") or "auto"))
