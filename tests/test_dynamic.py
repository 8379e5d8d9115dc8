"""Dynamic computation: early exit (per-sample depth, calibration) and slimmable width."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.dynamic import (
    EarlyExitNetwork,
    SlimmableConv2d,
    SlimmableLinear,
    SwitchableBatchNorm2d,
    calibrate_threshold,
    early_exit_loss,
    set_width,
    slim_size,
    train_slimmable_step,
)
from sparsekit.testing import load_into_meta_module

WIDTHS = (0.25, 0.5, 0.75, 1.0)


def _mlp_exits(inp=8, hidden=16, classes=5) -> EarlyExitNetwork:
    stages = [nn.Sequential(nn.Linear(inp, hidden), nn.Tanh()), nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()),
              nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())]
    heads = [nn.Linear(hidden, classes) for _ in stages]
    with torch.no_grad():  # larger head weights spread the confidences over (0, 1)
        for h in heads:
            h.weight.mul_(6)
    return EarlyExitNetwork(stages, heads)


def _counting_hook(module: nn.Module) -> list[int]:
    seen: list[int] = []
    module.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    return seen


def _by_path(net: EarlyExitNetwork, x: torch.Tensor, k: int) -> torch.Tensor:
    """Exit k's logits computed on their own: stages[:k + 1] then heads[k]."""
    for stage in net.stages[:k + 1]:
        x = stage(x)
    return net.heads[k](x)


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1200]], y[perm[:1200]], x[perm[1200:]], y[perm[1200:]]


# ------------------------------------------------------------------------------------------- early exit


def test_training_forward_returns_every_exit():
    net = _mlp_exits()
    x = torch.randn(6, 8)
    outs = net.train()(x)
    assert isinstance(outs, list) and len(outs) == 3 and all(o.shape == (6, 5) for o in outs)
    for k, o in enumerate(outs):
        torch.testing.assert_close(o, _by_path(net, x, k))
    assert net.exit_counts.sum() == 0  # training does not count exits
    assert "num_exits=3" in repr(net) and "threshold=0.9" in repr(net)


def test_threshold_above_one_runs_the_full_backbone():
    net = _mlp_exits().eval()
    net.threshold = 1.5
    early_heads = [_counting_hook(h) for h in net.heads[:-1]]
    x = torch.randn(10, 8)
    with torch.no_grad():
        out = net(x)
        full = nn.Sequential(*net.stages, net.heads[-1])(x)
    torch.testing.assert_close(out, full)
    assert net.last_exit_indices.tolist() == [2] * 10 and net.exit_counts.tolist() == [0, 0, 10]
    assert net.average_depth() == 3.0 and early_heads == [[], []]  # the exit heads were not even run


