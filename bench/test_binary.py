"""Binary kernels vs torch fp32: the XNOR-popcount GEMM on packed operands, and the
XNOR-Net BinaryLinear module (groups ``binary_linear/...``) with the packing of x included.

Groups ``xnor/...``: K = N = 4096 (1024 in quick mode), one group per M. Providers:
``torch_fp32`` (F.linear on the +-1 matrices as float32, the baseline) and
``sparsekit_xnor`` (``torch.ops.sparsekit.xnor_gemm`` on bit-packed operands; packing
excluded here: the modules' benchmarks will include it); on CPUs with AMX also
``sparsekit_xnor_vpopcntdq`` (the same op with the AMX tiles switched off, M >= 256).
extra_info carries the binary multiply-accumulates per second of the median.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from harness import DEVICES, QUICK, measure

from sparsekit import _ext
from sparsekit.binary import pack_signs

SIZE = 1024 if QUICK else 4096
MS = [1, 8, 256] if QUICK else [1, 8, 256, 1024]


def _has_amx() -> bool:
    return _ext.available() and "amx" in _ext.supported_isas()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("provider", ["torch_fp32", "sparsekit_xnor", "sparsekit_xnor_vpopcntdq", "sparsekit_xnor_popc",
                                      "sparsekit_xnor_b1"])
def test_xnor_gemm(benchmark, device, M, provider):
    """``sparsekit_xnor_vpopcntdq``: the same op with the AMX tiles switched off (CPUs with AMX only);
    ``sparsekit_xnor_popc`` / ``_b1``: each CUDA kernel forced (the default measures both and keeps
    the faster)."""
    if provider == "sparsekit_xnor_vpopcntdq" and (device != "cpu" or not _has_amx() or M < 256):
        pytest.skip("the AVX-512 VPOPCNTDQ comparison runs where the AMX kernel does (CPU, M >= 256)")
    if provider in ("sparsekit_xnor_popc", "sparsekit_xnor_b1") and device != "cuda":
        pytest.skip("CUDA kernel comparison")
    if provider == "sparsekit_xnor_b1" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("the b1 tensor-core kernel needs sm_80+")
    torch.manual_seed(0)
    a = torch.randn(M, SIZE, device=device).sign()
    b = torch.randn(SIZE, SIZE, device=device).sign()
    if provider == "torch_fp32":
        fn = lambda: F.linear(a, b)  # noqa: E731
    else:
        pa, pb = pack_signs(a), pack_signs(b)
        fn = lambda: torch.ops.sparsekit.xnor_gemm(pa, pb, SIZE)  # noqa: E731
    if provider.endswith("vpopcntdq"):
        ctx = _ext.use_cpu_isa("avx512vp")
    elif provider in ("sparsekit_xnor_popc", "sparsekit_xnor_b1"):
        from sparsekit.binary import cuda as binary_cuda

        ctx = binary_cuda.use_cuda_xnor_kernel(provider.rsplit("_", 1)[1])
    else:
        ctx = contextlib.nullcontext()
    with ctx:
        measure(benchmark, fn, group=f"xnor/{device}/K=N={SIZE}/M={M}", provider=provider, baseline="torch_fp32",
                device=device, M=M)
    benchmark.extra_info["binary_macs_per_s"] = f"{M * SIZE * SIZE / benchmark.stats.stats.median:.3e}"


@pytest.mark.skipif("cpu" not in DEVICES, reason="CPU suite not selected (SPARSEKIT_BENCH_DEVICE)")
@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("provider", ["torch_fp32", "sparsekit_binary_linear"])
def test_binary_linear(benchmark, M, provider):
    """XNOR-Net BinaryLinear (float input, packing of x included, float output) vs nn.Linear."""
    from torch import nn

    from sparsekit.nn import BinaryLinear

    torch.manual_seed(0)
    lin = nn.Linear(SIZE, SIZE)
    x = torch.randn(M, SIZE)
    mod = lin if provider == "torch_fp32" else BinaryLinear.from_dense(lin)
    measure(benchmark, lambda: mod(x), group=f"binary_linear/cpu/K=N={SIZE}/M={M}", provider=provider,
            baseline="torch_fp32", M=M)


@pytest.mark.skipif("cpu" not in DEVICES, reason="CPU suite not selected (SPARSEKIT_BENCH_DEVICE)")
@pytest.mark.parametrize("provider", ["torch_fp32", "sparsekit_binary_conv2d"])
def test_binary_conv2d(benchmark, provider):
    """BinaryConv2d 3x3, 256 -> 256 channels, 56 x 56 (28 x 28 quick), batch 1, vs nn.Conv2d fp32."""
    from torch import nn

    from sparsekit.nn import BinaryConv2d

    torch.manual_seed(0)
    hw = 28 if QUICK else 56
    conv = nn.Conv2d(256, 256, 3, padding=1)
    x = torch.randn(1, 256, hw, hw)
    mod = conv if provider == "torch_fp32" else BinaryConv2d.from_dense(conv)
    measure(benchmark, lambda: mod(x), group=f"binary_conv2d/cpu/256x256x3x3/{hw}x{hw}/batch=1", provider=provider,
            baseline="torch_fp32")


@pytest.mark.skipif("cpu" not in DEVICES, reason="CPU suite not selected (SPARSEKIT_BENCH_DEVICE)")
@pytest.mark.parametrize("M", [1, 8, 256])
@pytest.mark.parametrize("provider", ["torch_fp32", "sparsekit_binary_connect"])
def test_binary_connect_linear(benchmark, M, provider):
    """BinaryConnect BinaryLinear (binary weights, fp32 activations) vs nn.Linear."""
    from torch import nn

    from sparsekit.nn import BinaryLinear

    torch.manual_seed(0)
    lin = nn.Linear(SIZE, SIZE)
    x = torch.randn(M, SIZE)
    mod = lin if provider == "torch_fp32" else BinaryLinear.from_dense(lin, binarize_input=False)
    measure(benchmark, lambda: mod(x), group=f"binary_connect/cpu/K=N={SIZE}/M={M}", provider=provider,
            baseline="torch_fp32", M=M)
