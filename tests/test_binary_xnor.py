import pytest
import torch

import sparsekit
from sparsekit import _ext
from sparsekit.binary import WORD_BITS, pack_signs, packed_words, unpack_signs, xnor_gemm_kernels, xnor_gemm_reference
from sparsekit.testing import devices, kernel_variants, run_variant

VARIANTS = [(d, v) for d in devices() for v in kernel_variants(xnor_gemm_kernels, d) if v != "reference"]
KS = [1, 63, 64, 65, 127, 1000]


def _signs(t):
    return torch.where(t >= 0, 1.0, -1.0)


@pytest.mark.parametrize("K", KS)
def test_pack_unpack_round_trip_and_bit_order(K):
    x = torch.randn(3, 2, K)
    x[0, 0, 0] = 0.0  # sign(0) is +1
    words = pack_signs(x)
    assert words.dtype == torch.int64 and words.shape == (3, 2, packed_words(K))
    torch.testing.assert_close(unpack_signs(words, K), _signs(x), rtol=0, atol=0)
    # documented order: element k -> word k // 64, bit k % 64; padding bits are zero
    k = K - 1
    bit = (words[..., k // WORD_BITS] >> (k % WORD_BITS)) & 1
    assert torch.equal(bit.bool(), x[..., k] >= 0)
    if K % WORD_BITS:
        pad = words[..., -1] >> (K % WORD_BITS)
        assert bool((pad == 0).all())


def test_pack_rejects_bad_input():
    with pytest.raises(TypeError, match="floating point"):
        pack_signs(torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="at least one dimension"):
        pack_signs(torch.tensor(1.0))
    with pytest.raises(ValueError, match="2 words per row for K=100"):
        unpack_signs(torch.zeros(3, 1, dtype=torch.int64), 100)


def test_every_cpu_isa_is_tested_here():
    names = [v for _, v in VARIANTS]
    if _ext.available():
        assert {f"cpu:{i}" for i in _ext.supported_isas()} <= set(names)


@pytest.mark.parametrize("device, variant", VARIANTS)
@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("M, N", [(0, 5), (1, 1), (1, 9), (5, 7), (13, 70)])
def test_xnor_gemm_is_bit_exact(device, variant, K, M, N):
    a, b = torch.randn(M, K, device=device), torch.randn(N, K, device=device)
    pa, pb = pack_signs(a), pack_signs(b)
    with run_variant(variant):
        y = torch.ops.sparsekit.xnor_gemm(pa, pb, K)
    assert y.dtype == torch.int32 and y.shape == (M, N)
    expected = (_signs(a).double() @ _signs(b).double().T).round().int()
    assert torch.equal(y.cpu(), expected.cpu())
    assert torch.equal(xnor_gemm_reference(pa, pb, K).cpu(), expected.cpu())


@pytest.mark.parametrize("device, variant", VARIANTS)
@pytest.mark.parametrize("K", [1, 65, 1000])
@pytest.mark.parametrize("M, N", [(96, 64), (130, 70), (200, 257)])
def test_xnor_gemm_is_bit_exact_at_tile_sizes(device, variant, K, M, N):
    """Row counts where the AMX kernel takes over (>= 96 rows), with partial tiles on every side."""
    a, b = torch.randn(M, K, device=device), torch.randn(N, K, device=device)
    with run_variant(variant):
        y = torch.ops.sparsekit.xnor_gemm(pack_signs(a), pack_signs(b), K)
    expected = (_signs(a).double() @ _signs(b).double().T).round().int()
    assert torch.equal(y.cpu(), expected.cpu())


@pytest.mark.parametrize("device, variant", VARIANTS)
def test_xnor_gemm_noncontiguous_packed_inputs(device, variant):
    K = 200
    pa = pack_signs(torch.randn(6, K, device=device)).t().contiguous().t()  # column-major view
    pb1, pb2 = pack_signs(torch.randn(4, K, device=device)), pack_signs(torch.randn(4, K, device=device))
    pb = torch.stack([pb1, pb2], dim=2).reshape(4, -1)[:, ::2]  # every other word: pb1, strided
    assert not pa.is_contiguous() and not pb.is_contiguous() and torch.equal(pb, pb1)
    with run_variant(variant):
        y = torch.ops.sparsekit.xnor_gemm(pa, pb, K)
    assert torch.equal(y.cpu(), xnor_gemm_reference(pa.contiguous(), pb1, K).cpu())


@pytest.mark.parametrize("device, variant", VARIANTS)
@pytest.mark.parametrize("K", [1, 65, 600])
@pytest.mark.parametrize("M, N, junk_in", [(5, 6, "a"), (5, 6, "b"), (120, 70, "a"), (120, 70, "b")])
def test_xnor_gemm_ignores_padding_bits(device, variant, K, M, N, junk_in):
    a, b = torch.randn(M, K, device=device), torch.randn(N, K, device=device)
    pa, pb = pack_signs(a), pack_signs(b)
    p = pa if junk_in == "a" else pb
    junk = torch.full_like(p[:, -1], -1) << (K % WORD_BITS) if K % WORD_BITS else 0
    p[:, -1] |= junk  # set every padding bit of one operand
    with run_variant(variant):
        y = torch.ops.sparsekit.xnor_gemm(pa, pb, K)
    assert torch.equal(y.cpu(), (_signs(a).double() @ _signs(b).double().T).round().int().cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kernel", ["popc", "b1"])
@pytest.mark.parametrize("K", [1, 65, 128, 1000])
@pytest.mark.parametrize("M, N", [(1, 1), (5, 7), (33, 70), (200, 257)])
def test_cuda_xnor_kernels_are_bit_exact(kernel, K, M, N):
    """Both CUDA kernels (integer popcount; 1-bit tensor cores), each forced, junk padding bits included."""
    from sparsekit.binary import cuda as binary_cuda

    if kernel == "b1" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("the b1 tensor-core kernel needs sm_80+")
    a, b = torch.randn(M, K, device="cuda"), torch.randn(N, K, device="cuda")
    pa, pb = pack_signs(a), pack_signs(b)
    if K % WORD_BITS:
        pa[:, -1] |= torch.full_like(pa[:, -1], -1) << (K % WORD_BITS)
    with binary_cuda.use_cuda_xnor_kernel(kernel), sparsekit.use_backend("cuda"):
        y = torch.ops.sparsekit.xnor_gemm(pa, pb, K)
    assert torch.equal(y.cpu(), (_signs(a).double() @ _signs(b).double().T).round().int().cpu())


@pytest.mark.parametrize("device", devices())
def test_xnor_gemm_opcheck(device):
    pa, pb = pack_signs(torch.randn(5, 100, device=device)), pack_signs(torch.randn(3, 100, device=device))
    torch.library.opcheck(torch.ops.sparsekit.xnor_gemm.default, (pa, pb, 100))
    torch.library.opcheck(torch.ops.sparsekit.xnor_gemm.default, (pa[:0], pb, 100))


@pytest.mark.parametrize(
    "a, b, K, exc, match",
    [
        (torch.zeros(2, 2, dtype=torch.int32), torch.zeros(2, 2, dtype=torch.int64), 100, TypeError, "a must have dtype int64"),
        (torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64), 100, ValueError, r"b must have shape \[2, 2\]"),
        (torch.zeros(2, 1, dtype=torch.int64), torch.zeros(2, 1, dtype=torch.int64), 100, ValueError, r"a must have shape \[2, 2\]"),
        (torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int64, device="meta"), 100, ValueError, "must be on cpu"),
        (torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int64), -1, ValueError, "K must be >= 0"),
        (torch.zeros(2, 2, 1, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int64), 100, ValueError, "a must have 2 dimensions"),
    ],
)
def test_xnor_gemm_bad_input(a, b, K, exc, match):
    with pytest.raises(exc, match=match):
        torch.ops.sparsekit.xnor_gemm(a, b, K)


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
def test_native_xnor_gemm_checks_word_count():
    a = torch.zeros(2, 1, dtype=torch.int64)
    with sparsekit.use_backend("cpu"):
        with pytest.raises(ValueError, match=r"a must have shape \[2, 2\], got \[2, 1\]"):
            torch.ops.sparsekit.xnor_gemm(a, a, 100)
        with pytest.raises(TypeError, match="a must have dtype int64"):
            torch.ops.sparsekit.xnor_gemm(a.int(), a, 64)
        y = torch.ops.sparsekit.xnor_gemm(a, a, 64)
    assert bool((y == 64).all())
