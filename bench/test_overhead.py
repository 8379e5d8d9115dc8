"""What a module call costs around its kernel, on the layer sizes of real models.

Groups ``overhead/...`` (M = 1, fp32, CPU, every module built with its defaults):

* ``K=N=64``: a product that costs almost nothing, so the time is the fixed cost of a call
  (module, dispatcher, checks, output allocation). Target: within 2 us of ``nn.Linear``'s.
* ``384x384`` (MiniLM), ``576x576``, ``576x1536`` and ``1536x576`` (SmolLM2): targets
  ``BlockSparseLinear`` at 90% sparsity and ``BinaryLinear`` at most 0.5x the time of
  ``nn.Linear`` (ratio >= 2 in the table), ``CodebookLinear`` 4-bit at most 0.6x (ratio >= 1.67).
* ``mlp``: a small MLP of the four kinds of layers, eager (the baseline) and under
  ``torch.compile`` (``compiled``): compiled must not be slower (ratio >= 1). The same MLP made of
  ``nn.Linear`` layers, eager and compiled (``dense_eager``, ``dense_compiled``), shows what
  ``torch.compile`` itself adds to a call of so small a model.
"""

from __future__ import annotations

import pytest
import torch
from harness import measure
from torch import nn

from sparsekit.nn import BinaryLinear, BlockSparseLinear, CodebookLinear

SHAPES = [(64, 64), (384, 384), (576, 576), (576, 1536), (1536, 576)]
PROVIDERS = ["torch_linear", "block_sparse_90", "binary", "codebook_4bit"]


def layer(provider: str, K: int, N: int) -> nn.Module:
    torch.manual_seed(0)
    lin = nn.Linear(K, N)
    if provider == "torch_linear":
        return lin
    if provider == "block_sparse_90":
        return BlockSparseLinear.from_dense(lin, block_size=16, sparsity=0.9)
    if provider == "binary":
        return BinaryLinear.from_dense(lin)
    if provider == "codebook_4bit":
        return CodebookLinear.from_dense(lin, bits=4)
    raise ValueError(provider)


def _group(K: int, N: int) -> str:
    return "overhead/cpu/K=N=64/M=1" if K == N == 64 else f"overhead/cpu/{K}x{N}/M=1"


@pytest.mark.parametrize("K, N", SHAPES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_module_call(benchmark, K, N, provider):
    mod = layer(provider, K, N).eval()
    x = torch.randn(1, K)
    measure(benchmark, lambda: mod(x), group=_group(K, N), provider=provider, baseline="torch_linear")


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    d = 256
    return nn.Sequential(
        BlockSparseLinear.from_dense(nn.Linear(d, d), block_size=16, sparsity=0.9), nn.ReLU(),
        CodebookLinear.from_dense(nn.Linear(d, d), bits=4), nn.ReLU(),
        BinaryLinear.from_dense(nn.Linear(d, d)), nn.ReLU(),
        nn.Linear(d, 10),
    ).eval()


def dense_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    d = 256
    return nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(),
                         nn.Linear(d, 10)).eval()


@pytest.mark.parametrize("provider", ["eager", "compiled", "dense_eager", "dense_compiled"])
def test_compiled_mlp(benchmark, provider):
    model = dense_mlp() if provider.startswith("dense") else mlp()
    if provider.endswith("compiled"):
        model = torch.compile(model, fullgraph=True)
    x = torch.randn(1, 256)
    measure(benchmark, lambda: model(x), group="overhead/cpu/mlp/M=1", provider=provider, baseline="eager")
