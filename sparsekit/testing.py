"""Helpers shared by the tests and the benchmarks: which backends and instruction sets
exist here, how to force one, and the awkward shapes every kernel is tested on."""

from __future__ import annotations

import contextlib
import io
import os
from typing import Callable, Iterator

import torch

from . import _ext
from .backend import KernelTable, use_backend


def devices() -> list[str]:
    """Device types to test: the CPU, and CUDA where a GPU exists (SPARSEKIT_TEST_DEVICE overrides)."""
    forced = os.environ.get("SPARSEKIT_TEST_DEVICE")
    if forced:
        return forced.split(",")
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def cpu_isas() -> list[str]:
    """Every CPU instruction set this machine can run, best first ([] without the extension)."""
    return _ext.supported_isas() if _ext.available() else []


def kernel_variants(table: KernelTable, device: str) -> list[str]:
    """Names ``backend`` or ``cpu:<isa>`` of every kernel of ``table`` runnable on ``device`` here."""
    out = []
    for backend in table.backends_for(device):
        if backend == "cpu":
            out += [f"cpu:{isa}" for isa in cpu_isas()]
        elif backend == "triton" and device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            continue
        else:
            out.append(backend)
    return out


@contextlib.contextmanager
def run_variant(variant: str) -> Iterator[None]:
    """Forces a ``kernel_variants`` entry for the duration of the block."""
    backend, _, isa = variant.partition(":")
    with contextlib.ExitStack() as stack:
        stack.enter_context(use_backend(backend))
        if isa:
            stack.enter_context(_ext.use_cpu_isa(isa))
        yield


def sqnr(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB."""
    noise = (reference.double() - approx.double()).pow(2).mean()
    signal = reference.double().pow(2).mean()
    return float(10 * torch.log10(signal / noise.clamp_min(1e-300)))


# (M, N, K): empty batch, M = 1, odd sizes, sizes that are not multiples of blocks or vectors
AWKWARD_LINEAR_SHAPES = [
    (0, 40, 48),
    (1, 64, 64),
    (3, 37, 53),
    (1, 130, 257),
    (9, 96, 100),
    (65, 70, 33),
    (130, 33, 130),
]


def fit(module: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int = 40, lr: float = 1e-2) -> list:
    """A few Adam steps of an MSE fit (tests of trainable modules); returns the losses."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(module(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_eval_and_freeze_keep_outputs(module: torch.nn.Module, x: torch.Tensor, trained: torch.Tensor) -> None:
    """A module trained on a latent weight gives ``trained`` again packed (``eval()``) and frozen
    (``freeze()``, which also drops the latent weight from the state)."""
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), trained, rtol=1e-4, atol=1e-4)
    module.freeze()
    assert module.latent_weight is None and "latent_weight" not in module.state_dict()
    with torch.no_grad():
        torch.testing.assert_close(module(x), trained, rtol=1e-4, atol=1e-4)


def assert_compiles_and_exports(model: torch.nn.Module, x: torch.Tensor, op: str) -> torch.Tensor:
    """``model(x)`` under ``torch.compile(fullgraph=True)`` and through ``torch.export`` equals
    eager mode, and the exported graph calls ``torch.ops.sparsekit.<op>``. Returns the output."""
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), expected)
    ep = torch.export.export(model, (x,))
    assert any(f"sparsekit.{op}" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x), expected)
    return expected


def load_into_meta_module(state_dict: dict, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``state_dict`` through ``torch.save`` / ``torch.load(weights_only=True)``, loaded with
    ``assign=True`` into the module ``build()`` makes on the meta device (as a checkpoint is
    loaded into a model built without memory). Returns that module."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    with torch.device("meta"):
        fresh = build()
    fresh.load_state_dict(torch.load(buf, weights_only=True), assign=True)
    return fresh
