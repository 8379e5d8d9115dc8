"""Knowledge distillation: the Hinton loss against its formula, ensembles, feature matching with
projections and pooling, the training helpers, and a student that learns from a teacher on digits."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.distill import Distiller, FeatureMatcher, distillation_loss, evaluate_accuracy, train_classifier


def _manual_soft(student, teachers, T):
    """T^2 * KL(mean_i softmax(t_i / T) || softmax(s / T)), averaged over the rows, written out."""
    p_t = torch.stack([torch.softmax(t / T, dim=-1) for t in teachers]).mean(0)
    log_p_s = torch.log_softmax(student / T, dim=-1)
    kl_rows = (p_t * (p_t.log() - log_p_s)).sum(-1)
    return kl_rows.mean() * T * T


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_soft_loss_is_the_scaled_kl(T):
    s, t = torch.randn(8, 10), 3 * torch.randn(8, 10)
    got = distillation_loss(s, t, temperature=T)
    torch.testing.assert_close(got, _manual_soft(s, [t], T))
    # the T**2 factor is there: the same KL without it is T**2 times smaller
    kl = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
    torch.testing.assert_close(got, kl * T * T)
    assert got > 0


def test_soft_loss_over_extra_leading_dims_averages_the_rows():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    torch.testing.assert_close(distillation_loss(s, t, temperature=2.0),
                               _manual_soft(s.reshape(6, 5), [t.reshape(6, 5)], 2.0))
    y = torch.randint(0, 5, (2, 3))
    expected = 0.5 * _manual_soft(s.reshape(6, 5), [t.reshape(6, 5)], 2.0) + 0.5 * F.cross_entropy(
        s.reshape(6, 5), y.reshape(6))
    torch.testing.assert_close(distillation_loss(s, t, y, temperature=2.0, alpha=0.5), expected)


def test_t_squared_keeps_the_gradient_size_at_high_temperature():
    # d soft / d student ~ (z_s - z_t) / (C N) for large T, independent of T, only thanks to T**2
    s0, t = torch.randn(4, 10), torch.randn(4, 10)
    norms = []
    for T in (20.0, 40.0):
        s = s0.clone().requires_grad_()
        distillation_loss(s, t, temperature=T).backward()
        norms.append(float(s.grad.norm()))
    assert norms[1] == pytest.approx(norms[0], rel=0.02)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_alpha_mixes_soft_and_hard(alpha):
    s, t, y = torch.randn(6, 7), torch.randn(6, 7), torch.randint(0, 7, (6,))
    T = 3.0
    got = distillation_loss(s, t, y, temperature=T, alpha=alpha)
    ce = F.cross_entropy(s, y)
    torch.testing.assert_close(got, alpha * _manual_soft(s, [t], T) + (1 - alpha) * ce)
    if alpha == 0.0:
        torch.testing.assert_close(got, ce)
    if alpha == 1.0:
        torch.testing.assert_close(got, distillation_loss(s, t, temperature=T))


def test_ensemble_averages_probabilities_not_logits():
    s = torch.randn(5, 6)
    t1, t2 = 4 * torch.randn(5, 6), 4 * torch.randn(5, 6)
    got = distillation_loss(s, [t1, t2], temperature=2.0)
    torch.testing.assert_close(got, _manual_soft(s, [t1, t2], 2.0))
    logit_mean = distillation_loss(s, (t1 + t2) / 2, temperature=2.0)
    assert not torch.allclose(got, logit_mean, rtol=1e-3, atol=1e-3)
    # two identical teachers are one teacher (list or tuple)
    torch.testing.assert_close(distillation_loss(s, (t1, t1.clone()), temperature=2.0),
                               distillation_loss(s, t1, temperature=2.0))


def test_gradient_reaches_the_student_only_and_equal_logits_give_zero():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    t2 = torch.randn(4, 5, requires_grad=True)
    distillation_loss(s, [t, t2], torch.tensor([0, 1, 2, 3]), alpha=0.5).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None and t2.grad is None
    same = torch.randn(4, 5)
    assert distillation_loss(same, same.clone()).item() == 0.0
    assert distillation_loss(same, [same, same.clone()]).abs().item() < 1e-6


def test_bad_arguments_name_the_argument():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.randint(0, 5, (4,))
    with pytest.raises(ValueError, match=r"teacher_logits must have the shape of student_logits \[4, 5\], got \[4, 6"):
        distillation_loss(s, torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"teacher_logits\[1\] must have the shape of student_logits"):
        distillation_loss(s, [t, torch.randn(3, 5)])
    with pytest.raises(ValueError, match="teacher_logits is an empty ensemble"):
        distillation_loss(s, [])
    with pytest.raises(TypeError, match="teacher_logits must be a tensor or a list"):
        distillation_loss(s, t.numpy())
    for T in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            distillation_loss(s, t, temperature=T)
    for a in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
            distillation_loss(s, t, y, alpha=a)
    with pytest.raises(ValueError, match=r"targets must have the batch shape of student_logits \[4\], got \[4, 1\]"):
        distillation_loss(s, t, y[:, None])
    with pytest.raises(TypeError, match="targets must hold integer class indices"):
        distillation_loss(s, t, y.float())
    with pytest.raises(ValueError, match=r"student_logits must have shape \[batch, classes\]"):
        distillation_loss(torch.randn(5), torch.randn(5))


def _mlp(hidden):
    return nn.Sequential(nn.Linear(12, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def _cnn(channels, pool=True):
    layers = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Conv2d(channels, channels, 3, padding=1), nn.Flatten(), nn.LazyLinear(4))


def test_feature_matcher_projects_mlp_features_and_trains_projection_and_student():
    student, teacher = _mlp(8), _mlp(32)
    x = torch.randn(5, 12)
    m = FeatureMatcher(student, teacher, [("0", "0"), ("1", "1"), ("2", "2")], example_input=x)
    assert set(m.projections) == {"0", "1"}  # the outputs (width 3) need none
    assert isinstance(m.projections["0"], nn.Linear) and m.projections["0"].weight.shape == (32, 8)
    assert {id(p) for p in m.parameters()} == {id(p) for p in m.projections.parameters()}  # not the models'
    with pytest.raises(RuntimeError, match="run both the student and the teacher forward"):
        m.loss()  # the discovery pass leaves nothing captured
    student(x)
    with torch.no_grad():
        teacher(x)
    loss = m.loss()
    # the mean over pairs of MSE(projected student, teacher), recomputed by hand
    hs, ht = student[0](x), teacher[0](x)
    expected = (F.mse_loss(m.projections["0"](hs), ht) + F.mse_loss(m.projections["1"](hs.relu()), ht.relu())
                + F.mse_loss(student(x), teacher(x))) / 3
    torch.testing.assert_close(loss, expected.detach())
    assert loss > 0
    loss.backward()
    assert m.projections["0"].weight.grad.abs().sum() > 0 and student[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_feature_matcher_is_zero_for_identical_models_and_needs_no_projection():
    teacher = _mlp(16)
    for student in (copy.deepcopy(teacher), teacher):  # same weights, or literally the same module
        m = FeatureMatcher(student, teacher, [("0", "0"), ("1", "1")])
        x = torch.randn(4, 12)
        student(x)
        teacher(x)
        assert len(m.projections) == 0 and list(m.parameters()) == []
        assert m.loss().item() == 0.0
        m.remove()


def test_feature_matcher_conv_projection_and_spatial_pooling():
    student, teacher = _cnn(4, pool=False), _cnn(16, pool=True)  # student: 4 x 8 x 8, teacher: 16 x 4 x 4
    x = torch.randn(2, 3, 8, 8)
    m = FeatureMatcher(student, teacher, [("2", "3")], example_input=x)
    proj = m.projections["0"]
    assert isinstance(proj, nn.Conv2d) and proj.weight.shape == (16, 4, 1, 1)
    student(x)
    teacher(x)
    fs, ft = student[:3](x), teacher[:4](x)
    assert fs.shape == (2, 4, 8, 8) and ft.shape == (2, 16, 4, 4)
    torch.testing.assert_close(m.loss(), F.mse_loss(proj(F.avg_pool2d(fs, 2)), ft).detach())
    m.loss().backward()  # the teacher ran with autograd on: its features must still be detached
    assert proj.weight.grad.abs().sum() > 0 and student[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_feature_matcher_errors_and_remove():
    student, teacher = _mlp(8), _mlp(32)
    with pytest.raises(ValueError, match=r"student has no submodule named 'nope' \(pairs\[1\]\).*0, 1, 2"):
        FeatureMatcher(student, teacher, [("0", "0"), ("nope", "2")])
    with pytest.raises(ValueError, match="teacher has no submodule named '7'"):
        FeatureMatcher(student, teacher, [("0", "7")])
    with pytest.raises(ValueError, match="pairs is empty"):
        FeatureMatcher(student, teacher, [])
    with pytest.raises(ValueError, match="loss must be one of"):
        FeatureMatcher(student, teacher, [("0", "0")], loss="cosine")
    x = torch.randn(3, 12)
    lazy = FeatureMatcher(student, teacher, [("0", "0")])
    with pytest.raises(RuntimeError, match="run both the student and the teacher forward"):
        lazy.loss()
    student(x)
    with pytest.raises(RuntimeError, match="no teacher features"):
        lazy.loss()
    teacher(x)
    with pytest.raises(RuntimeError, match="pass example_input"):  # widths 8 vs 32 and no projection
        lazy.loss()
    lazy.remove()
    odd = nn.Sequential(nn.Linear(12, 32), nn.Unflatten(1, (4, 8)), nn.Flatten(), nn.Linear(32, 3))
    with pytest.raises(ValueError, match=r"pairs\[0\] \('0', '1'\).*\[3, 8\].*\[3, 4, 8\] have different ranks"):
        FeatureMatcher(student, odd, [("0", "1")], example_input=x)
    assert all(len(mod._forward_hooks) == 0 for mod in [*student.modules(), *odd.modules()])  # none left behind
    m = FeatureMatcher(student, teacher, [("2", "2")])
    student(x)
    teacher(x)
    assert m.loss() > 0
    m.remove()  # drops what was captured (and the autograd graph it holds)
    assert m._features == {"student": {}, "teacher": {}}
    assert all(len(mod._forward_hooks) == 0 for mod in [*student.modules(), *teacher.modules()])
    student(x)
    teacher(x)
    assert m._features == {"student": {}, "teacher": {}}
    with pytest.raises(RuntimeError, match="hooks were removed"):
        m.loss()


def test_feature_matcher_discovery_leaves_modes_and_batchnorm_stats_alone():
    student = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4))
    teacher = nn.Sequential(nn.Linear(6, 9), nn.BatchNorm1d(9))
    teacher[1].eval()  # a mixed-mode model keeps its per-submodule modes
    before = student[1].running_mean.clone()
    FeatureMatcher(student, teacher, [("1", "1")], example_input=torch.randn(8, 6) + 5)
    torch.testing.assert_close(student[1].running_mean, before)
    assert student.training and student[1].training and teacher.training and not teacher[1].training


def test_distiller_loss_parameters_and_ensemble():
    s, t1, t2 = _mlp(8), _mlp(32), _mlp(32)
    t1.train()
    x, y = torch.randn(6, 12), torch.randint(0, 3, (6,))
    d = Distiller(s, [t1, t2], temperature=2.0, alpha=0.7)
    assert not t1.training and not t2.training
    with torch.no_grad():
        torch.testing.assert_close(d.loss(x, y), distillation_loss(s(x), [t1(x), t2(x)], y, 2.0, 0.7))
    assert [id(p) for p in d.parameters()] == [id(p) for p in s.parameters()]

    fd = Distiller(s, t1, feature_pairs=[("0", "0")], feature_weight=0.5, example_input=x)
    assert len(fd.parameters()) == len(list(s.parameters())) + 2  # + the Linear(8, 32) projection
    total = fd.loss(x, y)
    with torch.no_grad():
        expected = distillation_loss(s(x), t1(x), y) + 0.5 * fd.matcher.loss()
    torch.testing.assert_close(total.detach(), expected)
    assert total.requires_grad
    with pytest.raises(ValueError, match="teachers is empty"):
        Distiller(s, [])
    with pytest.raises(ValueError, match="alpha must be in"):
        Distiller(s, t1, alpha=2.0)


def test_evaluate_accuracy_and_training_loop_bookkeeping():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))  # predicts argmax of the input
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    loader = [(x[:3], torch.tensor([0, 1, 1])), (x[3:], torch.tensor([1]))]
    model.train()
    assert evaluate_accuracy(model, loader) == 0.75 and model.training
    model.eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lines = []
    history = train_classifier(model, loader, opt, epochs=3, log=lines.append)
    assert len(history) == 3 and len(lines) == 3 and lines[0].startswith("train epoch 1/3: mean loss ")
    assert not model.training  # the mode is given back
    with pytest.raises(ValueError, match="loader yielded no batches"):
        train_classifier(model, [], opt, progress=False)
    with pytest.raises(ValueError, match="epochs must be"):
        train_classifier(model, loader, opt, epochs=0)


def test_train_classifier_label_smoothing():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long()
    loader = [(x, y)]
    models = {}
    for smoothing in (0.0, 0.2):
        torch.manual_seed(1)
        model = nn.Linear(5, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # no step: the loss itself is compared
        with torch.no_grad():
            expected = F.cross_entropy(model(x), y, label_smoothing=smoothing).item()
        history = train_classifier(model, loader, opt, progress=False, label_smoothing=smoothing)
        assert history[0] == pytest.approx(expected, rel=1e-6)
        models[smoothing] = history[0]
    assert models[0.2] != models[0.0]
    # A smoothed classifier's confidence saturates below 1: trained long, its top probability stays
    # near 1 - smoothing * (classes - 1) / classes instead of running to 1.
    torch.manual_seed(2)
    model = nn.Linear(5, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    train_classifier(model, loader, opt, epochs=300, progress=False, label_smoothing=0.2)
    with torch.no_grad():
        top = model(x).softmax(-1).max(-1).values
    assert top.median() < 0.95
    for bad in (-0.1, 1.0, "0.1"):
        with pytest.raises(ValueError, match="label_smoothing must be in"):
            train_classifier(model, loader, opt, progress=False, label_smoothing=bad)


def test_student_learns_digits_from_a_teacher():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    X = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train_idx, test_idx = perm[:1400], perm[1400:]
    Xtr, ytr, Xte, yte = X[train_idx], y[train_idx], X[test_idx], y[test_idx]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(Xtr, ytr), batch_size=128, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    held_out = [(Xte, yte)]

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    train_classifier(teacher, loader, torch.optim.Adam(teacher.parameters(), lr=3e-3), epochs=15, progress=False)
    teacher_acc = evaluate_accuracy(teacher, held_out)
    assert teacher_acc > 0.92

    student = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    assert evaluate_accuracy(student, held_out) < 0.3  # chance is 0.1: whatever it reaches below is learnt

    def soft_loss():
        with torch.no_grad():
            return float(distillation_loss(student(Xte), teacher(Xte), temperature=4.0))

    distiller = Distiller(student, teacher, temperature=4.0, alpha=0.9)
    opt = torch.optim.Adam(distiller.parameters(), lr=1e-2)
    soft = [soft_loss()]
    history = []
    for _ in range(4):
        history += distiller.fit(loader, opt, epochs=3, progress=False)
        soft.append(soft_loss())
    assert all(b < a for a, b in zip(soft, soft[1:])), soft  # held-out soft loss falls at every check
    assert soft[-1] < 0.3 * soft[0], soft
    assert history[-1] < 0.5 * history[0], history
    assert evaluate_accuracy(student, held_out) > 0.85