def test_threshold_zero_exits_everyone_at_the_first_head():
    net = _mlp_exits().eval()
    net.threshold = 0.0
    later = [_counting_hook(s) for s in net.stages[1:]]
    x = torch.randn(10, 8)
    with torch.no_grad():
        out = net(x)
    torch.testing.assert_close(out, _by_path(net, x, 0))
    assert later == [[], []]  # stages 1 and 2 never ran
    assert net.last_exit_indices.tolist() == [0] * 10 and net.average_depth() == 1.0
    torch.testing.assert_close(net.exit_fractions(), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_mixed_exits_match_each_samples_own_path_and_order():
    net = _mlp_exits().eval()
    x = torch.randn(64, 8)
    with torch.no_grad():
        conf = torch.stack([torch.softmax(_by_path(net, x, k), -1).amax(-1) for k in range(3)])
    net.threshold = float(conf[0].median())
    stage1, stage2 = _counting_hook(net.stages[1]), _counting_hook(net.stages[2])
    with torch.no_grad():
        out = net(x)
    ran = (list(stage1), list(stage2))
    taken = net.last_exit_indices
    expected = torch.where(conf[0] >= net.threshold, 0, torch.where(conf[1] >= net.threshold, 1, 2))
    assert taken.tolist() == expected.tolist() and set(taken.tolist()) == {0, 1, 2}
    with torch.no_grad():
        for j in range(len(x)):
            torch.testing.assert_close(out[j], _by_path(net, x[j:j + 1], int(taken[j]))[0], rtol=1e-5, atol=1e-5)
    # only the undecided samples run the later stages
    assert ran == ([int((taken >= 1).sum())], [int((taken == 2).sum())])
    counts = torch.bincount(taken, minlength=3)
    assert net.exit_counts.tolist() == counts.tolist()
    assert net.average_depth() == pytest.approx(float((taken + 1).double().mean()))
    # a permuted batch gives the permuted outputs; the statistics accumulate
    perm = torch.randperm(len(x))
    with torch.no_grad():
        torch.testing.assert_close(net(x[perm]), out[perm], rtol=1e-5, atol=1e-5)
    assert net.last_exit_indices.tolist() == taken[perm].tolist() and net.exit_counts.tolist() == (2 * counts).tolist()
    net.reset_stats()
    assert net.exit_counts.tolist() == [0, 0, 0] and math.isnan(net.average_depth())


def test_batch_one_decides_like_the_batched_path():
    """One sample at a time (the scalar path) takes the exit and gives the logits the batched
    path gives it, and counts the same."""
    net = _mlp_exits().eval()
    x = torch.randn(40, 8)
    with torch.no_grad():
        conf0 = torch.softmax(_by_path(net, x, 0), -1).amax(-1).sort().values
    net.threshold = float(conf0[19] + conf0[20]) / 2  # between two samples: no float tie at the boundary
    with torch.no_grad():
        batched = net(x)
        taken = net.last_exit_indices.clone()
        counts = net.exit_counts.clone()
        net.reset_stats()
        stage2 = _counting_hook(net.stages[2])
        for j in range(len(x)):
            one = net(x[j:j + 1])
            assert net.last_exit_indices.tolist() == [int(taken[j])]
            torch.testing.assert_close(one[0], batched[j], rtol=1e-5, atol=1e-5)
    assert torch.equal(net.exit_counts, counts) and set(taken.tolist()) == {0, 1, 2}
    assert len(stage2) == int((taken == 2).sum())  # a sample that left early never ran the last stage


def test_empty_batch():
    net = _mlp_exits().eval()
    for t in (0.0, 0.5, 2.0):
        net.threshold = t
        out = net(torch.randn(0, 8))
        assert out.shape == (0, 5) and net.last_exit_indices.shape == (0,)
    assert net.exit_counts.sum() == 0 and [o.shape for o in net.train()(torch.randn(0, 8))] == [(0, 5)] * 3


def test_early_exit_loss():
    outs = [torch.randn(7, 4) for _ in range(3)]
    y = torch.randint(0, 4, (7,))
    ce = [F.cross_entropy(o, y) for o in outs]
    torch.testing.assert_close(early_exit_loss(outs, y), ce[0] + ce[1] + ce[2])
    torch.testing.assert_close(EarlyExitNetwork.exit_loss(outs, y, weights=[0.5, 0.0, 2.0]), 0.5 * ce[0] + 2 * ce[2])
    with pytest.raises(ValueError, match=r"weights must have one weight per exit \(3\), got 2"):
        early_exit_loss(outs, y, weights=[1.0, 1.0])


def test_from_sequential_builds_heads_of_the_right_widths():
    backbone = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 10, 3, stride=2),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, 12), nn.ReLU(),
                             nn.Linear(12, 4))
    before = backbone[1].running_mean.clone()
    x = torch.randn(5, 3, 9, 9)
    net = EarlyExitNetwork.from_sequential(backbone, [2, 4, 8], example_input=x[:2])
    assert backbone.training and torch.equal(backbone[1].running_mean, before)  # tracing moved no statistics
    assert [len(s) for s in net.stages] == [3, 2, 4, 1] and net.stages[0][0] is backbone[0]  # shared, not copied
    pooled = net.heads[0]
    assert isinstance(pooled[0], nn.AdaptiveAvgPool2d) and (pooled[2].in_features, pooled[2].out_features) == (6, 4)
    assert net.heads[1][2].in_features == 10 and isinstance(net.heads[2], nn.Linear)
    assert (net.heads[2].in_features, net.heads[2].out_features) == (12, 4) and isinstance(net.heads[3], nn.Identity)
    assert [o.shape for o in net(x)] == [(5, 4)] * 4
    net.eval().threshold = 2.0
    with torch.no_grad():
        torch.testing.assert_close(net(x), backbone.eval()(x))
    # explicit heads, in any order, a final head, a num_classes
    head = nn.Linear(12, 4)
    net = EarlyExitNetwork.from_sequential(backbone[:9], {7: head, 2: pooled}, final_head=nn.Linear(12, 4))
    assert list(net.heads)[:2] == [pooled, head] and [len(s) for s in net.stages] == [3, 5, 1]
    net = EarlyExitNetwork.from_sequential(backbone[:9], [4], num_classes=3, example_input=x)
    assert net.heads[0][2].out_features == 3 and isinstance(net.heads[1], nn.Identity)


