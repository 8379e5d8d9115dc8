"""Channel / neuron pruning: chains found through fx, exact removal of dead channels, importance
criteria, bias compensation, the iterative schedule, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.channel_pruning import (
    channel_importance,
    count_parameters,
    find_prunable_chains,
    iterative_prune_channels,
    prune_channels,
)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 24), nn.Tanh(), nn.Linear(24, 5))


@torch.no_grad()
def _kill_rows(linear: nn.Linear, rows):
    linear.weight[rows] = 0
    linear.bias[rows] = 0


def test_mlp_chains_and_exact_removal_of_zero_neurons():
    model = _mlp()
    chains, skipped = find_prunable_chains(model)
    assert [(c.producer, c.consumer, c.channels) for c in chains] == [("0", "2", 32), ("2", "4", 24)]
    assert skipped == ["4"]  # the output layer heads nothing
    dead = list(range(0, 32, 2))
    _kill_rows(model[0], dead)
    x = torch.randn(9, 20)
    before = model(x)
    report = prune_channels(model, {"0": 0.5})
    assert model[0].weight.shape == (16, 20) and model[2].weight.shape == (24, 16)
    assert model[0].bias.shape == (16,) and model[4].weight.shape == (5, 24)
    torch.testing.assert_close(model(x), before)  # only the dead neurons went
    assert report.params_before - report.params_after == 16 * 21 + 24 * 16
    assert report.params_after == count_parameters(model)
    assert "0" in str(report) and "32 -> 16" in str(report)


def test_keep_count_multiple_of_and_exclude():
    model = _mlp()
    rep = prune_channels(model, 0.3, multiple_of=8, exclude=["2"])
    assert [(c.producer, c.channels_after) for c in rep.chains] == [("0", 24)]  # 32 - 9 = 23 -> 24
    assert model[2].weight.shape == (24, 24)
    prune_channels(model, 0.0, keep={"2": 3})
    assert model[2].weight.shape == (3, 24) and model[4].weight.shape == (5, 3)


def _cnn(C1=8, C2=12, classes=4):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, C1, 3, padding=1), nn.BatchNorm2d(C1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(C1, C2, 3, padding=1), nn.BatchNorm2d(C2), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(C2 * 5 * 5, classes))


def _randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def test_conv_bn_conv_and_conv_flatten_linear():
    model = _cnn()
    _randomize_bn(model)
    with torch.no_grad():  # channels whose BN scale and shift are 0: zero after the ReLU
        for bn, dead in ((model[1], [1, 4, 6]), (model[5], [0, 3, 7, 10])):
            bn.weight[dead] = 0
            bn.bias[dead] = 0
    model.eval()
    chains, _ = find_prunable_chains(model)
    assert [(c.producer, c.between, c.consumer, c.spatial) for c in chains] == [
        ("0", ["1"], "4", 1), ("4", ["5"], "9", 25)]
    x = torch.randn(2, 3, 10, 11)
    before = model(x)
    prune_channels(model, {"0": 3 / 8, "4": 4 / 12})
    assert model[0].out_channels == 5 and model[1].num_features == 5 and model[4].in_channels == 5
    assert model[4].out_channels == 8 and model[5].running_mean.shape == (8,) and model[9].in_features == 200
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # non-contiguous input through the smaller model
        xt = torch.randn(2, 3, 11, 10).transpose(2, 3)
        torch.testing.assert_close(model(xt), model(xt.contiguous()))


def test_depthwise_between_and_channel_importance_uses_bn_scale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU6(),
                          nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6), nn.ReLU6(),
                          nn.Conv2d(6, 4, 1)).eval()
    _randomize_bn(model)
    with torch.no_grad():
        model[4].weight[[2, 5]] = 0
        model[4].bias[[2, 5]] = 0
    chains, skipped = find_prunable_chains(model)
    assert [(c.producer, c.between) for c in chains] == [("0", ["1", "3", "4"])] and skipped == ["6"]
    score = channel_importance(model, "l2")["0"]
    assert set(torch.argsort(score)[:2].tolist()) == {2, 5}
    x = torch.randn(1, 3, 7, 5)
    before = model(x)
    prune_channels(model, {"0": 2 / 6}, importance="l2")
    assert model[3].groups == 4 and model[3].weight.shape == (4, 1, 3, 3) and model[6].in_channels == 4
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.b(F.relu(self.a(x)))  # stem and b feed the add: not prunable; a is
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class _ViewFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


def test_residual_outputs_are_left_alone_and_view_counts_as_flatten():
    chains, skipped = find_prunable_chains(_Residual())
    assert [(c.producer, c.consumer) for c in chains] == [("a", "b")] and set(skipped) == {"stem", "b", "head"}
    model = _Residual()
    x = torch.randn(2, 3, 6, 6)
    prune_channels(model, 0.5)
    assert model.a.out_channels == 4 and model.b.in_channels == 4 and model(x).shape == (2, 2)
    v = _ViewFlatten()
    chains, _ = find_prunable_chains(v)
    assert [(c.producer, c.consumer, c.spatial) for c in chains] == [("conv", "fc", 16)]
    with torch.no_grad():
        v.conv.weight[[1, 4]] = 0
        v.conv.bias[[1, 4]] = -1  # dead after the ReLU
    y = torch.randn(3, 1, 6, 6)
    before = v(y)
    prune_channels(v, {"conv": 2 / 6})
    assert v.fc.in_features == 64
    torch.testing.assert_close(v(y), before)


def test_activation_frequency_finds_dead_relus():
    model = _mlp()
    with torch.no_grad():
        model[0].bias[[3, 7, 11]] = -100.0  # never active on this data
        model[0].weight[[3, 7, 11]] *= 10  # and the largest rows: l1 would keep them
    x = torch.randn(64, 20)
    freq = channel_importance(model, "activation", calibration=x)["0"]
    assert set(torch.argsort(freq)[:3].tolist()) == {3, 7, 11} and float(freq[[3, 7, 11]].max()) < 1e-5
    assert set(torch.argsort(channel_importance(model, "l1")["0"])[-3:].tolist()) == {3, 7, 11}
    before = model(x)
    prune_channels(model, {"0": 3 / 32}, importance="activation", calibration=x)
    torch.testing.assert_close(model(x), before)
    mean = channel_importance(_mlp(), "activation_mean", calibration=[x[:32], x[32:]])["0"]
    assert mean.shape == (32,) and bool((mean >= 0).all())


def test_bias_compensation_absorbs_constant_channels():
    def build():
        model = _mlp()
        with torch.no_grad():
            model[0].weight[[5, 9]] = 0  # lowest l1: constant outputs relu(bias) = 2, 0.5
            model[0].bias[5], model[0].bias[9] = 2.0, 0.5
        return model

    x = torch.randn(16, 20)
    ref = build()
    before = ref(x)
    kept = build()
    prune_channels(kept, {"0": 2 / 32}, calibration=x)
    torch.testing.assert_close(kept(x), before, rtol=1e-5, atol=1e-5)
    dropped = build()
    prune_channels(dropped, {"0": 2 / 32}, calibration=x, compensate_bias=False)
    assert (dropped(x) - before).abs().max() > 1e-2


def test_bad_input():
    model = _mlp()
    with pytest.raises(ValueError, match="amount must be a fraction"):
        prune_channels(model, 1.0)
    with pytest.raises(ValueError, match="amount names 'nope'"):
        prune_channels(model, {"nope": 0.5})
    with pytest.raises(ValueError, match=r"keep\['0'\] must be in \[1, 32\]"):
        prune_channels(model, 0.0, keep={"0": 0})
    with pytest.raises(ValueError, match="importance must be one of"):
        prune_channels(model, 0.5, importance="random")
    with pytest.raises(ValueError, match="needs a calibration batch"):
        prune_channels(model, 0.5, importance="activation")
    with pytest.raises(ValueError, match="multiple_of"):
        prune_channels(model, 0.5, multiple_of=0)

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="torch.fx can trace"):
        prune_channels(Branchy(), 0.5)
    assert [p for p in model.parameters()][0].shape == (32, 20)  # nothing changed on a refusal


def test_iterative_schedule_on_digits():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is installed by make install-dev")
    X, y = datasets.load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    xtr, ytr, xte, yte = X[:1400], y[:1400], X[1400:], y[1400:]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))

    def train(m, steps):
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(m(xtr), ytr).backward()
            opt.step()

    def acc(m):
        with torch.no_grad():
            return float((m(xte).argmax(1) == yte).float().mean())

    train(model, 150)
    dense_acc, dense_params = acc(model), count_parameters(model)
    seen, log = [], []

    def finetune(m, step, frac):
        train(m, 40)
        seen.append((step, frac, m[0].out_features, m[2].out_features))

    reports = iterative_prune_channels(model, 0.75, finetune, steps=3, importance="activation", calibration=xtr,
                                       progress=lambda done, total, name: log.append((done, total, name)))
    assert [s[2] for s in seen] == [r.chains[0].channels_after for r in reports]
    assert seen[-1][2:] == (32, 32) and seen[0][2] < 128 and seen[0][2] > seen[1][2] > seen[2][2]
    assert count_parameters(model) < dense_params / 5
    assert dense_acc > 0.9 and acc(model) > dense_acc - 0.04
    assert [entry[:2] for entry in log] == [(1, 3), (2, 3), (3, 3)] and "75% of channels removed" in log[-1][2]


def test_iterative_with_per_layer_amounts():
    model = _cnn(C1=16, C2=16)
    seen = []
    iterative_prune_channels(model, {"0": 0.75, "4": 0.5}, lambda m, step, frac: seen.append(
        (frac, m[0].out_channels, m[4].out_channels)), steps=2, schedule="linear")
    assert seen == [(0.5, 10, 12), (1.0, 4, 8)] and model[9].in_features == 8 * 25
    with pytest.raises(ValueError, match="amount names 'x'"):
        iterative_prune_channels(model, {"x": 0.5}, lambda *a: None)
    with pytest.raises(ValueError, match="amount must be a fraction"):
        iterative_prune_channels(model, {"0": 1.5}, lambda *a: None)
