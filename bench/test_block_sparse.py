"""Block-sparse linear vs PyTorch: speedup table and the sparsity sweep.

Groups ``bsr/...``: y = x @ W.T, K = N = 4096 (512 in quick mode), one group per
(M, sparsity, block). Providers: ``torch_dense`` (F.linear, the baseline),
``torch_bsr`` (PyTorch's own BSR tensor), ``sparsekit`` (BlockSparseLinear, auto backend).

Groups ``sweep/...``: the chapter's point, speedup vs sparsity for unstructured pruning
(dense with zeros; torch CSR), block-sparse (three block sizes) and neuron pruning (a
smaller dense layer), at M = 1 and M = 256.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from harness import DEVICES, QUICK, measure
from torch import nn

from sparsekit.block_sparse import BSRWeight
from sparsekit.nn import BlockSparseLinear
from sparsekit.pruning import expand_block_mask, magnitude_mask

warnings.filterwarnings("ignore", message="Sparse (BSR|CSR) tensor support is in beta")

CPU_SIZE = 512 if QUICK else 4096
MS = [1, 8, 256] if QUICK else [1, 8, 256, 1024]
CASES = [(0.9, 32), (0.5, 16)]


def _size(device):  # a GPU runs the full shape even in quick mode: it takes milliseconds
    return 4096 if device == "cuda" else CPU_SIZE


def _ms(device):
    return [1, 8, 256, 1024, 8192] if device == "cuda" else MS


def _layer(sparsity, block, device, dtype=torch.float32, size=None):
    size = size or _size(device)
    torch.manual_seed(0)
    lin = nn.Linear(size, size, bias=False)
    mod = BlockSparseLinear.from_dense(lin, block_size=block, sparsity=sparsity).to(device, dtype)
    return mod, mod.dense_weight()


@pytest.mark.parametrize("device, M", [(d, m) for d in DEVICES for m in _ms(d)])
@pytest.mark.parametrize("sparsity, block", CASES)
@pytest.mark.parametrize("provider", ["torch_dense", "torch_bsr", "sparsekit"])
def test_bsr_linear(benchmark, device, sparsity, block, M, provider):
    SIZE = _size(device)
    mod, dense = _layer(sparsity, block, device)
    x = torch.randn(M, SIZE, device=device)
    if provider == "torch_dense":
        fn = lambda: F.linear(x, dense)  # noqa: E731
    elif provider == "torch_bsr":
        w = dense.to_sparse_bsr((block, block))
        fn = lambda: F.linear(x, w)  # noqa: E731
    else:
        fn = lambda: mod(x)  # noqa: E731
    group = f"bsr/{device}/K=N={SIZE}/{int(sparsity * 100)}%/{block}x{block}/M={M}"
    measure(benchmark, fn, group=group, provider=provider, baseline="torch_dense", device=device,
            M=M, sparsity=sparsity, block=block)


@pytest.mark.parametrize("device, M", [(d, m) for d in DEVICES if d == "cuda" for m in _ms(d)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("provider", ["torch_dense", "sparsekit"])
def test_bsr_linear_half_gpu(benchmark, device, dtype, M, provider):
    SIZE = _size(device)
    mod, dense = _layer(0.9, 32, device, dtype)
    x = torch.randn(M, SIZE, device=device, dtype=dtype)
    fn = (lambda: F.linear(x, dense)) if provider == "torch_dense" else (lambda: mod(x))
    group = f"bsr/{device}/{str(dtype)[6:]}/K=N={SIZE}/90%/32x32/M={M}"
    measure(benchmark, fn, group=group, provider=provider, baseline="torch_dense", device=device, M=M)


SWEEP = [0.5, 0.9, 0.99] if QUICK else [0.5, 0.7, 0.8, 0.9, 0.95, 0.99]
SWEEP_METHODS = ["dense", "unstructured_dense_zeros", "unstructured_torch_csr", "block_16", "block_32",
                 "block_64", "neuron_pruning"]


@pytest.mark.skipif("cpu" not in DEVICES, reason="CPU sweep not selected (SPARSEKIT_BENCH_DEVICE)")
@pytest.mark.parametrize("M", [1, 256])
@pytest.mark.parametrize("sparsity", SWEEP)
@pytest.mark.parametrize("method", SWEEP_METHODS)
def test_sparsity_sweep(benchmark, M, sparsity, method):
    SIZE = CPU_SIZE
    torch.manual_seed(0)
    w = torch.randn(SIZE, SIZE)
    x = torch.randn(M, SIZE)
    if method == "dense":
        fn = lambda: F.linear(x, w)  # noqa: E731
    elif method == "unstructured_dense_zeros":
        wz = w * magnitude_mask(w, sparsity)
        fn = lambda: F.linear(x, wz)  # noqa: E731
    elif method == "unstructured_torch_csr":
        wc = (w * magnitude_mask(w, sparsity)).to_sparse_csr()
        fn = lambda: F.linear(x, wc)  # noqa: E731
    elif method.startswith("block_"):
        b = int(method.split("_")[1])
        mod = BlockSparseLinear.from_bsr(BSRWeight.from_dense(w, b, sparsity=sparsity))
        fn = lambda: mod(x)  # noqa: E731
    else:  # neuron pruning: keep the (1 - sparsity) output neurons of largest norm -> a smaller dense layer
        keep = max(1, round((1 - sparsity) * SIZE))
        ws = w[w.norm(dim=1).argsort(descending=True)[:keep]].contiguous()
        fn = lambda: F.linear(x, ws)  # noqa: E731
    measure(benchmark, fn, group=f"sweep/cpu/K=N={SIZE}/M={M}/{sparsity:.2f}", provider=method,
            baseline="dense", M=M, sparsity=sparsity)


def test_block_mask_matches_unstructured_baseline_bytes():
    # not a timing: keeps the sweep honest about what each method stores
    w = torch.randn(256, 256)
    bsr = BSRWeight.from_dense(w, 16, sparsity=0.9)
    assert bsr.nbytes < 0.11 * w.numel() * 4
    mask = expand_block_mask(bsr.block_mask(), 16, (256, 256))
    assert int(mask.sum()) == bsr.nnz_blocks * 256
