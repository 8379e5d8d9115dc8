"""Dynamic computation: the network decides per input how much of itself to run.

Depth (BranchyNet-style early exit): :class:`EarlyExitNetwork` runs its backbone stage by stage
with a classifier head after each stage; in inference a sample leaves at the first head whose
softmax confidence reaches ``threshold``, and only the samples still undecided run the next stage
(they are indexed out of the batch, so the compute saved is real). :func:`calibrate_threshold`
picks the lowest threshold that keeps the full network's accuracy.

Width (slimmable networks, Yu et al. 2018): :class:`SlimmableLinear` and :class:`SlimmableConv2d`
hold one full-size weight and run at a width multiplier ``w`` on its leading ``ceil(w * n)``
rows/columns; :class:`SwitchableBatchNorm2d` keeps one BatchNorm per width, since the feature
statistics differ per width. :func:`set_width` switches a whole model, :func:`train_slimmable_step`
trains every width at once. These layers deliberately do not subclass ``nn.Linear`` / ``nn.Conv2d``:
a conversion that accepts those (``from_dense``, the depthwise-separable fuser) would silently
drop the slimming.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._conv import pair
from ._modes import training_mode

__all__ = [
    "EarlyExitNetwork",
    "SlimmableConv2d",
    "SlimmableLinear",
    "SwitchableBatchNorm2d",
    "calibrate_threshold",
    "early_exit_loss",
    "set_width",
    "slim_size",
    "train_slimmable_step",
]

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
DEFAULT_WIDTH_MULTS = (0.25, 0.5, 0.75, 1.0)


# --------------------------------------------------------------------------------------------- depth


def early_exit_loss(outputs: Sequence[torch.Tensor], targets: torch.Tensor,
                    weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Sum over exits of the cross-entropy of each exit's logits (``weights[i]`` times exit i's
    loss when given): every head, and the backbone through all of them, is trained at once."""
    outputs = list(outputs)
    if not outputs:
        raise ValueError("outputs must hold the logits of at least one exit, got none")
    if weights is None:
        weights = [1.0] * len(outputs)
    elif len(weights) != len(outputs):
        raise ValueError(f"weights must have one weight per exit ({len(outputs)}), got {len(weights)}")
    return sum(float(w) * F.cross_entropy(o, targets) for w, o in zip(weights, outputs))


def _check_threshold(threshold) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, got {threshold!r}") from None
    if math.isnan(t):
        raise ValueError("threshold must be a number, got nan")
    return t


def _exit_choice(confidences: torch.Tensor, threshold: float) -> torch.Tensor:
    """Exit index of each sample from the confidences [E, N] of its E exits: the first non-final
    exit whose confidence is >= threshold, else the last (the rule :class:`EarlyExitNetwork` runs)."""
    leave = confidences[:-1] >= threshold  # [E - 1, N]
    leave = torch.cat([leave, torch.ones_like(confidences[:1], dtype=torch.bool)])
    return leave.to(torch.uint8).argmax(0)  # argmax returns the first maximal index


def _confidence(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1).amax(dim=-1)


