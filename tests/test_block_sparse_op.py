import subprocess
import sys

import pytest
import torch

import sparsekit
from sparsekit import _ext
from sparsekit.block_sparse import BSRWeight, bsr_linear_kernels, bsr_linear_reference
from sparsekit.testing import AWKWARD_LINEAR_SHAPES, devices, kernel_variants, run_variant

VARIANTS = [(d, v) for d in devices() for v in kernel_variants(bsr_linear_kernels, d) if v != "reference"]


def _is_interpreted(device, variant):
    return variant == "triton" and device == "cpu"


def _cases(*axes, small=lambda *case: True):
    """(device, variant, *case) for every variant; the Triton interpreter (slow) gets only the
    cases that ``small`` accepts; on a GPU, Triton runs them all."""
    import itertools

    out = []
    for device, variant in VARIANTS:
        for case in itertools.product(*axes):
            if not _is_interpreted(device, variant) or small(*case):
                out.append((device, variant, *case))
    return out


def _make(N, K, block, sparsity, device="cpu", dtype=torch.float32, bias=True):
    w = BSRWeight.from_dense(torch.randn(N, K), block, sparsity=sparsity)
    args = [w.values.to(device, dtype), w.col_indices.to(device), w.row_offsets.to(device)]
    b = torch.randn(N, device=device, dtype=dtype) if bias else None
    return args, b


def _check(x, args, b, N, K, variant, rtol=1e-4, atol=1e-4):
    expected = bsr_linear_reference(x.double(), args[0].double(), *args[1:], None if b is None else b.double(), N, K)
    with run_variant(variant):
        y = torch.ops.sparsekit.bsr_linear(x, *args, b, N, K)
    assert y.shape == (*x.shape[:-1], N) and y.dtype == x.dtype and y.device == x.device
    torch.testing.assert_close(y.double(), expected, rtol=rtol, atol=atol)


def test_every_backend_is_tested_here():
    # the CPU machine runs the native kernels for every ISA it supports, and Triton interpreted
    names = [v for _, v in VARIANTS]
    assert any(v.startswith("cpu:") for v in names)
    assert "cpu:portable" in names


@pytest.mark.parametrize(
    "device, variant, MNK, block",
    _cases(AWKWARD_LINEAR_SHAPES, [(16, 16), (32, 32), (1, 32), (8, 4), (3, 8), (5, 12)],
           small=lambda mnk, block: mnk[0] <= 16 and block in ((16, 16), (32, 32), (1, 32))),
)
def test_matches_reference_on_awkward_shapes(device, variant, MNK, block):
    M, N, K = MNK
    args, b = _make(N, K, block, 0.5, device)
    _check(torch.randn(M, K, device=device), args, b, N, K, variant)


@pytest.mark.parametrize("device, variant, sparsity, M", _cases([0.0, 1.0], [1, 3, 80], small=lambda s, m: m <= 3))
def test_zero_and_full_sparsity(device, variant, sparsity, M):
    N, K = 70, 45
    args, b = _make(N, K, (16, 16), sparsity, device)
    _check(torch.randn(M, K, device=device), args, b, N, K, variant)


@pytest.mark.parametrize("device, variant, M", _cases([1, 5, 100], small=lambda m: m <= 5))
def test_empty_block_rows_and_skewed_rows(device, variant, M):
    N, K, block = 96, 160, (16, 16)
    mask = torch.zeros(6, 10, dtype=torch.bool)
    mask[0] = True  # one full row, the rest mostly empty
    mask[3, 2] = True
    w = BSRWeight.from_dense(torch.randn(N, K), block, mask=mask)
    args = [w.values.to(device), w.col_indices.to(device), w.row_offsets.to(device)]
    _check(torch.randn(M, K, device=device), args, None, N, K, variant)


@pytest.mark.parametrize("device, variant", VARIANTS)
def test_batched_and_noncontiguous_inputs(device, variant):
    N, K = 48, 40
    args, b = _make(N, K, (16, 8), 0.4, device)
    base = torch.randn(2, 3, 2 * K, device=device)
    x = base[..., ::2]  # strided last dim
    assert not x.is_contiguous()
    _check(x, args, b, N, K, variant)
    xt = torch.randn(K, 5, device=device).t()  # transposed view
    _check(xt, args, None, N, K, variant)


