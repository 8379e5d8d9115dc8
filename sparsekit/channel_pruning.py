"""Neuron / channel pruning that really shrinks the network.

Per-weight pruning leaves a dense tensor full of zeros; removing whole neurons (rows of a Linear)
or channels (filters of a Conv2d) leaves a *smaller dense* model that every dense kernel runs
faster. Removing output channel ``c`` of a producer layer also removes the matching input of the
layer that consumes it, and the channel from everything in between:

    producer (Linear | Conv2d)  ->  [per-channel ops]  ->  consumer (Linear | Conv2d)

Per-channel ops are BatchNorm, depthwise Conv2d (``groups == channels``), activations, dropout,
pooling, identity, and at most one flatten (Conv -> Flatten -> Linear: channel ``c`` owns the
consumer's input columns ``c*S .. c*S + S - 1``, ``S`` the spatial size). The chains are found by
tracing the model with ``torch.fx``; a producer whose output also goes anywhere else (a residual
add, a concatenation, the model's output) is left alone, so pruning never changes the shapes a
residual block relies on.

Importance of a channel (``importance=``), lowest pruned first:

- ``"l1"`` / ``"l2"``: the norm of the producer's weight row (filter) times ``|gamma| /
  sqrt(var + eps)`` of every BatchNorm on the chain (the channel's effective weight norm);
- ``"activation"``: activation frequency on a calibration batch, the fraction of the chain's
  outputs (after its activations, before the consumer) that are non-zero, i.e. 1 - APoZ
  (Hu et al., 2016); ties broken by the mean absolute activation;
- ``"activation_mean"``: the mean absolute activation on the calibration batch.

With a calibration batch the consumer's bias absorbs the removed channels' mean contribution
(``compensate_bias=True``), so a channel that was nearly constant costs almost nothing.
:func:`iterative_prune_channels` removes channels gradually with fine-tuning in between, on the
schedule of :func:`sparsekit.pruning.sparsity_schedule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ._modes import training_mode
from ._progress import Progress, progress_steps

IMPORTANCE = ("l1", "l2", "activation", "activation_mean")

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardtanh,
                        nn.Sigmoid, nn.Tanh, nn.Mish, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity,
                        nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                        nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_ELEMENTWISE_FUNCTIONS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardtanh,
                          F.sigmoid, F.tanh, F.mish, F.dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d,
                          F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d,
                          F.adaptive_max_pool2d, torch.relu, torch.sigmoid, torch.tanh}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels and m.groups > 1


def _is_dense_layer(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)


@dataclass
class Chain:
    """One prunable producer -> consumer chain (module names as in ``named_modules()``)."""

    producer: str
    consumer: str
    channels: int  # the producer's output channels
    between: list[str] = field(default_factory=list)  # BatchNorm / depthwise convs on the way
    spatial: int = 1  # input columns of the consumer per channel (a flatten on the chain), else 1
    last_node: str = ""  # the fx node whose value is the chain's output before any flatten


@dataclass
class PrunedChain:
    producer: str
    consumer: str
    channels_before: int
    channels_after: int


@dataclass
class ChannelPruneReport:
    chains: list[PrunedChain]
    params_before: int
    params_after: int
    skipped: list[str] = field(default_factory=list)  # dense layers that head no prunable chain

    def __str__(self) -> str:
        lines = [f"{'producer':<28} {'consumer':<28} channels"]
        lines += [f"{c.producer:<28} {c.consumer:<28} {c.channels_before} -> {c.channels_after}" for c in self.chains]
        lines.append(f"parameters {self.params_before:,} -> {self.params_after:,} "
                     f"({self.params_before / max(self.params_after, 1):.2f}x fewer)")
        return "\n".join(lines)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # data-dependent control flow and the like
        raise ValueError(f"channel pruning needs a model torch.fx can trace; tracing "
                         f"{type(model).__name__} failed: {e}") from e


def _flatten_kind(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    """Whether ``node`` flattens [N, C, ...] into [N, C * S] keeping the batch dimension."""
    if node.op == "call_module" and isinstance(mods[node.target], nn.Flatten):
        m = mods[node.target]
        return m.start_dim == 1 and m.end_dim == -1
    if node.op == "call_function" and node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    if node.op == "call_method" and node.target == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    if node.op == "call_method" and node.target in ("view", "reshape"):
        shape = node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return len(shape) == 2 and shape[1] == -1
    return False


def _shape_query(node: fx.Node) -> bool:
    """``x.size(...)``, ``x.shape``, ``x.dim()``: reads metadata, not the values."""
    if node.op == "call_method":
        return node.target in ("size", "dim")
    return node.op == "call_function" and node.target is getattr and node.args[1:] in (("shape",), ("ndim",))


def _elementwise(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(mods[node.target], _ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in _ELEMENTWISE_METHODS
    return False


def find_prunable_chains(model: nn.Module) -> tuple[list[Chain], list[str]]:
    """The model's prunable producer -> consumer chains, and the names of the dense layers that
    head none (their output feeds a residual, the model output, or an op not known to act per
    channel)."""
    gm = _trace(model)
    mods = dict(gm.named_modules())
    chains, skipped = [], []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not _is_dense_layer(mods[node.target]):
            continue
        producer = mods[node.target]
        C = producer.out_features if isinstance(producer, nn.Linear) else producer.out_channels
        chain = _follow(node, C, mods)
        if chain is None:
            skipped.append(node.target)
        else:
            chains.append(chain)
    return chains, skipped


def _follow(start: fx.Node, C: int, mods: dict[str, nn.Module]) -> Optional[Chain]:
    is_conv = isinstance(mods[start.target], nn.Conv2d)
    cur, between, flattened, last = start, [], False, start.name
    while True:
        users = [u for u in cur.users if not _shape_query(u)]
        if len(users) != 1:
            return None
        u = users[0]
        if u.args[:1] != (cur,) or any(a is cur for a in list(u.args[1:]) + list(u.kwargs.values())):
            return None  # the tensor must be the op's one data input
        if u.op == "call_module" and _is_dense_layer(mods[u.target]):
            consumer = mods[u.target]
            if isinstance(consumer, nn.Linear):
                if is_conv and not flattened:
                    return None  # a Linear over a conv output's last (spatial) dimension
                if consumer.in_features % C:
                    return None
                spatial = consumer.in_features // C
                if spatial != 1 and not flattened:
                    return None
            else:
                if flattened or not is_conv or consumer.in_channels != C:
                    return None
                spatial = 1
            return Chain(start.target, u.target, C, between, spatial, last)
        if u.op == "call_module" and not flattened and (
                isinstance(mods[u.target], (nn.BatchNorm1d, nn.BatchNorm2d)) or _is_depthwise(mods[u.target])):
            m = mods[u.target]
            if (m.num_features if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) else m.out_channels) != C:
                return None
            if _is_depthwise(m) and not is_conv:
                return None
            between.append(u.target)
        elif _flatten_kind(u, mods):
            if flattened or not is_conv:
                return None
            flattened = True
        elif not _elementwise(u, mods):
            return None
        if not flattened:
            last = u.name
        cur = u


# ---------------------------------------------------------------------------------------------
# importance


def _bn_scale(m: nn.Module) -> torch.Tensor:
    """|gamma| / sqrt(var + eps): what the BatchNorm multiplies its channel by (in eval mode)."""
    if m.running_var is not None:
        scale = torch.rsqrt(m.running_var.detach().float() + m.eps)
    else:
        scale = torch.ones(m.num_features)
    if m.weight is not None:
        scale = scale * m.weight.detach().float().abs()
    return scale


def _weight_importance(model: nn.Module, chain: Chain, p: int) -> torch.Tensor:
    producer = model.get_submodule(chain.producer)
    w = producer.weight.detach().float().reshape(chain.channels, -1)
    score = w.norm(p=p, dim=1)
    for name in chain.between:
        m = model.get_submodule(name)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            score = score * _bn_scale(m).to(score.device)
        else:  # depthwise conv: its filter scales the channel
            score = score * m.weight.detach().float().reshape(chain.channels, -1).norm(p=p, dim=1)
    return score


class _Recorder(fx.Interpreter):
    """Runs the traced model and keeps per-channel statistics of chosen nodes' values."""

    def __init__(self, gm: fx.GraphModule, watch: dict[str, int]):
        super().__init__(gm)
        self.watch = watch  # node name -> channel dimension
        self.nonzero: dict[str, torch.Tensor] = {}
        self.abs_sum: dict[str, torch.Tensor] = {}
        self.mean: dict[str, torch.Tensor] = {}
        self.count: dict[str, int] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.watch and isinstance(out, torch.Tensor):
            dim = self.watch[n.name]
            v = out.detach().float().movedim(dim, -1)
            v = v.reshape(-1, v.shape[-1])
            nz, ab, sm = (v != 0).sum(0).double(), v.abs().sum(0).double(), v.sum(0).double()
            if n.name in self.count:
                self.nonzero[n.name] += nz
                self.abs_sum[n.name] += ab
                self.mean[n.name] += sm
                self.count[n.name] += v.shape[0]
            else:
                self.nonzero[n.name], self.abs_sum[n.name], self.mean[n.name] = nz, ab, sm
                self.count[n.name] = v.shape[0]
        return out


