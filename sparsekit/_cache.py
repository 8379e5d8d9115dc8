"""A small cache of tensors derived from weights (a densified or a transposed copy), shared by
the ops that prepare a weight for their kernel.

An entry is keyed by its source tensors' data pointers and version counters and kept with weak
references to them, so an in-place update (the version moves), a different tensor at a reused
address (the reference no longer points to it) or a freed weight never hits a stale entry.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Callable

import torch


class DerivedCache:
    def __init__(self):
        self._entries: "OrderedDict[tuple, tuple]" = OrderedDict()

    def get(self, sources: tuple, extra: tuple, make: Callable[[], torch.Tensor], capacity: int) -> torch.Tensor:
        """``make()`` for these source tensors, cached (least recently used first out beyond
        ``capacity`` entries; 0 computes it every call)."""
        key = tuple((t.data_ptr(), t._version) for t in sources) + extra
        hit = self._entries.get(key)
        if hit is not None and all(ref() is t for ref, t in zip(hit[0], sources)):
            self._entries.move_to_end(key)
            return hit[1]
        value = make()
        if capacity > 0:
            self._entries[key] = (tuple(weakref.ref(t) for t in sources), value)
            while len(self._entries) > capacity:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
