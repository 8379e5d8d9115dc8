import copy
import io

import pytest
import torch
from torch import nn

import sparsekit
from sparsekit.block_sparse import BlockSparseConfig, BSRWeight
from sparsekit.nn import BlockSparseLinear
from sparsekit.pruning import expand_block_mask
from sparsekit.testing import load_into_meta_module


def _linear(K=70, N=50, bias=True):
    return nn.Linear(K, N, bias=bias)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("block", [16, (32, 32), (1, 32), (8, 4)])
def test_matches_block_masked_dense_layer(bias, block):
    lin = _linear(bias=bias)
    mod = BlockSparseLinear.from_dense(lin, block_size=block, sparsity=0.6)
    bh, bw = (block, block) if isinstance(block, int) else block
    mask = expand_block_mask(mod.bsr().block_mask(), (bh, bw), (50, 70))
    masked = nn.Linear(70, 50, bias=bias)
    with torch.no_grad():
        masked.weight.copy_(lin.weight * mask)
        if bias:
            masked.bias.copy_(lin.bias)
    for x in (torch.randn(4, 70), torch.randn(2, 3, 70), torch.randn(0, 70), torch.randn(100, 70)):
        torch.testing.assert_close(mod(x), masked(x), rtol=1e-5, atol=1e-5)


def test_from_dense_with_mask_and_reports():
    lin = _linear(64, 64)
    mask = torch.tensor([[True, False], [False, True]])
    mod = BlockSparseLinear.from_dense(lin, block_size=32, mask=mask)
    assert mod.density == 0.5
    assert mod.nnz_blocks == 2
    assert mod.nbytes == 2 * 32 * 32 * 4 + 2 * 4 + 3 * 4 + 64 * 4
    assert mod.dense_nbytes == (64 * 64 + 64) * 4
    assert "density=0.500" in repr(mod)
    with pytest.raises(TypeError, match="nn.Linear"):
        BlockSparseLinear.from_dense(nn.Conv2d(3, 3, 1))


def test_state_dict_round_trip_into_meta_module():
    mod = BlockSparseLinear.from_dense(_linear(), block_size=16, sparsity=0.7)
    sd = mod.state_dict()
    assert set(sd) == {"values", "col_indices", "row_offsets", "format", "bias"}
    assert all(isinstance(t, torch.Tensor) for t in sd.values())
    fresh = load_into_meta_module(
        sd, lambda: BlockSparseLinear(70, 50, bias=True, block_size=16, nnz_blocks=mod.nnz_blocks))
    x = torch.randn(5, 70)
    torch.testing.assert_close(fresh(x), mod(x), rtol=0, atol=0)
    other = BlockSparseLinear(70, 50, block_size=16, nnz_blocks=mod.nnz_blocks)
    other.load_state_dict(sd)
    torch.testing.assert_close(other(x), mod(x), rtol=0, atol=0)


def test_constructed_module_is_valid_before_loading():
    mod = BlockSparseLinear(70, 50, block_size=16, nnz_blocks=7)
    mod.bsr()  # validates
    assert mod(torch.randn(2, 70)).shape == (2, 50)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda sd: sd["col_indices"].fill_(99), "corrupted block-sparse state"),
        (lambda sd: sd["row_offsets"].__setitem__(1, 1000), "corrupted block-sparse state"),
        (lambda sd: sd["format"].__setitem__(0, 99), "format version 99 is not supported"),
        (lambda sd: sd["format"].__setitem__(3, 8), "block_h=8"),
        (lambda sd: sd["format"].__setitem__(5, 3), "nnz_blocks=3"),
    ],
)
def test_corrupted_or_mismatched_checkpoint_fails_loudly(edit, match):
    mod = BlockSparseLinear.from_dense(_linear(), block_size=16, sparsity=0.5)
    sd = {k: v.clone() for k, v in mod.state_dict().items()}
    edit(sd)
    fresh = BlockSparseLinear(70, 50, block_size=16, nnz_blocks=mod.nnz_blocks)
    with pytest.raises(ValueError, match=match):
        fresh.load_state_dict(sd)


def test_mismatched_shapes_fail_loudly():
    mod = BlockSparseLinear.from_dense(_linear(), block_size=16, sparsity=0.5)
    wrong = BlockSparseLinear(70, 50, block_size=16, nnz_blocks=mod.nnz_blocks + 1)
    with pytest.raises(ValueError, match="nnz_blocks"):
        wrong.load_state_dict(mod.state_dict())


def test_torch_compile_fullgraph():
    mod = BlockSparseLinear.from_dense(_linear(), block_size=16, sparsity=0.5)
    model = nn.Sequential(mod, nn.ReLU())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(3, 70)
    torch.testing.assert_close(compiled(x), model(x))


def test_torch_compile_inductor_with_backward():
    mod = BlockSparseLinear.from_dense(_linear(), block_size=16, sparsity=0.5)
    compiled = torch.compile(mod, fullgraph=True)
    x = torch.randn(3, 70, requires_grad=True)
    compiled(x).sum().backward()
    ref_x = x.detach().clone().requires_grad_(True)
    mod.values.grad = None
    mod(ref_x).sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad)


