"""Every sparsekit module on every path, in the ways serving and training code calls it:

- built under eager, ``no_grad`` or ``inference_mode`` and called under another (a model built
  inside ``inference_mode`` and served from it is common), and trained (autograd);
- called from several threads at once, many layers each, with results identical to a serial
  run (inference servers call one model from many threads);
- given a corrupted state dict: ``ValueError`` and the module as it was, with or without the
  ``format`` entry.

Expected outputs come from the reference backend on the same module.
"""

from __future__ import annotations

import contextlib
import sys
import threading

import pytest
import torch
from torch import nn

import sparsekit
from sparsekit import _ext
from sparsekit.binary import binary_conv2d_kernels, binary_linear_kernels, sign_linear_kernels
from sparsekit.block_sparse import bsr_linear_kernels
from sparsekit.codebook import codebook_linear_kernels, codebook_linear_q8_kernels
from sparsekit.dwsep.op import dwsep_conv2d_kernels
from sparsekit.nn import (
    BinaryConv2d,
    BinaryLinear,
    BlockSparseLinear,
    CodebookLinear,
    DepthwiseSeparableConv2d,
    LowRankLinear,
)
from sparsekit.testing import kernel_variants, run_variant

pytestmark = pytest.mark.skipif(not _ext.available(), reason="needs the native extension")


def _linear(K, N, seed):
    torch.manual_seed(seed)
    return nn.Linear(K, N)


# name -> (build(seed) -> module, input(M, seed) -> tensor, trainable)
# The inputs cover each kernel's small-M and large-M paths (block-sparse streams weights at
# M <= 24 and blocks registers above; codebook decodes panels from M = 32 at 2 bits).
MODULES = {
    "bsr": (lambda s: BlockSparseLinear.from_dense(_linear(70, 48, s), block_size=8, sparsity=0.6),
            lambda M, s: torch.randn(M, 70), True),
    "bsr_dense": (lambda s: BlockSparseLinear.from_dense(_linear(64, 64, s), block_size=16, sparsity=0.0),
                  lambda M, s: torch.randn(M, 64), True),
    "codebook": (lambda s: CodebookLinear.from_dense(_linear(70, 33, s), bits=2, group_size=8),
                 lambda M, s: torch.randn(M, 70), True),
    "codebook3": (lambda s: CodebookLinear.from_dense(_linear(50, 20, s), bits=3),
                  lambda M, s: torch.randn(M, 50), True),
    "codebook_int8": (lambda s: CodebookLinear.from_dense(_linear(70, 33, s), bits=2, group_size=8, compute="int8"),
                      lambda M, s: torch.randn(M, 70), False),
    "xnor": (lambda s: BinaryLinear.from_dense(_linear(70, 20, s), input_scale=True),
             lambda M, s: torch.randn(M, 70), False),
    "xnor_trainable": (lambda s: BinaryLinear.from_dense(_linear(70, 20, s), trainable=True),
                       lambda M, s: torch.randn(M, 70), True),
    "binaryconnect": (lambda s: BinaryLinear.from_dense(_linear(70, 20, s), binarize_input=False),
                      lambda M, s: torch.randn(M, 70), False),
    "binary_conv": (lambda s: BinaryConv2d.from_dense(nn.Conv2d(5, 6, 3, padding=1)),
                    lambda M, s: torch.randn(min(M, 4), 5, 6, 7), False),
    "dwsep": (lambda s: DepthwiseSeparableConv2d(12, 70, 3, padding=1, act1="relu6", act2="silu"),
              lambda M, s: torch.randn(min(M, 4), 12, 7, 9), True),
    "dwsep_channels_last": (lambda s: DepthwiseSeparableConv2d(12, 70, 3, padding=1, act1="relu"),
                            lambda M, s: torch.randn(min(M, 4), 12, 7, 9).contiguous(memory_format=torch.channels_last),
                            True),
    "lowrank": (lambda s: LowRankLinear.from_dense(_linear(40, 30, s), rank=6),
                lambda M, s: torch.randn(M, 40), True),
}

