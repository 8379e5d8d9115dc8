"""Codebook (k-means weight clustering) linear layers vs torch, K = N = 4096 (1024 quick).

Groups ``codebook/cpu/...``: one group per M, the layer's weights resident in cache as in a
microbenchmark. Groups ``codebook_cold/cpu/...``: each call goes to the next of a set of
layers whose weights add up to more than COLD_BYTES per provider (more than this machine's
last-level cache), as in a real model where a layer's weights are evicted before it runs again.

Providers: ``torch_fp32`` (nn.Linear, the baseline), ``torch_int8_dynamic`` (PyTorch's dynamic
int8 Linear: int8 weights, activations quantized per call), ``sparsekit_codebook_<b>bit``
(``CodebookLinear``, exact: the products use the fp32 centroids and activations) and
``sparsekit_codebook_2bit_int8`` (the opt-in ``compute="int8"``: activations and centroids
quantized to int8 like PyTorch's dynamic int8, integer sums; error bound in the docs).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from harness import DEVICES, QUICK, measure
from torch import nn

SIZE = 1024 if QUICK else 4096
MS = [1, 8, 256] if QUICK else [1, 8, 256, 1024]
COLD_MS = [1, 8]
COLD_BYTES = (64 if QUICK else 512) << 20

cpu_only = pytest.mark.skipif("cpu" not in DEVICES, reason="CPU suite not selected (SPARSEKIT_BENCH_DEVICE)")

_base = {}


def _base_layer() -> nn.Linear:
    if "lin" not in _base:
        torch.manual_seed(0)
        _base["lin"] = nn.Linear(SIZE, SIZE)
    return _base["lin"]


def _layer(provider: str):
    lin = _base_layer()
    if provider == "torch_fp32":
        return lin
    if provider == "torch_int8_dynamic":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
    from sparsekit.nn import CodebookLinear

    int8 = provider.endswith("_int8")
    bits = int(provider.removesuffix("_int8").split("_")[-1].removesuffix("bit"))
    key = f"codebook{bits}"
    if key not in _base:
        _base[key] = CodebookLinear.from_dense(lin, bits=bits)
    if not int8:
        return _base[key]
    mod = _clone(_base[key])
    mod.compute = "int8"
    return mod


def _nbytes(mod) -> int:
    if isinstance(mod, nn.Linear):
        return mod.weight.numel() * 4
    if hasattr(mod, "nbytes"):
        return mod.nbytes
    return SIZE * SIZE  # int8 weights


def _copies(mod, n: int) -> list:
    """n layers with their own weight memory (the same values: clustering once is enough)."""
    out = []
    for _ in range(n):
        m = mod if not out else _clone(mod)
        out.append(m)
    return out


def _clone(mod):
    import copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return copy.deepcopy(mod)


PROVIDERS = ["torch_fp32", "torch_int8_dynamic", "sparsekit_codebook_2bit", "sparsekit_codebook_2bit_int8",
             "sparsekit_codebook_1bit", "sparsekit_codebook_4bit"]


@cpu_only
@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_codebook_linear(benchmark, M, provider):
    if QUICK and provider in ("sparsekit_codebook_1bit", "sparsekit_codebook_4bit"):
        pytest.skip("2-bit only in quick mode")
    mod = _layer(provider)
    x = torch.randn(M, SIZE)
    with torch.no_grad():
        measure(benchmark, lambda: mod(x), group=f"codebook/cpu/K=N={SIZE}/M={M}", provider=provider,
                baseline="torch_fp32", M=M)


@cpu_only
@pytest.mark.parametrize("M", COLD_MS)
@pytest.mark.parametrize("provider", ["torch_fp32", "torch_int8_dynamic", "sparsekit_codebook_2bit",
                                      "sparsekit_codebook_2bit_int8"])
def test_codebook_linear_not_cache_resident(benchmark, M, provider):
    mod = _layer(provider)
    layers = _copies(mod, max(2, -(-COLD_BYTES // _nbytes(mod))))
    x = torch.randn(M, SIZE)
    state = {"i": 0}

    def step():
        state["i"] = (state["i"] + 1) % len(layers)
        return layers[state["i"]](x)

    with torch.no_grad():
        measure(benchmark, step, group=f"codebook_cold/cpu/K=N={SIZE}/M={M}/{COLD_BYTES >> 20}MiB", provider=provider,
                baseline="torch_fp32", M=M, layers=len(layers))


@pytest.mark.skipif("cuda" not in DEVICES, reason="no CUDA device selected")
@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("provider", ["torch_fp32", "sparsekit_codebook_2bit"])
def test_codebook_linear_cuda(benchmark, M, provider):
    """GPU: the Triton kernel (indices decoded in registers) vs cuBLAS fp32 on the dense weight."""
    mod = _layer(provider)
    mod = _clone(mod).cuda()
    x = torch.randn(M, SIZE, device="cuda")
    with torch.no_grad():
        measure(benchmark, lambda: mod(x), group=f"codebook/cuda/K=N={SIZE}/M={M}", provider=provider,
                baseline="torch_fp32", device="cuda", M=M)