class EarlyExitNetwork(nn.Module):
    """``stages[0] -> stages[1] -> ...`` with the exit head ``heads[i]`` after stage i (the last
    head is the final classifier, often ``nn.Identity`` when the last stage ends in the logits).

    Training mode: ``forward`` returns the list of every exit's logits (train on
    :func:`early_exit_loss`). Eval mode: per-sample early exit; a sample leaves at the first head
    whose max softmax probability is >= ``threshold`` and the rest continue; returns the logits
    [N, classes] in the input's order, records ``last_exit_indices`` (the exit each sample took)
    and adds to ``exit_counts``. ``threshold <= 0`` sends every sample out at the first head;
    ``threshold > 1`` disables early exit (only the final head runs). Stages and heads must treat
    samples independently in eval mode (standard layers do) and take a batch-first tensor.
    """

    exit_counts: torch.Tensor

    def __init__(self, stages: Sequence[nn.Module], heads: Sequence[nn.Module], threshold: float = 0.9):
        super().__init__()
        stages, heads = list(stages), list(heads)
        if not stages:
            raise ValueError("stages must hold at least one stage, got none")
        if len(heads) != len(stages):
            raise ValueError(f"heads must have one head per stage (len(stages) = {len(stages)}), got {len(heads)}")
        for name, mods in (("stages", stages), ("heads", heads)):
            for i, m in enumerate(mods):
                if not isinstance(m, nn.Module):
                    raise TypeError(f"{name}[{i}] must be an nn.Module, got {type(m).__name__}")
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)
        self.threshold = threshold
        # persistent, so the statistics travel with the model (.to(), state_dict, meta loading)
        self.register_buffer("exit_counts", torch.zeros(len(stages), dtype=torch.long))
        self.last_exit_indices: Optional[torch.Tensor] = None

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = _check_threshold(value)

    @property
    def num_exits(self) -> int:
        return len(self.stages)

    exit_loss = staticmethod(early_exit_loss)

    @classmethod
    def from_sequential(cls, backbone: nn.Sequential, exits: Union[dict[int, nn.Module], Sequence[int]],
                        num_classes: Optional[int] = None, final_head: Optional[nn.Module] = None,
                        example_input: Optional[torch.Tensor] = None, threshold: float = 0.9) -> "EarlyExitNetwork":
        """Splits ``backbone`` after each layer index in ``exits`` and attaches an exit head there.

        ``exits`` maps layer index -> head, or lists the indices only: each head is then built as
        ``AdaptiveAvgPool2d(1) -> Flatten -> Linear(C, num_classes)`` for [N, C, H, W] features or
        ``Linear(F, num_classes)`` for [N, F] ones, the widths found by running ``example_input``
        (required then) through the backbone in eval mode without gradients; ``num_classes``
        defaults to the width of the network's output. The last segment is the final stage; it
        must end in the logits unless ``final_head`` (default ``nn.Identity``) maps it there. The
        layers are shared with ``backbone``, not copied."""
        if not isinstance(backbone, nn.Sequential):
            raise TypeError(f"backbone must be an nn.Sequential, got {type(backbone).__name__}")
        n = len(backbone)
        given = dict(exits) if isinstance(exits, dict) else None
        indices = list(given) if given is not None else list(exits)
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= n - 2:
                raise ValueError(f"exits index {i!r} out of range: an exit goes after a layer index in [0, {n - 2}] "
                                 f"of the {n}-layer backbone (the final exit follows the last layer)")
        if len(set(indices)) != len(indices):
            raise ValueError(f"exits indices must be distinct, got {indices}")
        indices.sort()
        bounds = [0] + [i + 1 for i in indices] + [n]
        stages = [backbone[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        final = nn.Identity() if final_head is None else final_head
        if given is not None:
            for i in indices:
                if not isinstance(given[i], nn.Module):
                    raise TypeError(f"exits[{i}] must be an nn.Module head, got {type(given[i]).__name__}")
            return cls(stages, [given[i] for i in indices] + [final], threshold=threshold)
        if example_input is None:
            raise ValueError("example_input is required when exits are given as indices only: it finds the feature "
                             "widths of the heads to build (or pass exits as a dict {index: head})")
        feats = _trace_features(stages, final, example_input)
        if num_classes is None:
            if feats[-1].dim() != 2:
                raise ValueError(f"num_classes is required: the network's output has shape {tuple(feats[-1].shape)}, "
                                 "not [N, classes]")
            num_classes = int(feats[-1].shape[1])
        heads = [_make_head(f, num_classes, i) for i, f in zip(indices, feats[:-1])]
        return cls(stages, heads + [final], threshold=threshold)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:
        return self.exit_logits(x) if self.training else self._early_exit(x)

    def exit_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every exit's logits for every sample (no early exit; the heads run in the current mode)."""
        outputs = []
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            outputs.append(head(x))
        return outputs

    def _early_exit(self, x: torch.Tensor) -> torch.Tensor:
        n, last = x.shape[0], self.num_exits - 1
        if n == 1 or (self.threshold > 1 and n > 0):
            return self._whole_batch_exit(x)
        exit_idx = torch.full((n,), last, dtype=torch.long, device=x.device)
        rows = torch.arange(n, device=x.device)  # original positions of the samples still running
        out = None
        for i, (stage, head) in enumerate(zip(self.stages, self.heads)):
            x = stage(x)
            logits = head(x)
            if out is None:
                out = logits.new_empty((n,) + tuple(logits.shape[1:]))
            if i == last:
                out[rows] = logits.to(out.dtype)
                break
            leave = _confidence(logits) >= self.threshold
            gone = rows[leave]
            out[gone] = logits[leave].to(out.dtype)
            exit_idx[gone] = i
            stay = ~leave
            rows, x = rows[stay], x[stay]
            if rows.numel() == 0:  # every sample has left: later stages do not run at all
                break
        with torch.no_grad():
            self.exit_counts += torch.bincount(exit_idx, minlength=self.num_exits).to(self.exit_counts.device)
        self.last_exit_indices = exit_idx
        return out

    def _whole_batch_exit(self, x: torch.Tensor) -> torch.Tensor:
        """One sample, or every sample to the final head (``threshold > 1``: the max softmax
        probability never exceeds 1, so the earlier heads need not run): the batch leaves
        together, decided without indexing (a batch-1 call costs what the stages cost)."""
        n, last = x.shape[0], self.num_exits - 1
        for i, (stage, head) in enumerate(zip(self.stages, self.heads)):
            x = stage(x)
            if i == last:
                out = head(x)
                break
            if self.threshold > 1:
                continue
            logits = head(x)
            if bool(_confidence(logits)[0] >= self.threshold):
                out = logits
                break
        with torch.no_grad():
            self.exit_counts[i] += n
        self.last_exit_indices = torch.full((n,), i, dtype=torch.long, device=out.device)
        return out

    def reset_stats(self) -> None:
        """Zeroes ``exit_counts``."""
        self.exit_counts.zero_()

    def exit_fractions(self) -> torch.Tensor:
        """Fraction of the samples seen since :meth:`reset_stats` that left at each exit (nan if none)."""
        counts = self.exit_counts.double()
        return counts / counts.sum()

    def average_depth(self) -> float:
        """Mean number of stages run per sample since :meth:`reset_stats` (exit i runs i + 1
        stages; ``num_exits`` without early exit); nan if no sample was seen."""
        depth = torch.arange(1, self.num_exits + 1, dtype=torch.float64, device=self.exit_counts.device)
        return float((self.exit_fractions() * depth).sum())

    def extra_repr(self) -> str:
        return f"num_exits={self.num_exits}, threshold={self.threshold}"


def _trace_features(stages: list[nn.Module], final: nn.Module, example_input: torch.Tensor) -> list[torch.Tensor]:
    """Each stage's output for ``example_input`` (and last the final head's), in eval mode without
    gradients so that no running statistics move; the modules' modes are restored."""
    feats = []
    with training_mode(nn.ModuleList(stages + [final]), False), torch.no_grad():
        x = example_input
        for stage in stages:
            x = stage(x)
            feats.append(x)
        feats.append(final(x))
    return feats


def _make_head(feat: torch.Tensor, num_classes: int, index: int) -> nn.Module:
    f = {"device": feat.device, "dtype": feat.dtype if feat.is_floating_point() else None}
    if feat.dim() == 4:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(feat.shape[1], num_classes, **f))
    if feat.dim() == 2:
        return nn.Linear(feat.shape[1], num_classes, **f)
    raise ValueError(f"exits: cannot build a head for the features of shape {tuple(feat.shape)} after layer {index} "
                     "(only [N, C, H, W] and [N, F]); pass exits as a dict {index: head}")


def _batches(data) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return [tuple(data)]
    return data


@torch.no_grad()
def calibrate_threshold(model: EarlyExitNetwork, data, max_accuracy_drop: float = 0.005,
                        candidates: Optional[Sequence[float]] = None) -> tuple[float, list[dict]]:
    """The lowest candidate threshold whose accuracy on ``data`` is at most ``max_accuracy_drop``
    (a fraction: 0.005 = half a point) below the full network's.

    ``data``: a tuple ``(x, y)`` of tensors or an iterable of ``(x, y)`` batches (a DataLoader),
    read once. Every exit's logits are computed once in eval mode and each threshold's decisions
    replayed on them with the rule the model's forward applies. Returns ``(threshold, stats)``,
    ``stats`` a dict ``{"threshold", "accuracy", "average_depth"}`` per candidate (ascending) and a
    last one for the full network (threshold ``inf``); the threshold is ``inf`` when no candidate
    qualifies. The model's threshold, statistics and mode are left as they were."""
    if not isinstance(model, EarlyExitNetwork):
        raise TypeError(f"model must be an EarlyExitNetwork, got {type(model).__name__}")
    if not 0.0 <= max_accuracy_drop <= 1.0:
        raise ValueError(f"max_accuracy_drop must be in [0, 1], got {max_accuracy_drop}")
    thresholds = sorted(_check_threshold(t) for t in (DEFAULT_THRESHOLDS if candidates is None else candidates))
    if not thresholds:
        raise ValueError("candidates must hold at least one threshold, got none")
    device = model.exit_counts.device
    confs, correct = [], []
    with training_mode(model, False):
        for x, y in _batches(data):
            y = y.to(device)
            logits = model.exit_logits(x.to(device))
            confs.append(torch.stack([_confidence(o) for o in logits]))
            correct.append(torch.stack([o.argmax(-1) == y for o in logits]))
    if not confs:
        raise ValueError("data holds no batch")
    conf, corr = torch.cat(confs, 1), torch.cat(correct, 1)  # [E, N]
    n = conf.shape[1]
    if n == 0:
        raise ValueError("data holds no sample")
    full_acc = float(corr[-1].double().mean())
    stats = []
    for t in thresholds:
        choice = _exit_choice(conf, t)
        acc = float(corr.gather(0, choice[None]).double().mean())
        stats.append({"threshold": t, "accuracy": acc, "average_depth": float((choice + 1).double().mean())})
    stats.append({"threshold": math.inf, "accuracy": full_acc, "average_depth": float(model.num_exits)})
    for s in stats[:-1]:
        if s["accuracy"] >= full_acc - max_accuracy_drop - 1e-12:
            return s["threshold"], stats
    return math.inf, stats


# --------------------------------------------------------------------------------------------- width


def slim_size(n: int, width_mult: float) -> int:
    """Channels kept of ``n`` at ``width_mult``: ``ceil(width_mult * n)`` (at least 1); the same
    rule in every layer, so that consecutive layers agree."""
    return max(1, math.ceil(width_mult * n - 1e-9))  # 1e-9: 0.3 * 10 is 3.0000000000000004


def _check_width_mults(width_mults) -> tuple[float, ...]:
    try:
        mults = tuple(sorted(float(w) for w in width_mults))
    except (TypeError, ValueError):
        raise ValueError(f"width_mults must be numbers in (0, 1], got {width_mults!r}") from None
    if not mults:
        raise ValueError("width_mults must hold at least one width, got none")
    if not all(0.0 < w <= 1.0 for w in mults):
        raise ValueError(f"width_mults must be numbers in (0, 1], got {width_mults!r}")
    if len(set(mults)) != len(mults):
        raise ValueError(f"width_mults must be distinct, got {width_mults!r}")
    return mults


class _Slimmable(nn.Module):
    """Holds ``width_mults`` (sorted) and the active ``width_mult`` (default the largest)."""

    def _init_widths(self, width_mults) -> None:
        self.width_mults = _check_width_mults(width_mults)
        self._width_mult = self.width_mults[-1]

    @property
    def width_mult(self) -> float:
        return self._width_mult

    @width_mult.setter
    def width_mult(self, value: float) -> None:
        self._width_mult = self._check_width(value)

    def _check_width(self, value: float) -> float:
        try:
            w = float(value)
        except (TypeError, ValueError):
            w = math.nan
        for m in self.width_mults:  # the stored value, so that 0.1 * 3 selects 0.3
            if math.isclose(w, m, rel_tol=0.0, abs_tol=1e-9):
                return m
        raise ValueError(f"width_mult {value!r} is not one of this {type(self).__name__}'s width_mults "
                         f"{self.width_mults}")


class SlimmableLinear(_Slimmable):
    """A Linear layer with one ``[out, in]`` weight that runs at width ``w`` on its first
    ``ceil(w * out)`` rows (``slim_out``) and first ``ceil(w * in)`` columns (``slim_in``).
    The network's first layer takes ``slim_in=False``, its classifier ``slim_out=False``.
    Parameter names and initialisation are those of ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 width_mults: Sequence[float] = DEFAULT_WIDTH_MULTS, slim_in: bool = True, slim_out: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, {out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.slim_in, self.slim_out = bool(slim_in), bool(slim_out)
        self._init_widths(width_mults)
        f = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **f))
        self.bias = nn.Parameter(torch.empty(out_features, **f)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:  # as nn.Linear's, over the full width
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(self.in_features), 1 / math.sqrt(self.in_features))

    @property
    def active_in_features(self) -> int:
        return slim_size(self.in_features, self.width_mult) if self.slim_in else self.in_features

    @property
    def active_out_features(self) -> int:
        return slim_size(self.out_features, self.width_mult) if self.slim_out else self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i, o = self.active_in_features, self.active_out_features
        if x.shape[-1] != i:
            raise ValueError(f"SlimmableLinear at width_mult {self.width_mult} expects {i} input features, "
                             f"got {x.shape[-1]}")
        return F.linear(x, self.weight[:o, :i], None if self.bias is None else self.bias[:o])

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"width_mults={self.width_mults}, width_mult={self.width_mult}, slim_in={self.slim_in}, "
                f"slim_out={self.slim_out}")


class SlimmableConv2d(_Slimmable):
    """A Conv2d (``groups=1``, zero padding) with one full-size weight that runs at width ``w`` on
    its first ``ceil(w * out_channels)`` filters (``slim_out``) and first ``ceil(w * in_channels)``
    input channels (``slim_in``). Parameter names and initialisation are those of ``nn.Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, width_mults: Sequence[float] = DEFAULT_WIDTH_MULTS,
                 slim_in: bool = True, slim_out: bool = True, device=None, dtype=None):
        super().__init__()
        if groups != 1:
            raise ValueError(f"groups must be 1 (a slimmed grouped convolution is not supported), got {groups}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = pair(kernel_size), pair(stride), pair(dilation)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        self.slim_in, self.slim_out = bool(slim_in), bool(slim_out)
        self._init_widths(width_mults)
        f = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size, **f))
        self.bias = nn.Parameter(torch.empty(out_channels, **f)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:  # as nn.Conv2d's, over the full width
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    @property
    def active_in_channels(self) -> int:
        return slim_size(self.in_channels, self.width_mult) if self.slim_in else self.in_channels

    @property
    def active_out_channels(self) -> int:
        return slim_size(self.out_channels, self.width_mult) if self.slim_out else self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i, o = self.active_in_channels, self.active_out_channels
        if x.dim() < 3 or x.shape[-3] != i:
            raise ValueError(f"SlimmableConv2d at width_mult {self.width_mult} expects {i} input channels, "
                             f"got input of shape {tuple(x.shape)}")
        return F.conv2d(x, self.weight[:o, :i], None if self.bias is None else self.bias[:o], self.stride,
                        self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}, width_mults={self.width_mults}, "
                f"width_mult={self.width_mult}, slim_in={self.slim_in}, slim_out={self.slim_out}")


