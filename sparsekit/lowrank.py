"""``LowRankLinear``: a Linear layer factorised as W ~ U V by truncated SVD (two thin layers).

``y = (x V.T) U.T + b`` with ``V [r, in]`` and ``U [out, r]``: ``r (in + out)`` weights instead of
``in * out``. The two products run through PyTorch's GEMM (no custom kernel: a dense GEMM is
already the fastest way to multiply by a thin dense matrix). ``LowRankConfig`` converts a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .backend import tracks_grad
from .config import Config, register_handler


def choose_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest rank whose singular values keep ``energy`` of the squared Frobenius norm."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    s2 = singular_values.double().square()
    total = float(s2.sum())
    if total == 0.0:
        return 1
    kept = torch.cumsum(s2, 0) / total
    return min(int((kept < energy - 1e-12).sum()) + 1, singular_values.numel())


class LowRankLinear(nn.Module):
    """``in_features -> rank -> out_features`` with the weight's truncated SVD.

    After :meth:`from_dense`, ``relative_error`` is ``||W - U V||_F / ||W||_F`` and
    ``params_saved`` the weights saved against the dense layer (negative if the rank is too high
    to save any)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        if rank < 1 or rank > min(in_features, out_features):
            raise ValueError(f"rank must be in [1, min(in_features, out_features)] = [1, "
                             f"{min(in_features, out_features)}], got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        f = {"device": device, "dtype": dtype}
        self.v = nn.Parameter(torch.empty(rank, in_features, **f))   # x -> rank
        self.u = nn.Parameter(torch.empty(out_features, rank, **f))  # rank -> out
        self.bias = nn.Parameter(torch.empty(out_features, **f)) if bias else None
        self.relative_error: Optional[float] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.v, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.u, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(self.in_features), 1 / math.sqrt(self.in_features))

    @property
    def params_saved(self) -> int:
        return self.in_features * self.out_features - self.rank * (self.in_features + self.out_features)

    @classmethod
    @torch.no_grad()
    def from_dense(cls, linear: nn.Linear, rank: Optional[int] = None, energy: float = 0.9) -> "LowRankLinear":
        """Truncated SVD of ``linear.weight``: ``rank`` singular values, or (rank None) the fewest
        that keep ``energy`` of the squared Frobenius norm. The singular values are split evenly
        (sqrt(S) into each factor), so both thin layers have the same scale."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        U, S, Vh = torch.linalg.svd(w.double(), full_matrices=False)
        r = choose_rank(S, energy) if rank is None else int(rank)
        mod = cls(linear.in_features, linear.out_features, r, bias=linear.bias is not None, device=w.device,
                  dtype=w.dtype)
        root = S[:r].sqrt()
        mod.u.copy_(U[:, :r] * root)
        mod.v.copy_(root[:, None] * Vh[:r])
        if linear.bias is not None:
            mod.bias.copy_(linear.bias.detach())
        norm = float(w.double().norm())
        mod.relative_error = float((w.double() - mod.u.double() @ mod.v.double()).norm()) / norm if norm else 0.0
        return mod

    def dense_weight(self) -> torch.Tensor:
        """The weight the two factors stand for, ``u @ v`` ``[out_features, in_features]``."""
        return self.u.detach() @ self.v.detach()

    @property
    def nbytes(self) -> int:
        """Bytes of the factors and bias."""
        return sum(t.numel() * t.element_size() for t in self.parameters(recurse=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # factors made under inference_mode and an input needing no gradient: nothing to record
        with torch.set_grad_enabled(tracks_grad(x, self.v, self.u, self.bias)):
            return F.linear(F.linear(x, self.v), self.u, self.bias)

    def extra_repr(self) -> str:
        err = "" if self.relative_error is None else f", relative_error={self.relative_error:.4f}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"bias={self.bias is not None}{err}")


@dataclass
class LowRankConfig(Config):
    """Replace every ``nn.Linear`` by a :class:`LowRankLinear` of ``rank`` (or of the rank keeping
    ``energy``), where that saves weights; other layers are left (reported as skipped)."""

    rank: Optional[int] = None
    energy: float = 0.9

    def accepts(self, module: nn.Module) -> bool:
        return type(module) is nn.Linear


@register_handler(LowRankConfig)
def _convert_linear(module: nn.Linear, config: LowRankConfig) -> Optional[LowRankLinear]:
    rank = config.rank
    if rank is not None:
        rank = min(rank, module.in_features, module.out_features)
    new = LowRankLinear.from_dense(module, rank=rank, energy=config.energy)
    return new if new.params_saved > 0 else None