@pytest.mark.parametrize("variant", [v for d, v in VARIANTS if d == "cpu" and v.startswith("cpu:")])
@pytest.mark.parametrize("block", [(16, 16), (32, 32), (1, 32), (8, 4)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_large_m_panel_schedules(variant, block, threads):
    # many activation rows: threads take whole panels, the output goes out in chunks of
    # block rows (N = 300 is not a multiple of a chunk); few rows: threads share a panel
    N, K = 300, 70
    args, b = _make(N, K, block, 0.5, "cpu")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for M in (450, 97):
            _check(torch.randn(M, K), args, b, N, K, variant)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("variant", [v for d, v in VARIANTS if d == "cpu" and v.startswith("cpu:")])
def test_fully_dense_weight_at_large_m_is_exact(variant):
    N, K = 64, 64
    args, b = _make(N, K, (16, 16), 0.0, "cpu")
    _check(torch.randn(53, K), args, b, N, K, variant)


@pytest.mark.parametrize("M", [3, 64])
def test_weights_are_read_as_they_are_on_every_call(M):
    """No weight-derived state survives a call: an in-place write, a write through ``.data``
    (which does not move the version counter) and a replaced tensor are all seen."""
    N, K = 64, 64
    w = BSRWeight.from_dense(torch.randn(N, K), (16, 16), sparsity=0.0)
    values = w.values.clone()
    x = torch.randn(M, K)
    with sparsekit.use_backend("cpu"):
        def run(v):
            return torch.ops.sparsekit.bsr_linear(x, v, w.col_indices, w.row_offsets, None, N, K)

        y1 = run(values)
        values.mul_(2)
        torch.testing.assert_close(run(values), 2 * y1)
        values.data.mul_(2)
        torch.testing.assert_close(run(values), 4 * y1)
        values.data = torch.zeros_like(values)
        assert bool((run(values) == 0).all())


@pytest.mark.parametrize("device, variant", [(d, v) for d, v in VARIANTS if d == "cuda"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_gpu(device, variant, dtype):
    N, K = 256, 320
    args, b = _make(N, K, (32, 32), 0.7, device, dtype)
    _check(torch.randn(100, K, device=device, dtype=dtype), args, b, N, K, variant, rtol=2e-2, atol=5e-2)


# ---------------------------------------------------------------- autograd


def test_gradcheck_reference_fp64():
    N, K = 20, 24
    w = BSRWeight.from_dense(torch.randn(N, K, dtype=torch.float64), (8, 8), sparsity=0.5)
    x = torch.randn(3, K, dtype=torch.float64, requires_grad=True)
    v = w.values.clone().requires_grad_(True)
    b = torch.randn(N, dtype=torch.float64, requires_grad=True)
    with sparsekit.use_backend("reference"):
        assert torch.autograd.gradcheck(
            lambda x, v, b: torch.ops.sparsekit.bsr_linear(x, v, w.col_indices, w.row_offsets, b, N, K), (x, v, b)
        )


@pytest.mark.parametrize("device, variant", VARIANTS)
def test_gradients_match_masked_dense(device, variant):
    N, K, block = 40, 50, (16, 16)
    dense = torch.randn(N, K, device=device)
    w = BSRWeight.from_dense(dense, block, sparsity=0.5)
    x = torch.randn(2, 3, K, device=device, requires_grad=True)
    v = w.values.clone().requires_grad_(True)
    b = torch.randn(N, device=device, requires_grad=True)
    with run_variant(variant):
        y = torch.ops.sparsekit.bsr_linear(x, v, w.col_indices, w.row_offsets, b, N, K)
    g = torch.randn_like(y)
    y.backward(g)
    x2 = x.detach().clone().requires_grad_(True)
    wd = w.dense_weight().clone().requires_grad_(True)
    b2 = b.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x2, wd, b2).backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.grad, b2.grad, rtol=1e-4, atol=1e-4)
    # the gradient of each stored block is the dense gradient of that block, and nothing else is computed
    expected_blocks = BSRWeight.from_dense(wd.grad, block, mask=w.block_mask()).values
    assert v.grad.shape == v.shape
    torch.testing.assert_close(v.grad, expected_blocks, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", devices())
def test_opcheck(device):
    N, K = 33, 40
    w = BSRWeight.from_dense(torch.randn(N, K), (16, 16), sparsity=0.5)
    cols, rows = w.col_indices.to(device), w.row_offsets.to(device)
    for bias in (None, torch.randn(N, device=device)):
        for x in (torch.randn(5, K, device=device), torch.randn(2, 0, K, device=device)):
            args = (x, w.values.to(device).clone().requires_grad_(True), cols, rows, bias, N, K)
            torch.library.opcheck(torch.ops.sparsekit.bsr_linear.default, args)
    torch.library.opcheck(torch.ops.sparsekit.bsr_sddmm.default,
                          (torch.randn(5, N, device=device), torch.randn(5, K, device=device), cols, rows, 16, 16))
    torch.library.opcheck(torch.ops.sparsekit.bsr_transpose.default, (w.values.to(device), cols, rows, N, K))


# ---------------------------------------------------------------- bad input


def _bad_call(**over):
    N, K = 64, 64
    w = BSRWeight.from_dense(torch.randn(N, K), 32, sparsity=0.5)
    kw = dict(x=torch.randn(3, K), values=w.values, col_indices=w.col_indices, row_offsets=w.row_offsets,
              bias=torch.randn(N), out_features=N, in_features=K)
    kw.update(over)
    return torch.ops.sparsekit.bsr_linear(*kw.values())


@pytest.mark.parametrize(
    "over, exc, match",
    [
        (dict(x=torch.randn(3, 65)), ValueError, r"x must have shape \[\.\.\., 64\]"),
        (dict(x=torch.randn(3, 64, dtype=torch.float64)), TypeError, "values must have the dtype of x"),
        (dict(x=torch.ones(3, 64, dtype=torch.int32)), TypeError, "x must have dtype"),
        (dict(col_indices=torch.zeros(2, dtype=torch.int64)), TypeError, "col_indices must have dtype int32"),
        (dict(row_offsets=torch.zeros(4, dtype=torch.int32)), ValueError, r"row_offsets must have shape \[3\]"),
        (dict(bias=torch.randn(63)), ValueError, r"bias must have shape \[64\]"),
        (dict(values=torch.randn(2, 32)), ValueError, "values must have 3 dimensions"),
        (dict(x=torch.randn(3, 64, device="meta")), ValueError, "must be on meta"),
    ],
)
def test_bad_input_gets_clear_error(over, exc, match):
    with pytest.raises(exc, match=match):
        _bad_call(**over)


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
@pytest.mark.parametrize(
    "cols, rows, match",
    [
        ([0, 5], [0, 1, 2], r"col_indices\[1\]=5 is out of range"),
        ([0, -1], [0, 1, 2], r"col_indices\[1\]=-1 is out of range"),
        ([0, 1], [0, 2, 1], "non-decreasing"),
        ([0, 1], [0, 1, 3], r"row_offsets\[-1\] must equal the number of blocks 2"),
        ([0, 1], [1, 1, 2], r"row_offsets\[0\] must be 0"),
    ],
)
def test_native_kernel_checks_indices_before_reading(cols, rows, match):
    # the format validates on construction; the native kernel checks again, so indices
    # corrupted after construction give an error instead of an out-of-bounds read
    values = torch.randn(2, 32, 32)
    with sparsekit.use_backend("cpu"), pytest.raises(ValueError, match=match):
        torch.ops.sparsekit.bsr_linear(torch.randn(1, 64), values, torch.tensor(cols, dtype=torch.int32),
                                       torch.tensor(rows, dtype=torch.int32), None, 64, 64)


def test_forced_backend_errors():
    with pytest.raises(ValueError, match="backend must be one of"):
        sparsekit.set_backend("gpu")
    if not torch.cuda.is_available():
        with sparsekit.use_backend("cuda"), pytest.raises(ValueError, match="no 'cuda' kernel"):
            _bad_call()
    with sparsekit.use_backend("cpu"), pytest.raises(TypeError, match="float32 only"):
        _bad_call(x=torch.randn(3, 64, dtype=torch.float64), values=torch.randn(2, 32, 32, dtype=torch.float64),
                  bias=None)


def test_auto_uses_reference_for_float64_on_cpu():
    N, K = 30, 20
    w = BSRWeight.from_dense(torch.randn(N, K, dtype=torch.float64), 8, sparsity=0.3)
    x = torch.randn(4, K, dtype=torch.float64)
    with pytest.warns(UserWarning, match="using the reference"):
        bsr_linear_kernels._warned.clear()
        y = torch.ops.sparsekit.bsr_linear(x, w.values, w.col_indices, w.row_offsets, None, N, K)
    torch.testing.assert_close(y, x @ w.dense_weight().T)


# ---------------------------------------------------------------- native extension: ISA choice and load failure


def _run(code, **env):
    import os

    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
@pytest.mark.parametrize("isa", ["avx512", "avx2", "portable"])
def test_env_forces_lower_isa(isa):
    if isa not in _ext.supported_isas():
        pytest.skip(f"this CPU cannot run {isa}")
    r = _run("import sparsekit._ext as e; print(e.cpu_isa())", SPARSEKIT_CPU_ISA=isa)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == isa


def test_default_isa_is_best_supported():
    if not _ext.available():
        pytest.skip("needs the native extension")
    r = _run("import sparsekit._ext as e; print(e.cpu_isa(), e.supported_isas()[0])", SPARSEKIT_CPU_ISA="")
    a, b = r.stdout.split()
    assert a == b


def test_bad_isa_request_is_deferred_and_explained():
    code = (
        "import torch, sparsekit\n"
        "from sparsekit.block_sparse import BSRWeight\n"
        "w = BSRWeight.from_dense(torch.randn(8, 8), 4, sparsity=0.5)\n"
        "try:\n"
        "    torch.ops.sparsekit.bsr_linear(torch.randn(1, 8), w.values, w.col_indices, w.row_offsets, None, 8, 8)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, '|', e, '|', type(e.__cause__).__name__)\n"
    )
    r = _run(code, SPARSEKIT_CPU_ISA="sse9")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("NativeExtensionError")
    assert "SPARSEKIT_CPU_ISA must be one of" in r.stdout
    assert r.stdout.strip().endswith("ImportError")  # the load error is kept as the cause


def test_missing_extension_does_not_break_import():
    code = (
        "import sys; sys.modules['sparsekit._C'] = None\n"
        "import torch, sparsekit\n"
        "from sparsekit.block_sparse import BSRWeight\n"
        "w = BSRWeight.from_dense(torch.randn(8, 8), 4, sparsity=0.5)\n"
        "with sparsekit.use_backend('reference'):\n"
        "    torch.ops.sparsekit.bsr_linear(torch.randn(1, 8), w.values, w.col_indices, w.row_offsets, None, 8, 8)\n"
        "try:\n"
        "    torch.ops.sparsekit.bsr_linear(torch.randn(1, 8), w.values, w.col_indices, w.row_offsets, None, 8, 8)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, isinstance(e.__cause__, ImportError))\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["NativeExtensionError", "True"]


@pytest.mark.parametrize("device, variant", VARIANTS)
@pytest.mark.parametrize("M", [3, 30, 64])  # the small-M path, the blocked path, and large M
@pytest.mark.parametrize("block, sparsity", [((8, 8), 0.5), ((4, 8), 0.7), ((1, 16), 0.6), ((16, 16), 1.0)])
def test_nan_inf_follow_the_dense_product(device, variant, M, block, sparsity):
    """The documented NaN/Inf rule is x @ W.T with the dense weight: a non-finite input meets the
    zeros of absent blocks too (0 * Inf = NaN), so the NaN/Inf pattern is the reference's at
    every M (the kernels, which skip absent blocks, used to differ from the dense fallback)."""
    N, K = 50, 37
    args, b = _make(N, K, block, sparsity, device)
    x = torch.randn(M, K, device=device)
    x[0, K // 2], x[1, 1], x[2, K - 1] = float("nan"), float("inf"), -float("inf")
    expected = bsr_linear_reference(x.double(), args[0].double(), *args[1:], b.double(), N, K)
    with run_variant(variant):
        y = torch.ops.sparsekit.bsr_linear(x, *args, b, N, K).double()
    assert torch.equal(torch.isnan(y), torch.isnan(expected)), f"{torch.isnan(y).sum()} vs {torch.isnan(expected).sum()}"
    assert torch.equal(y[torch.isinf(expected)], expected[torch.isinf(expected)])
    finite = torch.isfinite(expected)
    assert finite[3:].all()
    torch.testing.assert_close(y[finite], expected[finite], rtol=1e-4, atol=1e-4)