def _activation_stats(model: nn.Module, chains: list[Chain], calibration) -> dict[str, tuple]:
    """Per chain: (frequency non-zero, mean |a|, mean a) of the chain's output channels."""
    gm = _trace(model)
    mods = dict(gm.named_modules())
    watch = {}
    for c in chains:
        watch[c.last_node] = 1 if isinstance(mods[c.producer], nn.Conv2d) else -1
    rec = _Recorder(gm, watch)
    batches = calibration if isinstance(calibration, (list, tuple)) else [calibration]
    with training_mode(gm, False), torch.no_grad():  # gm shares the model's modules
        for b in batches:
            rec.run(*(b if isinstance(b, (list, tuple)) else (b,)))
    out = {}
    for c in chains:
        n = max(rec.count.get(c.last_node, 0), 1)
        if c.last_node not in rec.count:
            raise ValueError(f"calibration did not reach the output of {c.producer!r}")
        out[c.producer] = (rec.nonzero[c.last_node] / n, rec.abs_sum[c.last_node] / n, rec.mean[c.last_node] / n)
    return out


def channel_importance(model: nn.Module, importance: str = "l1", calibration=None,
                       chains: Optional[list[Chain]] = None, stats: Optional[dict[str, tuple]] = None,
                       ) -> dict[str, torch.Tensor]:
    """Importance of every output channel of every prunable producer (name -> [channels]).
    ``stats``: :func:`_activation_stats` of these chains already gathered from ``calibration``."""
    if importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of {IMPORTANCE}, got {importance!r}")
    if chains is None:
        chains, _ = find_prunable_chains(model)
    if importance in ("l1", "l2"):
        return {c.producer: _weight_importance(model, c, 1 if importance == "l1" else 2) for c in chains}
    if calibration is None:
        raise ValueError(f"importance={importance!r} needs a calibration batch (calibration=...)")
    if stats is None:
        stats = _activation_stats(model, chains, calibration)
    if importance == "activation_mean":
        return {k: v[1].float() for k, v in stats.items()}
    # activation frequency; the mean |a| (scaled below one frequency step) breaks ties
    return {k: (v[0] + 1e-6 * v[1] / (v[1].max() + 1e-30)).float() for k, v in stats.items()}


