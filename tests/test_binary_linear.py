
import pytest
import torch
from torch import nn

import sparsekit
from sparsekit.binary import BinaryConfig, SignSTE, binary_linear_kernels, binary_linear_reference, pack_signs, sign_pm1
from sparsekit.nn import BinaryLinear
from sparsekit.testing import (
    assert_compiles_and_exports,
    assert_eval_and_freeze_keep_outputs,
    devices,
    fit,
    kernel_variants,
    load_into_meta_module,
    run_variant,
)

VARIANTS = [(d, v) for d in devices() for v in kernel_variants(binary_linear_kernels, d) if v != "reference"]


def _expected(x, lin, input_scale):
    """XNOR-Net in float64 from the dense layer: sign(x) sign(W)^T * mean|W_n| (* mean|x_m|) + b."""
    w = lin.weight.detach().double()
    y = sign_pm1(x.double()) @ sign_pm1(w).T * w.abs().mean(dim=1)
    if input_scale:
        y = y * x.double().abs().mean(dim=-1, keepdim=True)
    return y + lin.bias.detach().double() if lin.bias is not None else y


@pytest.mark.parametrize("device, variant", VARIANTS)
@pytest.mark.parametrize("K", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("M", [0, 1, 5])
@pytest.mark.parametrize("input_scale", [False, True])
def test_matches_xnor_net_reference(device, variant, K, M, input_scale):
    lin = nn.Linear(K, 37).to(device)
    mod = BinaryLinear.from_dense(lin, input_scale=input_scale)
    x = torch.randn(M, K, device=device)
    with run_variant(variant), torch.no_grad():
        y = mod(x)
    assert y.shape == (M, 37) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), _expected(x, lin, input_scale), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device, variant", VARIANTS)
@pytest.mark.parametrize("K", [65, 1000])
@pytest.mark.parametrize("input_scale", [False, True])
def test_matches_reference_at_tile_sizes(device, variant, K, input_scale):
    """Enough rows for the AMX kernel and its fused float epilogue (partial tiles on both sides)."""
    lin = nn.Linear(K, 70).to(device)
    mod = BinaryLinear.from_dense(lin, input_scale=input_scale)
    x = torch.randn(150, K, device=device)
    with run_variant(variant), torch.no_grad():
        y = mod(x)
    torch.testing.assert_close(y.double(), _expected(x, lin, input_scale), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device, variant", VARIANTS)
def test_batched_noncontiguous_and_zero_inputs(device, variant):
    lin = nn.Linear(130, 20, bias=False).to(device)
    mod = BinaryLinear.from_dense(lin)
    x = torch.randn(2, 3, 260, device=device)[..., ::2]
    x[0, 0, :7] = 0.0  # sign(0) = +1, as packed
    with run_variant(variant), torch.no_grad():
        y = mod(x)
    torch.testing.assert_close(y.double(), _expected(x, lin, False), rtol=1e-5, atol=1e-4)


def test_reference_op_and_opcheck():
    K, N = 100, 30
    w = torch.randn(N, K)
    args = (torch.randn(4, K), pack_signs(w), w.abs().mean(1), torch.randn(N), K, True)
    for device in devices():
        dev = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(torch.ops.sparsekit.binary_linear.default, dev)
    with sparsekit.use_backend("reference"):
        torch.testing.assert_close(torch.ops.sparsekit.binary_linear(*args), binary_linear_reference(*args))


def test_weights_take_one_bit():
    mod = BinaryLinear.from_dense(nn.Linear(4096, 512))
    fp32_weight_bytes = 4096 * 512 * 4
    assert mod.weight_packed.numel() * mod.weight_packed.element_size() * 32 == fp32_weight_bytes
    assert mod.nbytes == fp32_weight_bytes // 32 + 512 * 4 + 512 * 4  # + scales + bias


def test_state_dict_round_trip_meta_and_mismatch():
    mod = BinaryLinear.from_dense(nn.Linear(70, 9), input_scale=True)
    sd = mod.state_dict()
    assert set(sd) == {"weight_packed", "weight_scale", "format", "bias"}
    fresh = load_into_meta_module(sd, lambda: BinaryLinear(70, 9, input_scale=True))
    x = torch.randn(3, 70)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), mod(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="input_scale=1 \\(module has 0\\)"):
        BinaryLinear(70, 9, input_scale=False).load_state_dict(sd)
    bad = dict(sd, format=sd["format"].clone())
    bad["format"][0] = 7
    with pytest.raises(ValueError, match="format version 7"):
        BinaryLinear(70, 9, input_scale=True).load_state_dict(bad)
    with pytest.raises(RuntimeError, match="weight_packed"):
        BinaryLinear(70, 9, input_scale=True).load_state_dict(dict(sd, weight_packed=torch.zeros(9, 1, dtype=torch.int64)))


def test_compile_and_export():
    model = nn.Sequential(BinaryLinear.from_dense(nn.Linear(70, 40)), nn.ReLU(), nn.Linear(40, 5))
    assert_compiles_and_exports(model, torch.randn(3, 70), "binary_linear")


def test_straight_through_training_then_frozen_inference():
    torch.manual_seed(0)
    lin = nn.Linear(64, 4)
    mod = BinaryLinear.from_dense(lin, trainable=True)
    x = torch.randn(256, 64)
    target = torch.randn(256, 4)
    losses = fit(mod, x, target)
    assert losses[-1] < losses[0]
    # the clipped straight-through estimator: sign() forward, gradient only where |t| <= 1
    t = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], requires_grad=True)
    s = SignSTE.apply(t)
    assert s.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    s.backward(torch.full_like(t, 2.0))
    assert t.grad.tolist() == [0, 2, 2, 2, 2, 2, 0]
    mod.train()
    with torch.no_grad():
        trained = mod(x)
    assert_eval_and_freeze_keep_outputs(mod, x, trained)