class SwitchableBatchNorm2d(_Slimmable):
    """One ``BatchNorm2d(ceil(w * num_features))`` per width ``w`` (own running statistics and own
    affine parameters): the features' mean and variance differ with the width, so sharing one
    BatchNorm across widths would normalise every width but one with the wrong statistics.
    ``bn[k]`` belongs to ``width_mults[k]`` (sorted)."""

    def __init__(self, num_features: int, width_mults: Sequence[float] = DEFAULT_WIDTH_MULTS, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, affine: bool = True, track_running_stats: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        self.num_features = num_features
        self._init_widths(width_mults)
        self.bn = nn.ModuleList(nn.BatchNorm2d(slim_size(num_features, w), eps=eps, momentum=momentum, affine=affine,
                                               track_running_stats=track_running_stats, device=device, dtype=dtype)
                                for w in self.width_mults)

    @property
    def active_bn(self) -> nn.BatchNorm2d:
        return self.bn[self.width_mults.index(self.width_mult)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.active_bn(x)

    def extra_repr(self) -> str:
        return f"{self.num_features}, width_mults={self.width_mults}, width_mult={self.width_mult}"


def _slimmable_modules(model: nn.Module) -> list[_Slimmable]:
    return [m for m in model.modules() if isinstance(m, _Slimmable)]


def set_width(model: nn.Module, width_mult: float) -> None:
    """Sets ``width_mult`` on every slimmable module of ``model`` (ValueError, and nothing changed,
    if one of them does not support it or the model has none)."""
    mods = _slimmable_modules(model)
    if not mods:
        raise ValueError(f"model has no slimmable module ({type(model).__name__})")
    widths = [m._check_width(width_mult) for m in mods]
    for m, w in zip(mods, widths):
        m.width_mult = w


def train_slimmable_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                         width_mults: Sequence[float],
                         loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                         ) -> list[float]:
    """One optimiser step on every width at once: zero the gradients, then for each width
    ``set_width`` + forward + backward (the gradients of the shared weights accumulate), then
    ``optimizer.step()``. Returns each width's loss (in ``width_mults`` order); the modules'
    widths are restored afterwards."""
    width_mults = list(width_mults)
    if not width_mults:
        raise ValueError("width_mults must hold at least one width, got none")
    mods = _slimmable_modules(model)
    before = [m.width_mult for m in mods]
    losses = []
    optimizer.zero_grad()
    try:
        for w in width_mults:
            set_width(model, w)
            loss = loss_fn(model(x), y)
            loss.backward()
            losses.append(float(loss.detach()))
    finally:
        for m, w in zip(mods, before):
            m.width_mult = w
    optimizer.step()
    return losses