# ---------------------------------------------------------------------------------------------
# rewriting


def _param(t: Optional[torch.Tensor], like: Optional[nn.Parameter]) -> Optional[nn.Parameter]:
    if t is None:
        return None
    return nn.Parameter(t.detach().clone(), requires_grad=like.requires_grad if like is not None else True)


@torch.no_grad()
def _shrink_output(m: nn.Module, keep: torch.Tensor) -> nn.Module:
    if isinstance(m, nn.Linear):
        new = nn.Linear(m.in_features, len(keep), bias=m.bias is not None, device=m.weight.device,
                        dtype=m.weight.dtype)
    elif isinstance(m, nn.Conv2d):
        groups = len(keep) if _is_depthwise(m) else 1
        new = nn.Conv2d(len(keep) if groups > 1 else m.in_channels, len(keep), m.kernel_size, m.stride, m.padding,
                        m.dilation, groups, m.bias is not None, m.padding_mode, device=m.weight.device,
                        dtype=m.weight.dtype)
    else:  # BatchNorm
        new = type(m)(len(keep), m.eps, m.momentum, m.affine, m.track_running_stats, device=m.running_mean.device
                      if m.running_mean is not None else None)
        if m.track_running_stats:
            new.running_mean.copy_(m.running_mean[keep])
            new.running_var.copy_(m.running_var[keep])
            new.num_batches_tracked.copy_(m.num_batches_tracked)
        if m.affine:
            new.weight = _param(m.weight[keep], m.weight)
            new.bias = _param(m.bias[keep], m.bias)
        new.train(m.training)
        return new
    new.weight = _param(m.weight[keep], m.weight)
    if m.bias is not None:
        new.bias = _param(m.bias[keep], m.bias)
    new.train(m.training)
    return new