def test_bad_arguments():
    stages = [nn.Linear(4, 4), nn.Linear(4, 4)]
    with pytest.raises(ValueError, match=r"heads must have one head per stage \(len\(stages\) = 2\), got 1"):
        EarlyExitNetwork(stages, [nn.Identity()])
    with pytest.raises(ValueError, match="stages must hold at least one stage"):
        EarlyExitNetwork([], [])
    with pytest.raises(ValueError, match="threshold must be a number, got nan"):
        EarlyExitNetwork(stages, [nn.Identity()] * 2, threshold=math.nan)
    backbone = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    for bad in ([2], [-1], [5]):
        with pytest.raises(ValueError, match=rf"exits index {bad[0]} out of range.*\[0, 1\]"):
            EarlyExitNetwork.from_sequential(backbone, bad, example_input=torch.randn(1, 4))
    with pytest.raises(ValueError, match="exits indices must be distinct"):
        EarlyExitNetwork.from_sequential(backbone, [1, 1], example_input=torch.randn(1, 4))
    with pytest.raises(ValueError, match="example_input is required"):
        EarlyExitNetwork.from_sequential(backbone, [1], num_classes=3)
    with pytest.raises(ValueError, match="num_classes is required"):
        EarlyExitNetwork.from_sequential(nn.Sequential(nn.Linear(4, 4), nn.Unflatten(1, (2, 2))), [0],
                                         example_input=torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"exits: cannot build a head for the features of shape \(1, 2, 2\)"):
        EarlyExitNetwork.from_sequential(nn.Sequential(nn.Unflatten(1, (2, 2)), nn.Flatten(), nn.Linear(4, 3)), [0],
                                         example_input=torch.randn(1, 4))
    with pytest.raises(TypeError, match="backbone must be an nn.Sequential"):
        EarlyExitNetwork.from_sequential(nn.Linear(4, 4), [0])
    with pytest.raises(TypeError, match="model must be an EarlyExitNetwork"):
        calibrate_threshold(backbone, (torch.randn(2, 4), torch.zeros(2, dtype=torch.long)))


def test_state_dict_round_trip_into_a_meta_module():
    def build():
        backbone = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5))
        return EarlyExitNetwork.from_sequential(backbone, {1: nn.Linear(16, 5)}, threshold=0.3)

    net = build().eval()
    x = torch.randn(20, 8)
    with torch.no_grad():
        out = net(x)
    fresh = load_into_meta_module(net.state_dict(), build).eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), out)
    assert torch.equal(fresh.last_exit_indices, net.last_exit_indices)
    assert fresh.exit_counts.tolist() == (2 * net.exit_counts).tolist()  # the statistics were saved too


def test_learns_digits_and_calibration_keeps_accuracy_at_lower_depth():
    torch.manual_seed(0)
    xtr, ytr, xte, yte = _digits()
    stages = [nn.Sequential(nn.Linear(64, 32), nn.ReLU()), nn.Sequential(nn.Linear(32, 64), nn.ReLU()),
              nn.Sequential(nn.Linear(64, 64), nn.ReLU())]
    net = EarlyExitNetwork(stages, [nn.Linear(32, 10), nn.Linear(64, 10), nn.Linear(64, 10)])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = early_exit_loss(net(xtr), ytr)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xte, yte), batch_size=128)
    threshold, stats = calibrate_threshold(net, loader)
    assert net.training and net.threshold == 0.9 and net.exit_counts.sum() == 0  # the model was left alone
    assert calibrate_threshold(net, (xte, yte)) == (threshold, stats)  # a loader and a tensor pair agree
    full = stats[-1]
    assert full["threshold"] == math.inf and full["average_depth"] == 3.0 and full["accuracy"] > 0.9
    assert [s["threshold"] for s in stats[:-1]] == [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999]
    ok = [s["threshold"] for s in stats[:-1] if s["accuracy"] >= full["accuracy"] - 0.005]
    assert threshold == min(ok)
    # the model run for real at that threshold: accuracy and depth as calibrated
    net.eval().threshold = threshold
    with torch.no_grad():
        acc = float((net(xte).argmax(-1) == yte).double().mean())
    chosen = next(s for s in stats if s["threshold"] == threshold)
    assert acc == pytest.approx(chosen["accuracy"]) and net.average_depth() == pytest.approx(chosen["average_depth"])
    assert acc >= full["accuracy"] - 0.005 - 1 / len(yte) and net.average_depth() < 2.0


class _Columns(nn.Module):
    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.start:self.stop]