MODES = {
    "eager": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def _build(name, seed=0):
    torch.manual_seed(seed)
    return MODULES[name][0](seed).eval()


def _input(name, M, seed=0):
    torch.manual_seed(1000 + seed)
    return MODULES[name][1](M, seed)


def _reference(module, x):
    with torch.no_grad(), sparsekit.use_backend("reference"):
        return module(x.clone())


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("built", list(MODES))
@pytest.mark.parametrize("called", list(MODES))
@pytest.mark.parametrize("M", [3, 64])
def test_built_in_one_mode_called_in_another(name, built, called, M):
    with MODES[built]():
        module = _build(name)
    x = _input(name, M)
    expected = _reference(module, x)
    with MODES[called]():
        first = module(x)
        second = module(x)  # a second call: nothing a first call kept may be stale or fail
    torch.testing.assert_close(first.detach(), expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(first.detach(), second.detach())


TRAINABLE = [n for n, (_, _, trainable) in MODULES.items() if trainable]


@pytest.mark.parametrize("name", TRAINABLE)
@pytest.mark.parametrize("built", ["eager", "no_grad"])
def test_trains_whatever_mode_it_was_built_in(name, built):
    """A backward pass in training mode; the gradients match the reference backend's. (Built
    under inference_mode, a module cannot be trained: see the next test.)"""
    with MODES[built]():
        module = _build(name)
    module.train()
    x = _input(name, 5).requires_grad_(True)

    def grads(backend):
        module.zero_grad(set_to_none=True)
        x.grad = None
        with sparsekit.use_backend(backend):
            module(x).square().sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in module.parameters() if p.grad is not None]

    got, expected = grads("auto"), grads("reference")
    assert len(got) == len(expected) > 1
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", TRAINABLE)
def test_training_a_module_built_under_inference_mode_fails_as_pytorch_does(name):
    """Inference tensors can never be saved for backward, so PyTorch's own layers built under
    inference_mode cannot be trained (nn.Conv2d fails in the forward, nn.Linear once its input
    needs a gradient); a sparsekit module raises the same error rather than computing anything."""
    with torch.inference_mode():
        module = _build(name)
        conv = nn.Conv2d(3, 4, 3)
    module.train()
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        conv(torch.randn(1, 3, 5, 5))
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        module(_input(name, 5).requires_grad_(True)).sum().backward()


@pytest.mark.parametrize("name", list(MODULES))
def test_threads_share_modules(name):
    """4 threads, each calling 10 layers of this kind (more than any per-process table of
    weights could hold) in its own order, each at a small and a large M, 3 rounds: every
    output equals the serial run's."""
    layers = [_build(name, seed) for seed in range(10)]
    inputs = [(_input(name, M, seed), _input(name, 64, seed)) for seed, M in enumerate([1, 3, 30, 2, 7, 1, 33, 5, 3, 1])]
    with torch.no_grad():
        serial = [(layer(a), layer(b)) for layer, (a, b) in zip(layers, inputs)]
    failures = []

    def work(t):
        order = [(i * (t + 3)) % len(layers) for i in range(len(layers))]
        try:
            with torch.no_grad():
                for _ in range(3):
                    for i in order:
                        if not all(torch.equal(layers[i](x), y) for x, y in zip(inputs[i], serial[i])):
                            failures.append(f"thread {t}: layer {i} differs from the serial run")
        except Exception as exc:  # noqa: BLE001 - reported below with its thread
            failures.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the interpreter between threads as often as it can: races show
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[:5]


def _weight_writes(module):
    """(description, write) pairs: ways a weight changes behind a module's back. A module that
    keeps a copy of a weight between calls (``refresh()``: the depthwise-separable layer's
    channels_last pointwise panels) documents that writes the version counter does not see
    need ``refresh()``; every other write must be seen without it."""
    p = next(t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point())
    if isinstance(module, DepthwiseSeparableConv2d):
        p = module.pw_weight  # the weight it keeps a copy of
    refresh = getattr(module, "refresh", lambda: None)

    def replace():
        p.data = torch.randn_like(p)

    def through_data():
        p.data.mul_(3.0)
        refresh()

    def load():
        module.load_state_dict({k: v * 0.5 if v.is_floating_point() else v for k, v in module.state_dict().items()})

    return [("in place", lambda: p.mul_(-2.0)), ("through .data", through_data), ("replaced .data", replace),
            ("load_state_dict", load)]


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("M", [3, 64])
def test_weight_changes_are_seen_by_the_next_call(name, M):
    """No module serves a result computed from weights it no longer has (caches keyed on data
    pointer and version counter returned stale outputs after a write through .data)."""
    module = _build(name).requires_grad_(False)
    x = _input(name, M)
    for what, write in _weight_writes(module):
        module(x)
        write()
        torch.testing.assert_close(module(x), _reference(module, x), rtol=1e-4, atol=1e-4, msg=what)


# ---------------------------------------------------------------- corrupted state dicts

def _corruptions():
    """(module name, description, state-dict edit) for each packed format."""

    def set_(key, fn):
        def edit(state):
            state[key] = fn(state[key].clone())
        return edit

    return [
        ("bsr", "column out of range", set_("col_indices", lambda t: t.index_fill_(0, torch.tensor([0]), 1000))),
        ("bsr", "row offsets decreasing", set_("row_offsets", lambda t: t.flip(0))),
        ("codebook3", "3-bit index >= 8", set_("indices", lambda t: t | 0x8)),
        ("xnor", "padding bits set", set_("weight_packed", lambda t: t | ~((1 << 6) - 1))),
        ("binary_conv", "padding bits set", set_("weight_packed", lambda t: t | ~31)),
    ]


@pytest.mark.parametrize("name, what, edit", _corruptions(), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("drop_format", [False, True])
def test_corrupted_state_dict_is_rejected_and_nothing_is_loaded(name, what, edit, drop_format):
    module = _build(name)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    state = {k: v.clone() for k, v in _build(name, seed=1).state_dict().items()}
    edit(state)
    if drop_format:
        del state["format"]
    with pytest.raises(ValueError):
        module.load_state_dict(state, strict=not drop_format)
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed by a rejected load ({what})"


# ---------------------------------------------------------------- the registered ops themselves

def _conv_args(m):
    return [list(m.kernel_size), list(m.stride), list(m.padding), list(m.dilation)]


KERNEL_TABLES = {
    "bsr_linear": bsr_linear_kernels, "codebook_linear": codebook_linear_kernels,
    "codebook_linear_q8": codebook_linear_q8_kernels, "binary_linear": binary_linear_kernels,
    "sign_linear": sign_linear_kernels, "binary_conv2d": binary_conv2d_kernels, "dwsep_conv2d": dwsep_conv2d_kernels,
}
OPS = {  # op -> (module it takes its tensors from, its arguments)
    "bsr_linear": ("bsr", lambda m, x: (x, m.values, m.col_indices, m.row_offsets, m.bias, m.out_features,
                                        m.in_features)),
    "codebook_linear": ("codebook", lambda m, x: (x, m.indices, m.codebook, m.bias, m.in_features, m.bits,
                                                  m.group_size)),
    "codebook_linear_q8": ("codebook_int8", lambda m, x: (x, m.indices, m.codebook, m.bias, m.in_features, m.bits,
                                                          m.group_size)),
    "binary_linear": ("xnor", lambda m, x: (x, m.weight_packed, m.weight_scale, m.bias, m.in_features,
                                            m.input_scale)),
    "sign_linear": ("binaryconnect", lambda m, x: (x, m.weight_packed, m.weight_scale, m.bias, m.in_features)),
    "binary_conv2d": ("binary_conv", lambda m, x: (x, m.weight_packed, m.weight_scale, m.bias, m.in_channels,
                                                   *_conv_args(m))),
    "dwsep_conv2d": ("dwsep_channels_last", lambda m, x: (x, m.dw_weight, m.dw_bias, m.pw_weight, m.pw_bias,
                                                          list(m.stride), list(m.padding), list(m.dilation), m.act1,
                                                          m.act2)),
}


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("built", list(MODES))
@pytest.mark.parametrize("called", list(MODES))
def test_registered_op_in_every_mode(op, built, called):
    """torch.ops.sparsekit.<op> on tensors made in one mode (inference tensors included), called in
    another, on every CPU kernel: the reference backend's result."""
    name, make_args = OPS[op]
    with MODES[built]():
        module = _build(name).requires_grad_(False)
        x = _input(name, 5)
    args = make_args(module, x)
    fn = getattr(torch.ops.sparsekit, op)
    with torch.no_grad(), sparsekit.use_backend("reference"):
        expected = fn(*args)
    for variant in kernel_variants(KERNEL_TABLES[op], "cpu"):
        with MODES[called](), run_variant(variant):
            got = fn(*args)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4, msg=f"{op} on {variant}")