@torch.no_grad()
def _shrink_input(m: nn.Module, cols: torch.Tensor, bias_shift: Optional[torch.Tensor]) -> nn.Module:
    if isinstance(m, nn.Linear):
        new = nn.Linear(len(cols), m.out_features, bias=m.bias is not None or bias_shift is not None,
                        device=m.weight.device, dtype=m.weight.dtype)
        new.weight = _param(m.weight[:, cols], m.weight)
    else:
        new = nn.Conv2d(len(cols), m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, 1,
                        m.bias is not None or bias_shift is not None, m.padding_mode, device=m.weight.device,
                        dtype=m.weight.dtype)
        new.weight = _param(m.weight[:, cols], m.weight)
    if new.bias is not None:
        b = m.bias.detach().clone() if m.bias is not None else torch.zeros_like(new.bias)
        if bias_shift is not None:
            b += bias_shift.to(b.dtype)
        new.bias = _param(b, m.bias)
    new.train(m.training)
    return new


def _keep_count(C: int, amount: float, multiple_of: int) -> int:
    keep = max(1, C - int(math.floor(amount * C + 1e-9)))
    keep = min(C, -(-keep // multiple_of) * multiple_of)
    return keep


Amount = Union[float, dict]


def _fractions(amount: Amount, names: set[str]) -> dict[str, float]:
    """``amount`` (one fraction for every prunable producer, or ``{producer: fraction}``) as a
    checked ``{producer: fraction}``."""
    fractions = amount if isinstance(amount, dict) else {n: amount for n in sorted(names)}
    for name, a in fractions.items():
        if name not in names:
            raise ValueError(f"amount names {name!r}, which heads no prunable chain (prunable: {sorted(names)})")
        if not isinstance(a, (int, float)) or not 0.0 <= a < 1.0:
            raise ValueError(f"amount must be a fraction in [0, 1), got {a!r} for {name!r}")
    return {name: float(a) for name, a in fractions.items()}


def prune_channels(
    model: nn.Module,
    amount: Amount,
    importance: str = "l1",
    calibration=None,
    compensate_bias: bool = True,
    multiple_of: int = 1,
    exclude: Sequence[str] = (),
    keep: Optional[dict[str, int]] = None,
) -> ChannelPruneReport:
    """Removes, in place, the least important output channels of every prunable producer and the
    matching inputs of its consumer (module docstring). ``amount``: the fraction of each
    producer's channels to remove, or ``{producer_name: fraction}`` (others untouched);
    ``keep``: ``{producer_name: channels to keep}`` instead. ``multiple_of`` rounds the kept
    count up (regular shapes for vector kernels). ``exclude``: producer names to leave alone.
    ``calibration``: an input batch (or a list of batches) for activation importance and bias
    compensation. Returns what changed."""
    if importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of {IMPORTANCE}, got {importance!r}")
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    chains, skipped = find_prunable_chains(model)
    names = {c.producer for c in chains}
    targets: dict[str, int] = {}
    if keep is not None:
        for name, k in keep.items():
            if name not in names:
                raise ValueError(f"keep names {name!r}, which heads no prunable chain (prunable: {sorted(names)})")
        for c in chains:
            if c.producer in keep:
                k = int(keep[c.producer])
                if not 1 <= k <= c.channels:
                    raise ValueError(f"keep[{c.producer!r}] must be in [1, {c.channels}], got {k}")
                targets[c.producer] = k
    else:
        fractions = _fractions(amount, names)
        for c in chains:
            if c.producer in fractions:
                targets[c.producer] = _keep_count(c.channels, fractions[c.producer], multiple_of)
    for name in exclude:
        targets.pop(name, None)
    params_before = count_parameters(model)
    work = [c for c in chains if c.producer in targets and targets[c.producer] < c.channels]
    # one calibration run serves both the activation importance and the bias compensation
    needs_stats = work and calibration is not None and (compensate_bias or importance.startswith("activation"))
    stats = _activation_stats(model, work, calibration) if needs_stats else {}
    scores = channel_importance(model, importance, calibration, work, stats or None) if work else {}
    if not compensate_bias:
        stats = {}
    done = []
    for c in work:
        k = targets[c.producer]
        order = torch.argsort(scores[c.producer].cpu(), descending=True, stable=True)
        kept = torch.sort(order[:k]).values
        removed = torch.sort(order[k:]).values
        model.set_submodule(c.producer, _shrink_output(model.get_submodule(c.producer), kept))
        for name in c.between:
            model.set_submodule(name, _shrink_output(model.get_submodule(name), kept))
        consumer = model.get_submodule(c.consumer)
        cols = (kept.unsqueeze(1) * c.spatial + torch.arange(c.spatial)).reshape(-1)
        shift = None
        if c.producer in stats:
            mean = stats[c.producer][2].to(consumer.weight.device)
            if isinstance(consumer, nn.Linear):
                rcols = (removed.unsqueeze(1) * c.spatial + torch.arange(c.spatial)).reshape(-1)
                shift = consumer.weight.detach().double()[:, rcols] @ mean[removed].repeat_interleave(c.spatial)
            else:  # every tap sees the channel's mean (padding taps aside)
                shift = consumer.weight.detach().double()[:, removed].sum(dim=(2, 3)) @ mean[removed]
        model.set_submodule(c.consumer, _shrink_input(consumer, cols.to(consumer.weight.device), shift))
        done.append(PrunedChain(c.producer, c.consumer, c.channels, k))
    return ChannelPruneReport(done, params_before, count_parameters(model), skipped)


def iterative_prune_channels(
    model: nn.Module,
    amount: Amount,
    finetune: Callable[[nn.Module, int, float], None],
    steps: int = 3,
    schedule: str = "cubic",
    importance: str = "l1",
    calibration=None,
    multiple_of: int = 1,
    exclude: Sequence[str] = (),
    progress: Progress = False,
) -> list[ChannelPruneReport]:
    """Removes ``amount`` of every prunable producer's channels (or ``{producer: fraction}``,
    others untouched) over ``steps`` steps on :func:`~sparsekit.pruning.sparsity_schedule` (of
    the channels the model had at the start), calling ``finetune(model, step, fraction)`` after
    each (``fraction``: the schedule's point, 0 to 1 of the way to ``amount``, for a dict).
    Build the optimizer inside ``finetune``: the parameters are new modules after every step.
    Returns each step's report. ``progress``: False (silent), True (a tqdm bar) or
    ``progress(done, total, name)``, called after each step's fine-tuning (``name``: what the
    step removed, e.g. ``"50% of channels removed, parameters 1,000 -> 600"``)."""
    from .pruning import sparsity_schedule

    chains, _ = find_prunable_chains(model)
    amounts = _fractions(amount, {c.producer for c in chains})
    original = {c.producer: c.channels for c in chains if c.producer in amounts and c.producer not in set(exclude)}
    reports = []
    top = max(amounts.values(), default=0.0)
    schedule_points = sparsity_schedule(1.0, steps, kind=schedule)
    with progress_steps(progress, len(schedule_points), "iterative_prune_channels") as done:
        for step, frac in enumerate(schedule_points):
            s = frac if isinstance(amount, dict) else frac * top
            targets = {name: _keep_count(C, frac * amounts[name], multiple_of) for name, C in original.items()}
            report = prune_channels(model, 0.0, importance, calibration, multiple_of=multiple_of, keep=targets)
            reports.append(report)
            finetune(model, step, s)
            what = f"{s:.0%} of channels removed" if not isinstance(amount, dict) else f"{s:.0%} of the way"
            done(f"{what}, parameters {report.params_before:,} -> {report.params_after:,}")
    return reports


__all__ = ["Chain", "ChannelPruneReport", "IMPORTANCE", "PrunedChain", "channel_importance", "count_parameters",
           "find_prunable_chains", "iterative_prune_channels", "prune_channels"]
