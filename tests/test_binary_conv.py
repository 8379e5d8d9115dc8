
import pytest
import torch
from torch import nn

import sparsekit
from sparsekit import _ext
from sparsekit.binary import BinaryConfig, binary_conv2d_kernels, pack_signs, sign_pm1
from sparsekit.binary.format import im2col_words
from sparsekit.nn import BinaryConv2d
from sparsekit.testing import (
    assert_compiles_and_exports,
    assert_eval_and_freeze_keep_outputs,
    cpu_isas,
    devices,
    fit,
    kernel_variants,
    load_into_meta_module,
    run_variant,
)

VARIANTS = [(d, v) for d in devices() for v in kernel_variants(binary_conv2d_kernels, d) if v != "reference"]


def _expected(x, conv):
    """sign(zero-padded x) conv sign(W), times mean |W| per output channel, plus bias (float64)."""
    p, w = conv.padding, conv.weight.detach().double()
    xs = sign_pm1(nn.functional.pad(x.double(), (p[1], p[1], p[0], p[0])))
    y = nn.functional.conv2d(xs, sign_pm1(w), None, conv.stride, 0, conv.dilation)
    y = y * w.abs().mean(dim=(1, 2, 3))[:, None, None]
    return y + conv.bias.detach().double()[:, None, None] if conv.bias is not None else y


CASES = [  # (batch, C_in, C_out, H, W, kernel, stride, padding, dilation)
    (2, 3, 5, 7, 9, 3, 1, 1, 1),
    (1, 65, 8, 11, 10, 3, 2, 1, 1),
    (1, 130, 4, 6, 6, 3, 1, 0, 2),
    (2, 64, 16, 5, 5, 1, 1, 0, 1),
    (1, 7, 3, 9, 9, 5, 2, 2, 1),
    (0, 8, 4, 5, 5, 3, 1, 1, 1),
    (1, 16, 6, 4, 7, (3, 1), (1, 2), (1, 0), 1),
    # enough pixels for the AMX kernel: output tiles that cross from one image into the next
    (2, 20, 70, 9, 11, 3, 1, 1, 1),
    (1, 65, 33, 23, 21, 3, 2, 1, 1),
]


@pytest.mark.parametrize("device, variant", VARIANTS)
@pytest.mark.parametrize("case", CASES)
def test_matches_xnor_net_reference(device, variant, case):
    B, Cin, Cout, H, W, k, s, p, d = case
    conv = nn.Conv2d(Cin, Cout, k, stride=s, padding=p, dilation=d).to(device)
    mod = BinaryConv2d.from_dense(conv)
    x = torch.randn(B, Cin, H, W, device=device)
    with run_variant(variant), torch.no_grad():
        y = mod(x)
    ref = _expected(x, conv)
    assert y.shape == ref.shape
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device, variant", VARIANTS)
def test_channels_last_and_noncontiguous_input(device, variant):
    conv = nn.Conv2d(70, 9, 3, padding=1, bias=False).to(device)
    mod = BinaryConv2d.from_dense(conv)
    x = torch.randn(2, 70, 8, 12, device=device)[..., ::2].to(memory_format=torch.channels_last)
    with run_variant(variant), torch.no_grad():
        torch.testing.assert_close(mod(x).double(), _expected(x, conv), rtol=1e-5, atol=1e-4)


IM2COL_CASES = [  # (batch, C_in, H, W, kernel, stride, padding, dilation)
    (2, 3, 7, 9, (3, 3), (1, 1), (1, 1), (1, 1)),
    (1, 65, 11, 10, (3, 3), (2, 2), (1, 1), (1, 1)),
    (1, 130, 6, 6, (3, 3), (1, 1), (0, 0), (2, 2)),
    (1, 16, 4, 7, (3, 1), (1, 2), (1, 0), (1, 1)),
    (1, 256, 17, 19, (3, 3), (1, 1), (1, 1), (1, 1)),  # 323 pixels: whole vectors and a tail
    (0, 8, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1)),
]


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
@pytest.mark.parametrize("isa", cpu_isas())
@pytest.mark.parametrize("case", IM2COL_CASES)
@pytest.mark.parametrize("nhwc", [False, True])
def test_native_im2col_matches_word_im2col(isa, case, nhwc):
    """The native pack + gather (from NCHW or channels-last memory) equals packing every pixel
    with pack_signs and gathering words in PyTorch, zeros and -0.0 included."""
    B, Cin, H, W, k, s, p, d = case
    x = torch.randn(B, Cin, H, W)
    x[x.abs() < 0.05] = 0.0
    x.view(-1)[::97] = -0.0
    expected, (OH, OW) = im2col_words(pack_signs(x.permute(0, 2, 3, 1).contiguous()), Cin, k, s, p, d)
    xin = x.contiguous(memory_format=torch.channels_last) if nhwc else x
    with _ext.use_cpu_isa(isa):
        out = torch.ops.sparsekit._conv_im2col(xin, list(k), list(s), list(p), list(d), expected.shape[1])
    assert torch.equal(out, expected)


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
def test_native_im2col_checks_arguments():
    im2col = torch.ops.sparsekit._conv_im2col
    x = torch.randn(1, 3, 5, 5)
    assert im2col(x, [3, 3], [1, 1], [1, 1], [1, 1], 9).shape == (25, 9)
    with pytest.raises(ValueError, match="at least kh\\*kw\\*ceil\\(C/64\\) = 9"):
        im2col(x, [3, 3], [1, 1], [1, 1], [1, 1], 8)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        im2col(x, [3, 3], [1, 1], [0, 0], [3, 3], 9)
    with pytest.raises(ValueError, match="stride must be two ints >= 1"):
        im2col(x, [3, 3], [0, 1], [1, 1], [1, 1], 9)
    with pytest.raises(TypeError, match="x must have dtype float32"):
        im2col(x.double(), [3, 3], [1, 1], [1, 1], [1, 1], 9)


