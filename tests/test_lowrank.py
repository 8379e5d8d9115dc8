"""LowRankLinear: truncated SVD, rank by energy, what it reports, conversion, state_dict, compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsekit
from sparsekit.lowrank import LowRankLinear, choose_rank
from sparsekit.testing import load_into_meta_module


def _low_rank_linear(inp=40, out=30, true_rank=5, noise=1e-3):
    torch.manual_seed(0)
    lin = nn.Linear(inp, out)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out, true_rank) @ torch.randn(true_rank, inp) + noise * torch.randn(out, inp))
    return lin


def test_full_rank_reproduces_the_layer_and_a_low_rank_weight_is_found():
    lin = _low_rank_linear()
    x = torch.randn(7, 40)
    full = LowRankLinear.from_dense(lin, rank=30)
    torch.testing.assert_close(full(x), lin(x), rtol=1e-4, atol=1e-4)
    assert full.relative_error < 1e-5 and full.params_saved == 40 * 30 - 30 * 70
    found = LowRankLinear.from_dense(lin, energy=0.999)
    assert found.rank == 5 and found.relative_error < 1e-2 and found.params_saved == 40 * 30 - 5 * 70
    torch.testing.assert_close(found(x), lin(x), rtol=1e-2, atol=1e-2)
    assert "rank=5" in repr(found) and "relative_error=" in repr(found)


def test_relative_error_is_the_discarded_energy():
    lin = nn.Linear(50, 20)
    s = torch.linalg.svdvals(lin.weight.detach().double())
    for r in (1, 7, 19):
        mod = LowRankLinear.from_dense(lin, rank=r)
        expected = float((s[r:].square().sum() / s.square().sum()).sqrt())
        assert mod.relative_error == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_choose_rank():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert choose_rank(s, 0.5) == 1 and choose_rank(s, 9 / 14) == 1 and choose_rank(s, 0.7) == 2
    assert choose_rank(s, 1.0) == 3 and choose_rank(torch.zeros(3), 0.9) == 1
    with pytest.raises(ValueError, match="energy must be in"):
        choose_rank(s, 0.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"rank must be in \[1, min\(in_features, out_features\)\] = \[1, 4\]"):
        LowRankLinear(4, 6, rank=5)
    with pytest.raises(TypeError, match="linear must be an nn.Linear"):
        LowRankLinear.from_dense(nn.Conv2d(3, 3, 1))


def test_convert_replaces_only_where_weights_are_saved():
    model = nn.Sequential(_low_rank_linear(), nn.ReLU(), nn.Linear(30, 4))
    report = sparsekit.convert(model, sparsekit.LowRankConfig(energy=0.999))
    assert isinstance(model[0], LowRankLinear) and model[0].rank == 5
    assert isinstance(model[2], nn.Linear) and report.skipped == ["2"]  # rank 4 of 30 x 4 saves nothing
    assert report.bytes_after < report.bytes_before


def test_state_dict_meta_and_compile():
    mod = LowRankLinear.from_dense(_low_rank_linear(), rank=6)
    fresh = load_into_meta_module(mod.state_dict(), lambda: LowRankLinear(40, 30, rank=6))
    x = torch.randn(3, 40)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), mod(x))
        torch.testing.assert_close(torch.compile(mod, fullgraph=True)(x), mod(x))
    torch.testing.assert_close(torch.export.export(mod, (x,)).module()(x), mod(x))
    with pytest.raises(RuntimeError, match="size mismatch"):
        LowRankLinear(40, 30, rank=7).load_state_dict(mod.state_dict())
