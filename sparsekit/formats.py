"""The format-version tensor every sparsekit module keeps in its state dict.

A state dict holds tensors only; each packed module stores an int64 buffer
``format = [version, *shape fields]``. Loading checks it against the module the
state is loaded into, so a checkpoint of another version, shape or packing fails
with a clear error instead of producing garbage.
"""

from __future__ import annotations

import torch


def format_tensor(fields: list[int], device=None) -> torch.Tensor:
    return torch.tensor(fields, dtype=torch.int64, device=device)


def check_format_tensor(saved, kind: str, expected: list[int], names: list[str], where: str) -> None:
    if not isinstance(saved, torch.Tensor) or saved.dtype != torch.int64 or saved.dim() != 1:
        raise ValueError(f"{where}: 'format' entry of a {kind} state dict must be a 1-D int64 tensor")
    if saved.device.type == "meta":
        return
    got = [int(v) for v in saved.cpu().tolist()]
    if len(got) != len(expected):
        raise ValueError(f"{where}: {kind} format record has {len(got)} fields, expected {len(expected)} ({names})")
    if got[0] != expected[0]:
        raise ValueError(f"{where}: {kind} format version {got[0]} is not supported (this sparsekit reads {expected[0]})")
    diffs = [f"{n}={g} (module has {e})" for n, g, e in zip(names[1:], got[1:], expected[1:]) if g != e]
    if diffs:
        raise ValueError(f"{where}: checkpoint does not match this {kind} module: " + ", ".join(diffs))


class VersionedFormat:
    """Mixin for packed modules: checks the ``format`` record of a state dict against the
    module, then validates the tensors the module would hold after loading
    (:meth:`_validate_loaded`) *before* any of them is copied in, so a rejected state dict
    leaves the module as it was. The validation runs on every load, with or without a
    ``format`` entry (``strict=False`` may leave it out) and on a partial state dict (what it
    does not hold stays the module's own). Put it before ``nn.Module`` in the bases."""

    FORMAT_KIND = "packed"
    FORMAT_FIELDS: tuple[str, ...] = ()  # the names of _format_fields()[1:]

    def _format_fields(self) -> list[int]:
        raise NotImplementedError

    def _validate_loaded(self, where: str) -> None:
        """Raise ValueError if the module's tensors are inconsistent (default: nothing to check).
        Reads them as attributes: during a load they are the incoming ones (see below)."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key, where = prefix + "format", prefix or type(self).__name__
        if key in state_dict:
            check_format_tensor(state_dict[key], self.FORMAT_KIND, self._format_fields(),
                                ["version", *self.FORMAT_FIELDS], where=where)
        self._validate_incoming(state_dict, prefix, where)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _validate_incoming(self, state_dict, prefix: str, where: str) -> None:
        """:meth:`_validate_loaded` on the tensors a load would leave: each of the module's own
        parameters and buffers found in ``state_dict`` stands in for the module's for the check
        (nothing is copied), the others are the module's. Shapes that differ from the module's
        are left to ``nn.Module``'s own size check (an error, nothing of this module loaded)."""
        swapped = []
        try:
            for table in (self._parameters, self._buffers):
                for name, current in table.items():
                    incoming = state_dict.get(prefix + name)
                    if current is None or not isinstance(incoming, torch.Tensor):
                        continue
                    if incoming.shape != current.shape:
                        return
                    swapped.append((table, name, current))
                    table[name] = incoming
            self._validate_loaded(where)
        finally:
            for table, name, current in swapped:
                table[name] = current

    @property
    def nbytes(self) -> int:
        """Bytes of what the layer stores for inference (see :meth:`_stored_tensors`)."""
        return sum(t.numel() * t.element_size() for t in self._stored_tensors() if t is not None)

    def _stored_tensors(self) -> list:
        raise NotImplementedError
