"""Conversion configs: one dataclass per compressed format, one registered handler each.

``sparsekit.convert(model, config)`` looks up the handler registered for
``type(config)`` and calls it on every module that the config accepts (and that
``filter_fn`` lets through). New formats add a config class and a handler with
:func:`register_handler`; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

_HANDLERS: dict[type, Callable[[nn.Module, "Config"], nn.Module | None]] = {}


@dataclass
class Config:
    """Base of every conversion config."""

    def accepts(self, module: nn.Module) -> bool:  # which modules the handler can convert
        return False


def register_handler(config_cls: type):
    """Decorator: ``handler(module, config) -> new module`` (or None to leave it) for ``config_cls``."""

    def deco(fn):
        _HANDLERS[config_cls] = fn
        return fn

    return deco


def handler_for(config: Config):
    for cls in type(config).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    raise TypeError(f"no conversion handler is registered for {type(config).__name__}")
