"""``training_mode``: one module tree in train or eval mode for a block, every submodule's own
mode given back afterwards (shared by distillation, early-exit calibration and channel
pruning's calibration runs, which must not move BatchNorm statistics nor leave a mode changed)."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def training_mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Sets ``model`` to train/eval mode for the block, then gives every submodule its own mode back."""
    before = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, mode in before:
            m.training = mode