def test_torch_export():
    model = nn.Sequential(BlockSparseLinear.from_dense(_linear(), block_size=16, sparsity=0.5), nn.GELU())
    x = torch.randn(3, 70)
    ep = torch.export.export(model, (x,))
    assert any("sparsekit.bsr_linear" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x), model(x))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.export.load(buf).module()(x), model(x))


def test_to_dtype_and_deepcopy():
    mod = BlockSparseLinear.from_dense(_linear(), block_size=16, sparsity=0.5)
    d = copy.deepcopy(mod).to(torch.float64)
    assert d.values.dtype == torch.float64 and d.col_indices.dtype == torch.int32
    x = torch.randn(3, 70)
    with sparsekit.use_backend("reference"):
        torch.testing.assert_close(d(x.double()).float(), mod(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_to_cuda():
    mod = BlockSparseLinear.from_dense(_linear(), block_size=16, sparsity=0.5)
    x = torch.randn(3, 70)
    g = mod.to("cuda")
    assert g.col_indices.device.type == "cuda"
    torch.testing.assert_close(g(x.cuda()).cpu(), mod.cpu()(x), rtol=1e-4, atol=1e-4)


def test_finetune_updates_only_stored_blocks():
    torch.manual_seed(0)
    mod = BlockSparseLinear.from_dense(_linear(40, 10), block_size=8, sparsity=0.5)
    mask = mod.bsr().block_mask()
    opt = torch.optim.SGD(mod.parameters(), lr=0.1)
    x, target = torch.randn(64, 40), torch.randn(64, 10)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(mod(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert torch.equal(mod.bsr().block_mask(), mask)  # the structure is fixed


def test_convert_swaps_layers_and_reports():
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Sequential(nn.Linear(128, 64), nn.Linear(64, 10)))
    x = torch.randn(4, 64)
    report = sparsekit.convert(model, BlockSparseConfig(block_size=16, sparsity=0.75),
                               filter_fn=lambda m, name: m.out_features >= 64)
    assert [layer.name for layer in report.layers] == ["0", "2.0"]
    assert report.skipped == ["2.1"]
    assert isinstance(model[0], BlockSparseLinear) and isinstance(model[2][1], nn.Linear)
    assert report.bytes_after < report.bytes_before
    assert "2 layers converted" in str(report)
    assert model(x).shape == (4, 10)
    with pytest.raises(TypeError, match="sparsekit Config"):
        sparsekit.convert(model, object())


def test_bsr_weight_module_round_trip():
    w = BSRWeight.from_dense(torch.randn(50, 70), 16, sparsity=0.5)
    mod = BlockSparseLinear.from_bsr(w)
    torch.testing.assert_close(mod.dense_weight(), w.dense_weight())


def test_every_mode_takes_the_registered_op():
    """One path from module to kernel: with gradients, without and under inference_mode the
    module calls torch.ops.sparsekit.bsr_linear, with the same results (export: test_torch_export)."""
    mod = BlockSparseLinear.from_dense(_linear(), block_size=16, sparsity=0.5)
    x = torch.randn(2, 3, 70)
    with_grad = mod(x)  # values require grad: the autograd kernel records the call
    assert with_grad.requires_grad and with_grad.grad_fn is not None
    with torch.no_grad():
        fast = mod(x)
    torch.testing.assert_close(fast, with_grad.detach(), rtol=0, atol=0)
    with torch.inference_mode():
        torch.testing.assert_close(mod(x), fast, rtol=0, atol=0)
        with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 70\]"):
            mod(torch.randn(2, 71))
    with torch.profiler.profile() as prof, torch.no_grad():
        mod(x)
    assert any(e.name == "sparsekit::bsr_linear" for e in prof.events())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (Triton compiles for it)")
def test_compile_sees_the_triton_kernel():
    """Under torch.compile on a GPU the op is traced as its triton_op, so Inductor's code launches
    the Triton kernel itself instead of calling the op; on the CPU the op stays a call."""
    from torch._inductor.utils import run_and_get_code

    mod = BlockSparseLinear.from_dense(_linear(64, 96), block_size=16, sparsity=0.5).cuda().eval()
    x = torch.randn(8, 64, device="cuda")
    with torch.no_grad():
        y, code = run_and_get_code(torch.compile(mod, fullgraph=True), x)
        torch.testing.assert_close(y, mod(x))
    code = "\n".join(code)
    assert "_bsr_linear_kernel" in code and "sparsekit.bsr_linear.default(" not in code
    cpu = BlockSparseLinear.from_dense(_linear(64, 96), block_size=16, sparsity=0.5).eval()
    with torch.no_grad():
        _, code = run_and_get_code(torch.compile(cpu, fullgraph=True), x.cpu())
    assert "sparsekit.bsr_linear.default(" in "\n".join(code)