def test_calibrate_threshold_on_a_known_network():
    # exit 0 reads columns 0:2 (confident right, confident wrong, unsure right, unsure wrong), the final
    # exit columns 2:4 (always right)
    x = torch.tensor([[5.0, 0, 1, 0], [0, 5, 1, 0], [0, 0.5, 0, 1], [0.5, 0, 0, 1]])
    y = torch.tensor([0, 0, 1, 1])
    net = EarlyExitNetwork([nn.Identity(), nn.Identity()], [_Columns(0, 2), _Columns(2, 4)])
    threshold, stats = calibrate_threshold(net, (x, y), candidates=[0.999, 0.5, 0.7])
    assert threshold == 0.999
    assert stats == [{"threshold": 0.5, "accuracy": 0.5, "average_depth": 1.0},
                     {"threshold": 0.7, "accuracy": 0.75, "average_depth": 1.5},
                     {"threshold": 0.999, "accuracy": 1.0, "average_depth": 2.0},
                     {"threshold": math.inf, "accuracy": 1.0, "average_depth": 2.0}]
    assert calibrate_threshold(net, (x, y), max_accuracy_drop=0.25, candidates=[0.999, 0.5, 0.7])[0] == 0.7
    assert calibrate_threshold(net, [(x[:1], y[:1]), (x[1:], y[1:])], max_accuracy_drop=0.5)[0] == 0.5
    assert calibrate_threshold(net, (x, y), max_accuracy_drop=0.0, candidates=[0.5, 0.9])[0] == math.inf
    with pytest.raises(ValueError, match=r"max_accuracy_drop must be in \[0, 1\]"):
        calibrate_threshold(net, (x, y), max_accuracy_drop=-0.1)
    with pytest.raises(ValueError, match="data holds no batch"):
        calibrate_threshold(net, [])


# ------------------------------------------------------------------------------------------- slimmable


def test_slimmable_linear_matches_linear_and_slices():
    lin = SlimmableLinear(10, 7)
    ref = nn.Linear(10, 7)
    ref.load_state_dict(lin.state_dict())  # same parameter names as nn.Linear
    x = torch.randn(3, 10)
    assert lin.width_mult == 1.0
    torch.testing.assert_close(lin(x), ref(x))
    set_width(lin, 0.5)
    assert (lin.active_in_features, lin.active_out_features) == (5, 4)  # ceil(3.5) = 4
    torch.testing.assert_close(lin(x[:, :5]), F.linear(x[:, :5], lin.weight[:4, :5], lin.bias[:4]))
    with pytest.raises(ValueError, match="SlimmableLinear at width_mult 0.5 expects 5 input features, got 10"):
        lin(x)
    first = SlimmableLinear(10, 7, bias=False, slim_in=False)
    last = SlimmableLinear(7, 3, slim_out=False)
    set_width(nn.Sequential(first, last), 0.25)
    y = first(x)
    assert y.shape == (3, 2) and last(y).shape == (3, 3)
    torch.testing.assert_close(y, x @ first.weight[:2].T)


def test_slimmable_conv_matches_conv_and_slices():
    conv = SlimmableConv2d(6, 9, 3, stride=2, padding=1)
    ref = nn.Conv2d(6, 9, 3, stride=2, padding=1)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 7, 7)
    torch.testing.assert_close(conv(x), ref(x))
    conv.width_mult = 0.5
    assert (conv.active_in_channels, conv.active_out_channels) == (3, 5)
    torch.testing.assert_close(conv(x[:, :3]), F.conv2d(x[:, :3], conv.weight[:5, :3], conv.bias[:5], 2, 1))
    stem = SlimmableConv2d(3, 9, (3, 1), padding="same", bias=False, slim_in=False, width_mults=(0.5, 1.0))
    stem.width_mult = 0.5
    torch.testing.assert_close(stem(x[:, :3]), F.conv2d(x[:, :3], stem.weight[:5], padding="same"))
    with pytest.raises(ValueError, match="groups must be 1"):
        SlimmableConv2d(4, 4, 3, groups=2)


def test_slim_size_rounds_up_and_widths_are_validated():
    assert [slim_size(7, w) for w in WIDTHS] == [2, 4, 6, 7]
    assert slim_size(10, 0.3) == 3 and slim_size(10, 0.1 * 3) == 3 and slim_size(3, 0.1) == 1
    lin = SlimmableLinear(4, 4, width_mults=(1.0, 0.3))
    assert lin.width_mults == (0.3, 1.0) and lin.width_mult == 1.0
    lin.width_mult = 0.1 * 3
    assert lin.width_mult == 0.3
    for bad in ((), (0.0, 1.0), (0.5, 1.5), (0.5, 0.5)):
        with pytest.raises(ValueError, match="width_mults must"):
            SlimmableLinear(4, 4, width_mults=bad)


