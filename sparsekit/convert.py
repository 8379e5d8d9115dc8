"""``sparsekit.convert``: swap the layers of a model for their compressed versions, in place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ._progress import Progress, progress_steps
from .config import Config, handler_for


def module_nbytes(module: nn.Module) -> int:
    """Bytes of a module's own parameters and buffers (what its state dict stores)."""
    if hasattr(module, "nbytes") and isinstance(getattr(type(module), "nbytes", None), property):
        return int(module.nbytes)
    ts = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    return sum(t.numel() * t.element_size() for t in ts)


@dataclass
class ConvertedLayer:
    name: str
    before: str
    after: str
    bytes_before: int
    bytes_after: int


@dataclass
class ConvertReport:
    layers: list[ConvertedLayer] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def bytes_before(self) -> int:
        return sum(layer.bytes_before for layer in self.layers)

    @property
    def bytes_after(self) -> int:
        return sum(layer.bytes_after for layer in self.layers)

    def __str__(self) -> str:
        lines = [f"{'layer':<30} {'before':<12} {'after':<22} {'bytes':>22}"]
        for layer in self.layers:
            lines.append(f"{layer.name:<30} {layer.before:<12} {layer.after:<22} "
                         f"{layer.bytes_before:>10} -> {layer.bytes_after:<10}")
        ratio = self.bytes_before / max(1, self.bytes_after)
        lines.append(f"{len(self.layers)} layers converted, {len(self.skipped)} skipped; "
                     f"converted layers: {self.bytes_before} -> {self.bytes_after} bytes ({ratio:.2f}x smaller)")
        return "\n".join(lines)


def convert(
    model: nn.Module,
    config: Config,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    *,
    progress: Progress = False,
) -> ConvertReport:
    """Replaces, in place, every submodule that ``config`` accepts and ``filter_fn(module, name)``
    allows. Returns a report of what changed. The model itself is never replaced (wrap a bare
    layer in a container to convert it). ``progress``: False (silent), True (a tqdm bar) or
    ``progress(done, total, name)``, called after each layer the config accepts (converted or
    skipped)."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a sparsekit Config, got {type(config).__name__}")
    handler = handler_for(config)
    report = ConvertReport()
    candidates = [(name, module) for name, module in list(model.named_modules())
                  if module is not model and config.accepts(module)]
    with progress_steps(progress, len(candidates), "convert") as step:
        for name, module in candidates:
            _convert_one(model, name, module, config, handler, filter_fn, report)
            step(name)
    return report


def _convert_one(model: nn.Module, name: str, module: nn.Module, config: Config, handler,
                 filter_fn: Callable[[nn.Module, str], bool] | None, report: ConvertReport) -> None:
    if filter_fn is not None and not filter_fn(module, name):
        report.skipped.append(name)
        return
    new = handler(module, config)
    if new is None or new is module:
        report.skipped.append(name)
        return
    model.set_submodule(name, new)
    report.layers.append(ConvertedLayer(name, type(module).__name__, type(new).__name__,
                                        module_nbytes(module), module_nbytes(new)))