def test_straight_through_training_then_frozen_inference():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 3, stride=2, padding=1)
    mod = BinaryConv2d.from_dense(conv, trainable=True)
    x, target = torch.randn(8, 6, 9, 9), torch.randn(8, 4, 5, 5)
    losses = fit(mod, x, target)
    assert losses[-1] < losses[0] and mod.latent_weight.grad is not None
    with torch.no_grad():
        trained = mod(x)  # the float training path, zero padding binarized to +1 as in the kernels
        dense = nn.Conv2d(6, 4, 3, stride=2, padding=1)
        dense.weight.copy_(mod.latent_weight)
        dense.bias.copy_(mod.bias)
        torch.testing.assert_close(trained.double(), _expected(x, dense), rtol=1e-5, atol=1e-4)
    assert_eval_and_freeze_keep_outputs(mod, x, trained)
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    sparsekit.convert(model, BinaryConfig(trainable=True))  # in place
    assert isinstance(model[0], BinaryConv2d) and model[0].latent_weight is not None


def test_opcheck_and_reference_backend():
    conv = nn.Conv2d(10, 4, 3, padding=1)
    mod = BinaryConv2d.from_dense(conv)
    x = torch.randn(2, 10, 5, 6)
    for device in devices():
        m = BinaryConv2d.from_dense(conv.to(device))
        args = (x.to(device), m.weight_packed, m.weight_scale, m.bias.detach(), 10, [3, 3], [1, 1], [1, 1], [1, 1])
        torch.library.opcheck(torch.ops.sparsekit.binary_conv2d.default, args)
    with sparsekit.use_backend("reference"), torch.no_grad():
        torch.testing.assert_close(mod.cpu()(x).double(), _expected(x, conv.cpu()), rtol=1e-5, atol=1e-4)


def test_state_dict_compile_export_and_bytes():
    conv = nn.Conv2d(64, 32, 3, padding=1)
    mod = BinaryConv2d.from_dense(conv)
    assert mod.weight_packed.numel() * 8 * 32 == conv.weight.numel() * 4  # 1 bit per weight
    sd = mod.state_dict()
    fresh = load_into_meta_module(sd, lambda: BinaryConv2d(64, 32, 3, padding=1))
    x = torch.randn(1, 64, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), mod(x), rtol=0, atol=0)
    assert_compiles_and_exports(mod, x, "binary_conv2d")
    with pytest.raises(ValueError, match="padding_h=1 \\(module has 0\\)"):
        BinaryConv2d(64, 32, 3, padding=0).load_state_dict(sd)


def test_bad_input_and_unsupported_layers():
    mod = BinaryConv2d.from_dense(nn.Conv2d(8, 4, 3))
    with pytest.raises(ValueError, match=r"x must have shape \[N, 8, H, W\]"):
        mod(torch.randn(1, 9, 5, 5))
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        mod(torch.randn(8, 5, 5))
    with pytest.raises(ValueError, match="smaller than the"):
        mod(torch.randn(1, 8, 2, 2))
    with pytest.raises(ValueError, match="groups=1"):
        BinaryConv2d.from_dense(nn.Conv2d(8, 8, 3, groups=2))
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(1, 3, 9, 9))
    report = sparsekit.convert(model, BinaryConfig())
    assert [layer.after for layer in report.layers] == ["BinaryConv2d", "BinaryLinear"]


@pytest.mark.parametrize("device, variant", VARIANTS)
def test_padding_bits_of_the_packed_weight_never_count(device, variant):
    """Packed rows whose padding bits are set (3 input channels: 61 padding bits per word): the
    op ignores them as the reference does (the CPU kernel counted them: off by 115), and a
    state dict carrying them is rejected on load with nothing loaded."""
    conv = nn.Conv2d(3, 4, 3, padding=1).to(device)
    mod = BinaryConv2d.from_dense(conv).eval()
    x = torch.randn(2, 3, 6, 6, device=device)
    dirty = mod.weight_packed | ~7  # every bit past the 3 channels set
    args = (mod.weight_scale, mod.bias.detach(), 3, [3, 3], [1, 1], [1, 1], [1, 1])
    with run_variant("reference"):
        expected = torch.ops.sparsekit.binary_conv2d(x, mod.weight_packed, *args)
        assert torch.equal(torch.ops.sparsekit.binary_conv2d(x, dirty, *args), expected)
    with run_variant(variant):
        torch.testing.assert_close(torch.ops.sparsekit.binary_conv2d(x, dirty, *args), expected)
    state = dict(mod.state_dict(), weight_packed=dirty)
    before = mod.weight_packed.clone()
    with pytest.raises(ValueError, match="padding bits"):
        mod.load_state_dict(state)
    assert torch.equal(mod.weight_packed, before)