def test_convert_and_bad_input():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    report = sparsekit.convert(model, BinaryConfig(), filter_fn=lambda m, name: name == "0")
    assert [layer.name for layer in report.layers] == ["0"] and isinstance(model[0], BinaryLinear)
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 64\]"):
        model[0](torch.randn(2, 65))
    with pytest.raises(TypeError, match="nn.Linear"):
        BinaryLinear.from_dense(nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="weight_scale must have dtype float64"):
        torch.ops.sparsekit.binary_linear(torch.randn(2, 64, dtype=torch.float64), model[0].weight_packed,
                                          model[0].weight_scale, None, 64, False)


# ---------------------------------------------------------------- BinaryConnect (real inputs)

from sparsekit.binary import sign_linear_kernels, sign_linear_reference  # noqa: E402

SIGN_VARIANTS = [(d, v) for d in devices() for v in kernel_variants(sign_linear_kernels, d) if v != "reference"]


def _expected_connect(x, lin):
    w = lin.weight.detach().double()
    y = x.double() @ sign_pm1(w).T * w.abs().mean(dim=1)
    return y + lin.bias.detach().double() if lin.bias is not None else y


@pytest.mark.parametrize("device, variant", SIGN_VARIANTS)
@pytest.mark.parametrize("K", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("M", [0, 1, 3, 9])
def test_binary_connect_matches_reference(device, variant, K, M):
    lin = nn.Linear(K, 21).to(device)
    mod = BinaryLinear.from_dense(lin, binarize_input=False)
    x = torch.randn(M, K, device=device)
    with run_variant(variant), torch.no_grad():
        y = mod(x)
    torch.testing.assert_close(y.double(), _expected_connect(x, lin), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device, variant", SIGN_VARIANTS)
@pytest.mark.parametrize("K", [1, 65, 300])
def test_binary_connect_ignores_padding_bits(device, variant, K):
    """The weight's bits past K may hold anything (a hand-built buffer): they must add nothing."""
    x, w = torch.randn(6, K, device=device), torch.randn(40, K, device=device)
    wp, scale, bias = pack_signs(w), w.abs().mean(1), torch.randn(40, device=device)
    junk = wp.clone()
    if K % 64:
        junk[:, -1] |= torch.full_like(junk[:, -1], -1) << (K % 64)
    with run_variant(variant):
        y = torch.ops.sparsekit.sign_linear(x, junk, scale, bias, K)
    expected = (x.double() @ sign_pm1(w.double()).T) * scale.double() + bias.double()
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device, variant", SIGN_VARIANTS)
def test_binary_connect_batched_noncontiguous(device, variant):
    lin = nn.Linear(100, 7, bias=False).to(device)
    mod = BinaryLinear.from_dense(lin, binarize_input=False)
    x = torch.randn(2, 3, 200, device=device)[..., ::2]
    with run_variant(variant), torch.no_grad():
        torch.testing.assert_close(mod(x).double(), _expected_connect(x, lin), rtol=1e-5, atol=1e-4)


def test_binary_connect_op_training_and_state():
    K, N = 100, 30
    w = torch.randn(N, K)
    args = (torch.randn(4, K), pack_signs(w), w.abs().mean(1), torch.randn(N), K)
    for device in devices():
        dev = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(torch.ops.sparsekit.sign_linear.default, dev)
    with sparsekit.use_backend("reference"):
        torch.testing.assert_close(torch.ops.sparsekit.sign_linear(*args), sign_linear_reference(*args))
    lin = nn.Linear(K, N)
    mod = BinaryLinear.from_dense(lin, binarize_input=False, trainable=True)
    x = torch.randn(8, K, requires_grad=True)
    mod(x).sum().backward()
    assert x.grad is not None and bool((x.grad != 0).any())  # real inputs: no STE on x
    mod.eval()
    with torch.no_grad():
        torch.testing.assert_close(mod(x).double(), _expected_connect(x, lin), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="binarize_input=0 \\(module has 1\\)"):
        BinaryLinear(K, N).load_state_dict(BinaryLinear.from_dense(lin, binarize_input=False).state_dict())
    with pytest.raises(ValueError, match="input_scale applies to binarized inputs"):
        BinaryLinear(K, N, input_scale=True, binarize_input=False)


@pytest.mark.parametrize("binarize_input", [True, False])
def test_padding_bits_of_the_packed_weight(binarize_input):
    """Set padding bits (70 inputs: 58 padding bits in the second word) never count in any
    kernel, and a state dict carrying them is rejected on load with nothing loaded."""
    mod = BinaryLinear.from_dense(nn.Linear(70, 5), binarize_input=binarize_input).eval()
    x = torch.randn(3, 70)
    dirty = mod.weight_packed.clone()
    dirty[:, 1] |= ~((1 << 6) - 1)
    table = binary_linear_kernels if binarize_input else sign_linear_kernels
    extra = (True,) if binarize_input else ()
    op = torch.ops.sparsekit.binary_linear if binarize_input else torch.ops.sparsekit.sign_linear
    with run_variant("reference"):
        expected = op(x, mod.weight_packed, mod.weight_scale, mod.bias.detach(), 70, *extra)
    for variant in kernel_variants(table, "cpu"):
        with run_variant(variant):
            torch.testing.assert_close(op(x, dirty, mod.weight_scale, mod.bias.detach(), 70, *extra), expected)
    state = dict(mod.state_dict(), weight_packed=dirty)
    before = mod.weight_packed.clone()
    with pytest.raises(ValueError, match="padding bits"):
        mod.load_state_dict(state)
    assert torch.equal(mod.weight_packed, before)