def test_set_width_rejects_an_unsupported_width_and_changes_nothing():
    model = nn.Sequential(SlimmableLinear(4, 4, slim_in=False), SlimmableLinear(4, 2, slim_out=False,
                                                                              width_mults=(0.5, 1.0)))
    msg = r"width_mult 0.25 is not one of this SlimmableLinear's width_mults \(0.5, 1.0\)"
    with pytest.raises(ValueError, match=msg):
        set_width(model, 0.25)
    assert [m.width_mult for m in model] == [1.0, 1.0]
    with pytest.raises(ValueError, match="width_mult 0.3 is not one of"):
        model[0].width_mult = 0.3
    with pytest.raises(ValueError, match="model has no slimmable module"):
        set_width(nn.Linear(2, 2), 1.0)
    set_width(model, 0.5)
    assert [m.width_mult for m in model] == [0.5, 0.5]


def test_switchable_batchnorm_keeps_separate_statistics_per_width():
    bn = SwitchableBatchNorm2d(7)
    assert [b.num_features for b in bn.bn] == [2, 4, 6, 7]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    bn.width_mult = 0.5
    bn.train()(torch.randn(8, 4, 3, 3) * 3 + 2)
    changed = {k for k, v in bn.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"bn.1.running_mean", "bn.1.running_var", "bn.1.num_batches_tracked"}
    assert bn.active_bn is bn.bn[1] and bn.bn[1].weight is not bn.bn[3].weight  # own affine parameters too
    bn.eval()
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(bn(x), F.batch_norm(x, bn.bn[1].running_mean, bn.bn[1].running_var,
                                                   bn.bn[1].weight, bn.bn[1].bias))


def _slimmable_cnn() -> nn.Sequential:
    return nn.Sequential(
        SlimmableConv2d(3, 8, 3, padding=1, slim_in=False), SwitchableBatchNorm2d(8), nn.ReLU(),
        SlimmableConv2d(8, 12, 3, stride=2, padding=1, bias=False), SwitchableBatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), SlimmableLinear(12, 5, slim_out=False))


def test_slimmable_cnn_state_dict_round_trip_at_every_width():
    model = _slimmable_cnn()
    x = torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        for w in WIDTHS:  # move every width's BatchNorm statistics
            set_width(model, w)
            model(x * (1 + w))
    assert {k for k in model.state_dict() if "running_mean" in k} == {f"{i}.bn.{k}.running_mean"
                                                                      for i in (1, 4) for k in range(4)}
    model.eval()
    fresh = load_into_meta_module(model.state_dict(), _slimmable_cnn).eval()
    outs = []
    with torch.no_grad():
        for w in WIDTHS:
            set_width(model, w)
            set_width(fresh, w)
            outs.append(model(x))
            torch.testing.assert_close(fresh(x), outs[-1], rtol=0, atol=0)
    assert all(not torch.allclose(a, b) for a, b in zip(outs, outs[1:]))  # the widths do compute different things


def _slimmable_mlp() -> nn.Sequential:
    return nn.Sequential(SlimmableLinear(64, 64, slim_in=False), nn.ReLU(), SlimmableLinear(64, 64), nn.ReLU(),
                         SlimmableLinear(64, 10, slim_out=False))


def test_train_slimmable_step_learns_digits_at_every_width_and_round_trips():
    torch.manual_seed(0)
    xtr, ytr, xte, yte = _digits()
    model = _slimmable_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = [train_slimmable_step(model, xtr, ytr, opt, WIDTHS[::-1]) for _ in range(40)]
    assert all(len(h) == 4 for h in history)
    for k in range(4):
        assert history[-1][k] < 0.5 * history[0][k], (WIDTHS[::-1][k], history[0][k], history[-1][k])
    assert all(m.width_mult == 1.0 for m in model if hasattr(m, "width_mult"))  # widths restored
    fresh = load_into_meta_module(model.state_dict(), _slimmable_mlp)
    accs = []
    with torch.no_grad():
        for w in WIDTHS:
            set_width(model, w)
            set_width(fresh, w)
            out = model(xte)
            accs.append(float((out.argmax(-1) == yte).double().mean()))
            torch.testing.assert_close(fresh(xte), out, rtol=0, atol=0)
    assert min(accs) > 0.5, accs  # chance is 0.1
