
import pytest
import torch
from torch import nn

import sparsekit
from sparsekit import _ext
from sparsekit.codebook import (
    CodebookConfig,
    cluster_weight,
    codebook_dense,
    codebook_linear_kernels,
    codebook_linear_q8_kernels,
    codebook_linear_q8_reference,
    codebook_linear_reference,
    codebook_q8_error_bound,
    field_bits,
    index_words,
    kmeans_1d,
    pack_indices,
    sqnr_db,
    unpack_indices,
)
from sparsekit.nn import CodebookLinear
from sparsekit.testing import (
    AWKWARD_LINEAR_SHAPES,
    assert_compiles_and_exports,
    cpu_isas,
    devices,
    fit,
    kernel_variants,
    load_into_meta_module,
    run_variant,
)

VARIANTS = [(d, v) for d in devices() for v in kernel_variants(codebook_linear_kernels, d) if v != "reference"]
Q8_VARIANTS = [(d, v) for d in devices() for v in kernel_variants(codebook_linear_q8_kernels, d) if v != "reference"]


def _packed(N, K, bits, group_size, device="cpu"):
    w = torch.randn(N, K, device=device)
    codebook, idx = cluster_weight(w, bits, group_size)
    return pack_indices(idx, bits), codebook, idx


@pytest.mark.parametrize("device, variant", VARIANTS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("M", [1, 3, 5])
def test_full_tiles_over_many_index_words(device, variant, bits, M):
    """Full 16-row tiles whose rows hold more than 16 index words (the table-lookup kernel loads
    and transposes 16 words of 16 rows at a time, then gathers the rest and partial tiles),
    several codebook groups, 1 to 5 activation rows."""
    N, K, gs = 16 * 3 + 5, 611, 20
    packed, codebook, _ = _packed(N, K, bits, gs, device)
    x, bias = torch.randn(M, K, device=device), torch.randn(N, device=device)
    with run_variant(variant):
        y = torch.ops.sparsekit.codebook_linear(x, packed, codebook, bias, K, bits, gs)
    expected = codebook_linear_reference(x.double(), packed, codebook.double(), bias.double(), K, bits, gs)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("K", [1, 7, 16, 33, 100])
def test_index_packing_round_trip_and_layout(bits, K):
    idx = torch.randint(0, 2**bits, (5, K))
    packed = pack_indices(idx, bits)
    assert packed.dtype == torch.int32 and packed.shape == (5, index_words(K, bits))
    assert torch.equal(unpack_indices(packed, bits, K), idx)
    # documented layout: index k in word k // (32 / field) at bit field * (k % (32 / field))
    f = field_bits(bits)
    per = 32 // f
    k = K - 1
    word = packed[:, k // per].long() & 0xFFFFFFFF
    assert torch.equal((word >> (f * (k % per))) & ((1 << f) - 1), idx[:, k])
    with pytest.raises(ValueError, match="indices must be in"):
        pack_indices(torch.full((2, K), 2**bits), bits)


def test_kmeans_is_deterministic_nonempty_and_near_lloyd_max():
    torch.manual_seed(0)
    w = torch.randn(512, 512)
    # Lloyd-Max quantizer SQNR for a Gaussian source: 4.40, 9.30, 14.62, 20.22 dB
    for bits, lloyd_max in [(1, 4.40), (2, 9.30), (3, 14.62), (4, 20.22)]:
        c1, i1 = cluster_weight(w, bits)
        c2, i2 = cluster_weight(w.clone(), bits)
        assert torch.equal(c1, c2) and torch.equal(i1, i2)
        assert torch.bincount(i1.reshape(-1), minlength=2**bits).min() > 0  # no empty cluster
        assert bool((c1[0, 1:] > c1[0, :-1]).all())  # sorted, distinct
        got = sqnr_db(w, codebook_dense(pack_indices(i1, bits), c1, bits, 512, 512))
        assert lloyd_max - 0.35 < got < lloyd_max + 0.1, (bits, got)
    # every weight goes to its nearest centroid; centroids are their members' means
    c, a = kmeans_1d(w.reshape(1, -1), 4)
    d = (w.reshape(1, -1, 1) - c.reshape(1, 1, -1)).abs()
    assert torch.equal(d.argmin(dim=2), a) or bool((d.gather(2, a.unsqueeze(2)).squeeze(2) <= d.min(2).values).all())
    means = torch.stack([w.reshape(-1)[a[0] == j].mean() for j in range(4)])
    torch.testing.assert_close(c[0], means, rtol=1e-5, atol=1e-6)
    # fewer distinct values than clusters: duplicates, no crash; empty rows
    c, a = kmeans_1d(torch.tensor([[0.0, 0.0, 0.0, 1.0]]), 4)
    assert c.shape == (1, 4) and a.tolist() == [[0, 0, 0, 3]]
    assert kmeans_1d(torch.zeros(2, 0), 4)[1].shape == (2, 0)


def test_per_group_codebooks_beat_one_per_tensor():
    torch.manual_seed(0)
    w = torch.randn(256, 128) * torch.linspace(0.1, 3, 256)[:, None]  # row scales vary a lot
    one = sqnr_db(w, codebook_dense(*_pack_dense(w, 2, None)))
    grouped = sqnr_db(w, codebook_dense(*_pack_dense(w, 2, 16)))
    assert grouped > one + 1  # measured: 7.9 dB for one codebook, 9.4 dB with one per 16 rows


def _pack_dense(w, bits, group_size):
    codebook, idx = cluster_weight(w, bits, group_size)
    gs = group_size or w.shape[0]
    return pack_indices(idx, bits), codebook, bits, w.shape[1], gs


@pytest.mark.parametrize("device, variant", VARIANTS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("group_size", [None, 5, 16])
@pytest.mark.parametrize("M, N, K", AWKWARD_LINEAR_SHAPES + [(2, 5, 1), (7, 3, 2)])
def test_kernels_match_reference(device, variant, bits, group_size, M, N, K):
    packed, codebook, _ = _packed(N, K, bits, group_size, device)
    gs = group_size or N
    x, bias = torch.randn(M, K, device=device), torch.randn(N, device=device)
    with run_variant(variant):
        y = torch.ops.sparsekit.codebook_linear(x, packed, codebook, bias, K, bits, gs)
    expected = codebook_linear_reference(x.double(), packed, codebook.double(), bias.double(), K, bits, gs)
    assert y.shape == (M, N)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device, variant", VARIANTS)
@pytest.mark.parametrize("bits", [2, 4])
def test_large_m_path_and_noncontiguous_input(device, variant, bits):
    """Enough rows for the decoded-panel path (and more than one panel), a strided batched x."""
    N, K = 512 + 37, 70  # N: past one panel of csrc/codebook/register.cpp kPanelRows
    packed, codebook, _ = _packed(N, K, bits, 100, device)
    x = torch.randn(2, 40, 2 * K, device=device)[..., ::2]
    with run_variant(variant):
        y = torch.ops.sparsekit.codebook_linear(x, packed, codebook, None, K, bits, 100)
    expected = codebook_linear_reference(x.double(), packed, codebook.double(), None, K, bits, 100)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)


def test_opcheck_and_centroid_gradients():
    K, N, bits, gs = 30, 12, 2, 5
    packed, codebook, idx = _packed(N, K, bits, gs)
    x, bias = torch.randn(4, K, dtype=torch.float64), torch.randn(N, dtype=torch.float64)
    args = (x, packed, codebook.double(), bias, K, bits, gs)
    torch.library.opcheck(torch.ops.sparsekit.codebook_linear.default, args)
    cb = codebook.double().requires_grad_()
    xg = x.clone().requires_grad_()
    torch.autograd.gradcheck(lambda a, c, b: torch.ops.sparsekit.codebook_linear(a, packed, c, b, K, bits, gs),
                             (xg, cb, bias.clone().requires_grad_()))
    # a centroid's gradient is the sum of its members' weight gradients (Deep Compression)
    y = torch.ops.sparsekit.codebook_linear(x, packed, cb, None, K, bits, gs)
    g = torch.randn_like(y)
    y.backward(g)
    gw = g.T @ x
    group = (torch.arange(N) // gs)[:, None].expand(N, K)
    expected = torch.zeros_like(cb).index_put_((group, idx), gw, accumulate=True)
    torch.testing.assert_close(cb.grad, expected)


def test_module_state_dict_meta_compile_export_and_bytes():
    lin = nn.Linear(70, 40)
    mod = CodebookLinear.from_dense(lin, bits=2, group_size=16)
    assert mod.codebook.shape == (3, 4) and mod.indices.shape == (40, 5)
    assert mod.nbytes == 40 * 5 * 4 + 3 * 4 * 4 + 40 * 4
    sd = mod.state_dict()
    assert set(sd) == {"codebook", "indices", "format", "bias"}
    fresh = load_into_meta_module(sd, lambda: CodebookLinear(70, 40, bits=2, group_size=16))
    x = torch.randn(3, 70)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), mod(x), rtol=0, atol=0)
        torch.testing.assert_close(mod(x), nn.functional.linear(x, mod.dense_weight(), lin.bias))
    with pytest.raises(ValueError, match="bits=2 \\(module has 3\\)"):
        CodebookLinear(70, 40, bits=3, group_size=16).load_state_dict(sd)
    with pytest.raises(ValueError, match="group_size=16 \\(module has 40\\)"):
        CodebookLinear(70, 40, bits=2).load_state_dict(sd)
    bad = dict(sd, format=sd["format"].clone())
    bad["format"][0] = 9
    with pytest.raises(ValueError, match="format version 9"):
        CodebookLinear(70, 40, bits=2, group_size=16).load_state_dict(bad)
    m3 = CodebookLinear.from_dense(lin, bits=3)
    sd3 = m3.state_dict()
    sd3["indices"] = sd3["indices"].clone()
    sd3["indices"][0, 0] |= 0xF  # a 3-bit index of 15
    with pytest.raises(ValueError, match="an index is >= 8"):
        CodebookLinear(70, 40, bits=3).load_state_dict(sd3)
    assert_compiles_and_exports(nn.Sequential(mod, nn.ReLU(), nn.Linear(40, 5)), x, "codebook_linear")



def _corrupt_3bit(packed, where):
    """A copy of 3-bit index words [N, 2] (K = 13) with one field set to >= 8: an index in use
    (index 10 of row 7) or a padding field past K (index 14)."""
    bad = packed.clone()
    bad[7, 1] |= (9 << 8) if where == "used" else (8 << 24)
    return bad


@pytest.mark.parametrize("variant", ["reference"] + [f"cpu:{isa}" for isa in cpu_isas()])
@pytest.mark.parametrize("M", [0, 1, 40])  # no kernel; table lookup; decoded panels (cpu, exact)
@pytest.mark.parametrize("where", ["used", "padding"])
def test_a_3bit_index_of_8_or_more_is_rejected_on_every_path(variant, M, where):
    """3-bit indices sit in 4-bit fields, which can hold 8..15: no centroid has such an index.
    Every path raises ValueError for one (the native kernels read it modulo 8, the reference
    raised IndexError)."""
    N, K = 20, 13
    packed, cb, _ = _packed(N, K, 3, 5)
    bad, x = _corrupt_3bit(packed, where), torch.randn(M, K)
    with run_variant(variant):
        for op in (torch.ops.sparsekit.codebook_linear, torch.ops.sparsekit.codebook_linear_q8):
            op(x, packed, cb, None, K, 3, 5)  # the valid indices run
            with pytest.raises(ValueError, match="an index is >= 8"):
                op(x, bad, cb, None, K, 3, 5)
    with pytest.raises(ValueError, match="an index is >= 8"):
        codebook_dense(bad, cb, 3, K, 5)


@pytest.mark.parametrize("where", ["used", "padding"])
def test_module_rejects_3bit_indices_of_8_or_more(where):
    mod = CodebookLinear.from_dense(nn.Linear(13, 20), bits=3, group_size=5)
    sd = mod.state_dict()
    sd["indices"] = _corrupt_3bit(sd["indices"], where)
    with pytest.raises(ValueError, match="corrupted codebook state: indices: an index is >= 8"):
        CodebookLinear(13, 20, bits=3, group_size=5).load_state_dict(sd)
    with pytest.raises(ValueError, match="an index is >= 8"):  # built on meta, the loaded tensors assigned
        load_into_meta_module(sd, lambda: CodebookLinear(13, 20, bits=3, group_size=5))
    with torch.no_grad():  # written in place, past the load-time check: the forward pass raises
        mod.indices.copy_(sd["indices"])
        for compute in CodebookLinear.COMPUTE:
            mod.compute = compute
            for backend in ("reference", "cpu") if _ext.available() else ("reference",):
                with sparsekit.use_backend(backend), pytest.raises(ValueError, match="an index is >= 8"):
                    mod(torch.randn(3, 13))
    with pytest.raises(ValueError, match="an index is >= 8"):
        mod.dense_weight()

def test_fine_tuning_moves_centroids_not_indices():
    torch.manual_seed(0)
    lin = nn.Linear(32, 8)
    mod = CodebookLinear.from_dense(lin, bits=2)
    indices = mod.indices.clone()
    x, target = torch.randn(128, 32), torch.randn(128, 8)
    losses = fit(mod, x, target, steps=30)
    assert losses[-1] < losses[0] and torch.equal(mod.indices, indices)


@pytest.mark.parametrize("group_size", [None, 3])
def test_keep_zeros_pins_a_zero_centroid_through_fine_tuning(group_size):
    torch.manual_seed(0)
    lin = nn.Linear(40, 9)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(9, 40) > 0.8)  # a pruned layer: 80% exact zeros
        lin.weight[4] = 0  # a whole row pruned
    zeros = lin.weight == 0
    mod = CodebookLinear.from_dense(lin, bits=2, group_size=group_size, keep_zeros=True)
    idx = unpack_indices(mod.indices, 2, 40)
    assert torch.equal(idx == 0, zeros) and bool((mod.codebook[:, 0] == 0).all())
    assert torch.equal(mod.dense_weight() == 0, zeros) and "keep_zeros=True" in repr(mod)
    plain = CodebookLinear.from_dense(lin, bits=2, group_size=group_size)
    nz = ~zeros
    err = (mod.dense_weight() - lin.weight).abs()[nz].mean()
    assert err < 0.4 * lin.weight.abs()[nz].mean()  # three centroids share the survivors (measured 0.33)
    x, target = torch.randn(64, 40), torch.randn(64, 9)
    opt = torch.optim.SGD(mod.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.mse_loss(mod(x), target).backward()
        opt.step()
    assert bool((mod.codebook[:, 0] == 0).all()) and bool((mod.codebook[:, 1:] != plain.codebook[:, 1:]).any())
    assert torch.equal(mod.dense_weight() == 0, zeros)  # pruned weights stay pruned
    with pytest.raises(ValueError, match="keep_zeros needs bits >= 2"):
        CodebookLinear.from_dense(lin, bits=1, keep_zeros=True)
    model = nn.Sequential(nn.Linear(40, 9))
    model[0].load_state_dict(lin.state_dict())
    sparsekit.convert(model, CodebookConfig(bits=2, keep_zeros=True))
    assert model[0].keep_zeros and torch.equal(model[0].dense_weight() == 0, zeros)


def test_convert_and_bad_input():
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
    report = sparsekit.convert(model, CodebookConfig(bits=2, group_size=8))
    assert [layer.after for layer in report.layers] == ["CodebookLinear", "CodebookLinear"]
    assert model[0].group_size == 8 and model[0].bits == 2
    with pytest.raises(ValueError, match="bits must be one of"):
        CodebookLinear(4, 4, bits=5)
    with pytest.raises(TypeError, match="nn.Linear"):
        CodebookLinear.from_dense(nn.Conv2d(3, 3, 1))
    mod = CodebookLinear.from_dense(nn.Linear(20, 6))
    with pytest.raises(ValueError, match=r"x must have shape \[..., 20\]"):
        mod(torch.randn(3, 21))
    with pytest.raises(TypeError, match="x must have dtype"):
        mod(torch.ones(3, 20, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"codebook must have shape \[1, 4\]"):
        torch.ops.sparsekit.codebook_linear(torch.randn(2, 20), mod.indices, torch.zeros(2, 4), None, 20, 2, 6)


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
def test_native_entry_points_check_arguments():
    op, decode = torch.ops.sparsekit.codebook_linear, torch.ops.sparsekit._codebook_decode
    x = torch.randn(2, 20)
    idx, cb = torch.zeros(6, 2, dtype=torch.int32), torch.zeros(1, 4)
    with sparsekit.use_backend("cpu"):
        with pytest.raises(ValueError, match=r"indices must have shape \[6, 2\]"):
            op(x, torch.zeros(6, 1, dtype=torch.int32), cb, None, 20, 2, 6)
        with pytest.raises(ValueError, match=r"codebook must have shape \[2, 4\]"):
            op(x, idx, cb, None, 20, 2, 3)
        with pytest.raises(ValueError, match="bits must be 1, 2, 3 or 4"):
            op(x, idx, cb, None, 20, 5, 6)
        with pytest.raises(TypeError, match="indices must have dtype int32"):
            op(x, idx.long(), cb, None, 20, 2, 6)
    with pytest.raises(ValueError, match="codebook has 1 groups"):
        decode(idx, cb, 20, 2, 3, 0)
    assert decode(idx, cb, 20, 2, 6, 0).shape == (6, 20)


@pytest.mark.parametrize("device, variant", Q8_VARIANTS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("group_size", [None, 5])
@pytest.mark.parametrize(
    "M, N, K", AWKWARD_LINEAR_SHAPES + [(40, 96, 130), (17, 33, 64), (2, 5, 1), (20, 3, 2), (5, 70, 300)]
)
def test_int8_option_matches_its_reference_within_the_stated_bound(device, variant, bits, group_size, M, N, K):
    """The opt-in int8 compute: every kernel equals the int8 reference (integer sums are exact; only
    the final scaling rounds), and the int8 reference is within codebook_q8_error_bound of the exact
    product."""
    packed, codebook, _ = _packed(N, K, bits, group_size, device)
    gs = group_size or N
    x, bias = torch.randn(M, K, device=device), torch.randn(N, device=device)
    x[:, 0] = 0.0
    with run_variant(variant):
        y = torch.ops.sparsekit.codebook_linear_q8(x, packed, codebook, bias, K, bits, gs)
    q8 = codebook_linear_q8_reference(x.double(), packed, codebook, bias.double(), K, bits, gs)
    torch.testing.assert_close(y.double(), q8, rtol=1e-5, atol=1e-4)
    exact = codebook_linear_reference(x.double(), packed, codebook.double(), bias.double(), K, bits, gs)
    bound = codebook_q8_error_bound(x, packed, codebook, K, bits, gs)
    assert bool(((q8 - exact).abs() <= bound + 1e-9).all())


def test_int8_option_in_the_module():
    lin = nn.Linear(100, 48)
    x = torch.randn(20, 100)
    mod = CodebookLinear.from_dense(lin, bits=2, group_size=16, compute="int8")
    assert "compute='int8'" in repr(mod) and "compute" not in mod.state_dict()
    with torch.no_grad():
        y = mod(x)
    expected = codebook_linear_q8_reference(x, mod.indices, mod.codebook.detach(), mod.bias.detach(), 100, 2, 16)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-4)
    exact = CodebookLinear.from_dense(lin, bits=2, group_size=16)
    with torch.no_grad():
        assert not torch.equal(exact(x), y)  # the option changes results: it is never the default
    torch.testing.assert_close(assert_compiles_and_exports(mod, x, "codebook_linear_q8"), y)
    with pytest.raises(RuntimeError, match="inference option"):
        mod(x.requires_grad_())
    with pytest.raises(ValueError, match="compute must be one of"):
        CodebookLinear(4, 4, compute="int4")
    torch.library.opcheck(torch.ops.sparsekit.codebook_linear_q8.default,
                          (torch.randn(3, 100), mod.indices, mod.codebook.detach(), None, 100, 2, 16))


def test_int8_module_follows_its_tensors():
    """The module reads its tensors as they are on every call (nothing is kept between calls):
    it gives what the op gives on its current tensors after one is written in place, replaced,
    or the module copied."""
    import copy

    mod = CodebookLinear.from_dense(nn.Linear(70, 33), bits=2, group_size=8, compute="int8").eval()
    x = torch.randn(1, 70)

    def via_op(m, inp):
        return torch.ops.sparsekit.codebook_linear_q8(inp, m.indices, m.codebook.detach(), m.bias.detach(), 70, 2, 8)

    with torch.no_grad():
        assert torch.equal(mod(x), via_op(mod, x))
        mod.codebook.mul_(2)  # in place: a new version
        assert torch.equal(mod(x), via_op(mod, x))
        mod.codebook.data.mul_(-1)  # through .data: the version counter does not move
        assert torch.equal(mod(x), via_op(mod, x))
        mod.codebook.data = torch.randn_like(mod.codebook)  # a new tensor behind the same parameter
        assert torch.equal(mod(x), via_op(mod, x))
        mod.bias = nn.Parameter(torch.randn(33))  # replaced
        assert torch.equal(mod(x), via_op(mod, x))
        twin = copy.deepcopy(mod)
        twin.codebook.add_(1)
        assert torch.equal(twin(x), via_op(twin, x)) and not torch.equal(twin(x), mod(x))
        assert torch.equal(mod(x), via_op(mod, x))
        xt = torch.randn(70, 5).T  # non-contiguous and 3-D inputs take the op's path
        assert torch.equal(mod(xt), via_op(mod, xt.contiguous()))
        assert torch.equal(mod(xt.reshape(1, 5, 70)), via_op(mod, xt.contiguous()).reshape(1, 5, 33))
        with sparsekit.use_backend("reference"):  # a forced backend is obeyed
            ref = mod(x)
        torch.testing.assert_close(ref, via_op(mod, x), rtol=1e-5, atol=1e-4)
        with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 70\]"):
            mod(torch.randn(1, 69))
        with pytest.raises(TypeError, match="x must have dtype"):
            mod(torch.ones(1, 70, dtype=torch.int32))


@pytest.mark.parametrize("device, variant", Q8_VARIANTS)
def test_int8_option_with_several_activation_blocks(device, variant):
    """Enough activation rows x K for the AMX kernel to quantize them in more than one block."""
    M, N, K = 300, 40, 4100
    packed, codebook, _ = _packed(N, K, 2, 16, device)
    x = torch.randn(M, K, device=device)
    with run_variant(variant):
        y = torch.ops.sparsekit.codebook_linear_q8(x, packed, codebook, None, K, 2, 16)
    q8 = codebook_linear_q8_reference(x.double(), packed, codebook, None, K, 2, 16)
    torch.testing.assert_close(y.double(), q8, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("device, variant", Q8_VARIANTS)
@pytest.mark.parametrize("M", [3, 40])  # the small-M and the blocked paths
def test_int8_option_nan_inf_rule(device, variant, M):
    """The int8 option's documented NaN/Inf rule on every kernel: a row of x holding an Inf or
    a NaN gives an all-NaN output row, a group with a non-finite centroid all-NaN columns; every
    other output is what finite inputs give (a NaN used to turn into finite numbers)."""
    N, K, group = 24, 100, 8
    packed, codebook, _ = _packed(N, K, 2, group, device)
    x = torch.randn(M, K, device=device)
    x[0, 5], x[1, K - 1], x[2, 0] = float("nan"), float("inf"), -float("inf")
    codebook[1, 2] = float("nan")  # the group of outputs 8..15
    codebook[2, 0] = float("inf")  # 16..23
    with run_variant(variant):
        y = torch.ops.sparsekit.codebook_linear_q8(x, packed, codebook, None, K, 2, group)
    expected_nan = torch.zeros(M, N, dtype=torch.bool)
    expected_nan[:3] = True
    expected_nan[:, 8:] = True
    assert torch.equal(torch.isnan(y).cpu(), expected_nan)
    ref = codebook_linear_q8_reference(x, packed, codebook, None, K, 2, group)
    assert torch.equal(torch.isnan(ref).cpu(), expected_nan)
    torch.testing.assert_close(y[3:, :8], ref[3:, :8], rtol=1e-5, atol=1e-4)
