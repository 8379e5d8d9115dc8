import pytest
import torch
from torch import nn

from sparsekit.block_sparse import BlockSparseConfig
from sparsekit.nn import BlockSparseLinear
from sparsekit.pruning import (
    apply_magnitude_pruning_,
    iterative_prune,
    magnitude_mask,
    sparsity_schedule,
)


def test_magnitude_mask_keeps_largest():
    w = torch.randn(30, 40)
    mask = magnitude_mask(w, 0.75)
    assert int(mask.sum()) == 300
    assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_unstructured_pruning_zeroes_in_place_but_keeps_dense_shape():
    lin = nn.Linear(20, 10)
    apply_magnitude_pruning_(lin, 0.9)
    assert lin.weight.shape == (10, 20)
    assert int((lin.weight != 0).sum()) == 20


def test_schedules():
    assert sparsity_schedule(0.9, 3, kind="linear") == [0.3, 0.6, 0.9]
    cubic = sparsity_schedule(0.9, 4)
    assert cubic[-1] == 0.9 and all(a < b for a, b in zip(cubic, cubic[1:]))
    assert cubic[0] > 0.9 / 4  # prunes fast first
    with pytest.raises(ValueError):
        sparsity_schedule(0.9, 0)
    with pytest.raises(ValueError):
        sparsity_schedule(0.9, 3, kind="exp")


def test_iterative_prune_finetunes_on_the_sparse_format():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 8))
    x = torch.randn(512, 32)
    y = teacher(x).detach()
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 8))
    model.load_state_dict(teacher.state_dict())
    seen = []

    def finetune(m, step, sparsity):
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(30):
            opt.zero_grad()
            loss = nn.functional.mse_loss(m(x), y)
            loss.backward()
            opt.step()
        seen.append((step, sparsity, loss.item()))

    used = iterative_prune(model, BlockSparseConfig(block_size=8, sparsity=0.75), finetune, steps=3,
                           filter_fn=lambda mod, name: name == "0")
    assert used[-1] == 0.75 and len(seen) == 3
    assert isinstance(model[0], BlockSparseLinear) and isinstance(model[2], nn.Linear)
    assert model[0].density == pytest.approx(0.25)
    # fine-tuning recovers: final loss well below the loss right after one-shot pruning to 75%
    one_shot = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 8))
    one_shot.load_state_dict(teacher.state_dict())
    one_shot[0] = BlockSparseLinear.from_dense(one_shot[0], 8, sparsity=0.75)
    assert seen[-1][2] < 0.5 * nn.functional.mse_loss(one_shot(x), y).item()
