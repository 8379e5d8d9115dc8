"""Pruning helpers: masks, schedules and the iterative prune -> fine-tune loop.

* :func:`magnitude_mask` — unstructured (per-weight) magnitude pruning. It shrinks
  nothing and speeds nothing up by itself: the zeros stay in a dense tensor. It is
  here as the baseline the benchmarks compare against.
* :func:`block_magnitude_mask` — structured pruning in blocks (L1/L2 block norm); the
  format :class:`~sparsekit.nn.BlockSparseLinear` runs fast.
* :func:`sparsity_schedule` and :func:`iterative_prune` — prune a fraction, fine-tune,
  repeat until the target (the gradual schedule of Zhu & Gupta, 2017).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from ._progress import Progress, progress_steps
from .block_sparse.config import BlockSparseConfig
from .block_sparse.format import block_norms, topk_mask
from .block_sparse.module import BlockSparseLinear, prune_block_sparse
from .convert import ConvertReport, convert


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask (shape of ``weight``) keeping the ``1 - sparsity`` fraction of largest |w|."""
    return topk_mask(weight.detach().abs(), sparsity)


def block_magnitude_mask(weight: torch.Tensor, block_size=32, sparsity: float = 0.9, norm: str = "l1") -> torch.Tensor:
    """Block mask ``[ceil(N/bh), ceil(K/bw)]`` keeping the blocks of largest L1/L2 norm."""
    return topk_mask(block_norms(weight, block_size, norm), sparsity)


def expand_block_mask(mask: torch.Tensor, block_size, shape: tuple[int, int]) -> torch.Tensor:
    """Element mask of ``shape`` from a block mask."""
    bh, bw = (block_size, block_size) if isinstance(block_size, int) else block_size
    return mask.repeat_interleave(bh, 0).repeat_interleave(bw, 1)[: shape[0], : shape[1]]


@torch.no_grad()
def apply_magnitude_pruning_(linear: nn.Linear, sparsity: float) -> torch.Tensor:
    """Zeroes the smallest weights of ``linear`` in place (unstructured); returns the mask."""
    mask = magnitude_mask(linear.weight, sparsity)
    linear.weight.mul_(mask)
    return mask


def sparsity_schedule(target: float, steps: int, initial: float = 0.0, kind: str = "cubic") -> list[float]:
    """Sparsity after each of ``steps`` pruning steps, ending at ``target``.

    ``cubic``: s_t = target + (initial - target) * (1 - t/steps)^3 (prunes fast first, gently last);
    ``linear``: equal increments."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 <= initial <= target <= 1.0:
        raise ValueError(f"need 0 <= initial <= target <= 1, got initial={initial}, target={target}")
    out = []
    for t in range(1, steps + 1):
        frac = t / steps
        if kind == "cubic":
            s = target + (initial - target) * (1.0 - frac) ** 3
        elif kind == "linear":
            s = initial + (target - initial) * frac
        else:
            raise ValueError(f"kind must be 'cubic' or 'linear', got {kind!r}")
        out.append(round(s, 6))
    return out


def iterative_prune(
    model: nn.Module,
    config: BlockSparseConfig,
    finetune: Callable[[nn.Module, int, float], None],
    steps: int = 3,
    schedule: str = "cubic",
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    *,
    progress: Progress = False,
) -> list[float]:
    """Prunes ``model`` in place to ``config.sparsity`` over ``steps`` steps. Step 1 converts the
    matching ``nn.Linear`` layers to :class:`BlockSparseLinear` at the first sparsity; each later step
    drops more of the stored blocks. ``finetune(model, step, sparsity)`` runs after every step (build
    the optimizer inside it: the parameters change at each step). Returns the sparsities used.
    ``progress``: False (silent), True (a tqdm bar) or ``progress(done, total, name)``, called after
    each step's fine-tuning (``name``: ``"sparsity <s>"``)."""
    sparsities = sparsity_schedule(config.sparsity, steps, kind=schedule)
    report: ConvertReport | None = None
    with progress_steps(progress, len(sparsities), "iterative_prune") as done:
        for step, s in enumerate(sparsities):
            if step == 0:
                report = convert(model, replace(config, sparsity=s), filter_fn)
            else:
                assert report is not None
                for layer in report.layers:
                    old = model.get_submodule(layer.name)
                    if isinstance(old, BlockSparseLinear):
                        model.set_submodule(layer.name, prune_block_sparse(old, s, config.norm))
            finetune(model, step, s)
            done(f"sparsity {s:g}")
    return sparsities
