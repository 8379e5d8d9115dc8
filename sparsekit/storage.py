"""Compressed checkpoints: ``save_compressed`` / ``load_compressed``.

Every tensor of a model's ``state_dict`` is written in its packed format; the indices of the
compressed layers are Huffman-coded (canonical codes, native coder):

- ``CodebookLinear.indices``: the k-means indices as symbols (their frequencies are uneven, so
  a 2-bit index takes fewer than 2 bits; 3-bit indices also lose their 4-bit memory fields), or
  runs of ``8 // bits`` indices of a row as one symbol where that codes shorter (a pruned
  layer's zero centroid then costs well under one bit per weight);
- ``BlockSparseLinear.row_offsets`` as blocks per block row, ``col_indices`` as the gap to the
  previous block of the row (the first block: its column), both small numbers.

Everything else is stored raw. File layout (little-endian)::

    b"SPARSEKITC\\r\\n"  u32 version  u64 header bytes  header (UTF-8 JSON)  u32 crc32(header)
    then for each header entry: its bytes, u32 crc32(bytes)

The header lists every entry (name, dtype, shape, codec and the codec's parameters, byte
count). Loading checks the magic, the version, every checksum and every length, so a
truncated or corrupted file fails with a ``ValueError`` that names what is wrong.
"""

from __future__ import annotations

import heapq
import json
import os
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import nn

from . import _ext

MAGIC = b"SPARSEKITC\r\n"
VERSION = 1
MAX_CODE_BITS = 32


@dataclass
class CompressedEntry:
    name: str
    codec: str
    stored_bytes: int
    raw_bytes: int  # the tensor's bytes in memory (its packed format)


@dataclass
class CompressedReport:
    path: str
    file_bytes: int
    fp32_bytes: int  # the same model with dense fp32 weights, as torch.save stores its tensors
    state_bytes: int  # the packed state_dict's tensors (what torch.save of it stores)
    entries: list[CompressedEntry] = field(default_factory=list)

    @property
    def ratio_vs_fp32(self) -> float:
        return self.fp32_bytes / max(self.file_bytes, 1)

    def __str__(self) -> str:
        coded = sum(e.stored_bytes for e in self.entries if e.codec != "raw")
        coded_raw = sum(e.raw_bytes for e in self.entries if e.codec != "raw")
        return (f"{self.path}: {self.file_bytes:,} bytes; dense fp32 {self.fp32_bytes:,} bytes "
                f"({self.ratio_vs_fp32:.1f}x smaller); packed state {self.state_bytes:,} bytes; "
                f"Huffman-coded indices {coded:,} bytes (from {coded_raw:,})")


def huffman_code_lengths(freq: np.ndarray) -> Optional[np.ndarray]:
    """Huffman code lengths (uint8) for symbol frequencies; None if a code would exceed 32 bits."""
    present = np.flatnonzero(freq)
    lengths = np.zeros(len(freq), dtype=np.uint8)
    if len(present) == 0:
        return lengths
    if len(present) == 1:
        lengths[present[0]] = 1
        return lengths
    heap = [(int(freq[s]), int(s), (int(s),)) for s in present]
    heapq.heapify(heap)
    depth = {int(s): 0 for s in present}
    while len(heap) > 1:
        f1, k1, a = heapq.heappop(heap)
        f2, k2, b = heapq.heappop(heap)
        for s in a + b:
            depth[s] += 1
        heapq.heappush(heap, (f1 + f2, min(k1, k2), a + b))
    if max(depth.values()) > MAX_CODE_BITS:
        return None
    for s, d in depth.items():
        lengths[s] = d
    return lengths


def _huffman(symbols: np.ndarray, alphabet: int) -> Optional[tuple[list[int], bytes]]:
    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    lengths = huffman_code_lengths(np.bincount(symbols, minlength=alphabet) if symbols.size else
                                   np.zeros(alphabet, dtype=np.int64))
    if lengths is None:
        return None
    return lengths.tolist(), _ext.native().huffman_encode(symbols, lengths)


def _huffman_indices(idx: torch.Tensor, bits: int) -> tuple[Optional[tuple[list[int], bytes]], int]:
    """Huffman code of codebook indices ``[N, K]``, one symbol per index or per run of ``g =
    8 // bits`` indices along a row (alphabet 256: one code covers several weights, so a
    skewed distribution, such as the zero centroid of a pruned layer, goes below one bit per
    weight). Returns the shorter coding (its code lengths count: the header stores them) and g."""
    best, best_g = None, 1
    for g in sorted({1, max(1, 8 // bits)}):
        coded = _huffman(_group_symbols(idx, bits, g).reshape(-1).numpy(), 2 ** (bits * g))
        if coded is not None and (best is None or len(coded[1]) + 2 * len(coded[0]) < len(best[1]) + 2 * len(best[0])):
            best, best_g = coded, g
    return best, best_g


def _group_symbols(idx: torch.Tensor, bits: int, g: int) -> torch.Tensor:
    """``[N, K]`` indices -> ``[N, ceil(K / g)]`` symbols: index j of a run in bits j*bits.. (rows padded with 0)."""
    N, K = idx.shape
    if g == 1:
        return idx
    padded = torch.zeros(N, -(-K // g) * g, dtype=torch.int64)
    padded[:, :K] = idx
    shifts = torch.arange(g, dtype=torch.int64) * bits
    return (padded.view(N, -1, g) << shifts).sum(dim=2)


def _ungroup_symbols(symbols: torch.Tensor, bits: int, g: int, K: int) -> torch.Tensor:
    if g == 1:
        return symbols[:, :K]
    shifts = torch.arange(g, dtype=torch.int64) * bits
    return ((symbols.unsqueeze(2) >> shifts) & ((1 << bits) - 1)).reshape(symbols.shape[0], -1)[:, :K]


def _unhuffman(data: bytes, lengths: list[int], n: int, where: str) -> np.ndarray:
    out = np.empty(n, dtype=np.int32)
    try:
        _ext.native().huffman_decode(data, np.asarray(lengths, dtype=np.uint8), out)
    except ValueError as exc:
        raise ValueError(f"{where}: corrupted Huffman stream: {exc}") from exc
    return out


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _raw_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def _from_raw(data: bytes, dtype: str, shape: list[int]) -> torch.Tensor:
    dt = getattr(torch, dtype)
    if dt == torch.bfloat16:
        return torch.from_numpy(np.frombuffer(data, dtype=np.int16).copy()).view(torch.bfloat16).reshape(shape)
    np_dt = torch.empty(0, dtype=dt).numpy().dtype
    return torch.from_numpy(np.frombuffer(data, dtype=np_dt).copy()).reshape(shape)


def _codecs(model: nn.Module) -> dict[str, tuple]:
    """state_dict key -> (codec, params) for the tensors that are Huffman-coded."""
    from .block_sparse.format import grid_shape
    from .block_sparse.module import BlockSparseLinear
    from .codebook.module import CodebookLinear

    out = {}
    for prefix, mod in model.named_modules():
        p = prefix + "." if prefix else ""
        if isinstance(mod, CodebookLinear):
            out[p + "indices"] = ("huffman_codebook_indices", {"bits": mod.bits, "K": mod.in_features,
                                                                "N": mod.out_features})
        elif isinstance(mod, BlockSparseLinear):
            Nb, Kb = grid_shape((mod.out_features, mod.in_features), mod.block_size)
            out[p + "row_offsets"] = ("huffman_bsr_rows", {"Kb": Kb})
            out[p + "col_indices"] = ("huffman_bsr_columns", {"Kb": Kb, "rows": p + "row_offsets"})
    return out


def _dense_fp32_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors with every sparsekit layer's weight dense fp32."""
    from .binary.module import BinaryConv2d, BinaryLinear
    from .block_sparse.module import BlockSparseLinear
    from .codebook.module import CodebookLinear

    total, seen = 0, set()  # seen: tensors already counted (a sparsekit layer's own, shared ones)
    for _, mod in model.named_modules():
        if isinstance(mod, (BinaryLinear, BlockSparseLinear, CodebookLinear)):
            total += mod.out_features * mod.in_features * 4
        elif isinstance(mod, BinaryConv2d):
            total += mod.out_channels * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] * 4
        else:
            continue
        if getattr(mod, "bias", None) is not None:
            total += mod.bias.numel() * 4
        seen.update(id(t) for t in list(mod.parameters(recurse=False)) + list(mod.buffers(recurse=False)))
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def save_compressed(model: nn.Module, path: str | os.PathLike) -> CompressedReport:
    """Writes ``model.state_dict()`` to ``path`` in the compressed format (module docstring)."""
    state = model.state_dict()
    codecs = _codecs(model)
    entries, blobs, report_entries = [], [], []
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is not a tensor")
        if t.device.type == "meta":
            raise ValueError(f"state_dict entry {name!r} is on the meta device (no data to save)")
        entry = {"name": name, "dtype": _dtype_name(t.dtype), "shape": list(t.shape), "codec": "raw"}
        codec, params = codecs.get(name, ("raw", {}))
        if codec == "huffman_codebook_indices":
            from .codebook.format import unpack_indices

            coded, group = _huffman_indices(unpack_indices(t.cpu(), params["bits"], params["K"]), params["bits"])
            params = dict(params, group=group)
        elif codec == "huffman_bsr_rows":
            coded = _huffman(np.diff(t.cpu().numpy().astype(np.int64)), params["Kb"] + 1)
        elif codec == "huffman_bsr_columns":
            offsets = state[params["rows"]].cpu().numpy().astype(np.int64)
            coded = _huffman(_bsr_gaps_from_cols(t.cpu().numpy().astype(np.int64), offsets), params["Kb"])
        else:
            coded = None
        if coded is not None:
            lengths, blob = coded
            entry.update(codec=codec, lengths=lengths, **params)
        else:
            blob = _raw_bytes(t)
        entry["nbytes"] = len(blob)
        entries.append(entry)
        blobs.append(blob)
        report_entries.append(CompressedEntry(name, entry["codec"], len(blob), t.numel() * t.element_size()))
    header = json.dumps({"version": VERSION, "entries": entries}, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<IQ", VERSION, len(header)))
        f.write(header)
        f.write(struct.pack("<I", zlib.crc32(header)))
        for blob in blobs:
            f.write(blob)
            f.write(struct.pack("<I", zlib.crc32(blob)))
    state_bytes = sum(t.numel() * t.element_size() for t in state.values())
    return CompressedReport(str(path), os.path.getsize(path), _dense_fp32_bytes(model), state_bytes, report_entries)


def load_compressed(path: str | os.PathLike, model: Optional[nn.Module] = None):
    """Reads a file written by :func:`save_compressed`. Returns the state_dict, or, with
    ``model``, loads it into the model (``strict``; each module checks its format record) and
    returns the model. ``ValueError`` on a wrong, truncated or corrupted file."""
    with open(path, "rb") as f:
        data = f.read()
    where = os.fspath(path)

    def need(pos: int, n: int, what: str) -> None:
        if pos + n > len(data):
            raise ValueError(f"{where}: truncated file ({what}: needs {n} bytes at offset {pos}, "
                             f"the file has {len(data)})")

    need(0, len(MAGIC) + 12, "file header")
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError(f"{where}: not a sparsekit compressed checkpoint (bad magic)")
    version, hlen = struct.unpack_from("<IQ", data, len(MAGIC))
    if version != VERSION:
        raise ValueError(f"{where}: compressed format version {version} is not supported (this sparsekit reads "
                         f"{VERSION})")
    pos = len(MAGIC) + 12
    need(pos, hlen + 4, "header")
    header = data[pos: pos + hlen]
    (crc,) = struct.unpack_from("<I", data, pos + hlen)
    if zlib.crc32(header) != crc:
        raise ValueError(f"{where}: header checksum mismatch (corrupted file)")
    try:
        meta = json.loads(header)
        entries = meta["entries"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: unreadable header: {exc}") from exc
    pos += hlen + 4
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for e in entries:
        name, n = e["name"], int(e["nbytes"])
        if n < 0:
            raise ValueError(f"{where}: entry {name!r} has a negative size")
        need(pos, n + 4, f"entry {name!r}")
        blob = data[pos: pos + n]
        (crc,) = struct.unpack_from("<I", data, pos + n)
        if zlib.crc32(blob) != crc:
            raise ValueError(f"{where}: checksum mismatch in entry {name!r} (corrupted file)")
        pos += n + 4
        state[name] = (e, blob)
    if pos != len(data):
        raise ValueError(f"{where}: {len(data) - pos} unexpected bytes after the last entry")
    # column indices decode against their row offsets, wherever those stand in the file
    for first_pass in (True, False):
        for name, item in state.items():
            if isinstance(item, tuple) and (item[0]["codec"] == "huffman_bsr_columns") != first_pass:
                state[name] = _decode(item[0], item[1], state, f"{where}: entry {name!r}")
    if model is None:
        return state
    model.load_state_dict(state)
    return model


def _decode(e: dict, blob: bytes, state: dict, where: str) -> torch.Tensor:
    codec, shape, dtype = e["codec"], [int(s) for s in e["shape"]], e["dtype"]
    numel = int(np.prod(shape)) if shape else 1
    if codec == "raw":
        itemsize = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
        if len(blob) != numel * itemsize:
            raise ValueError(f"{where}: {len(blob)} bytes for a {dtype} tensor of shape {shape}")
        return _from_raw(blob, dtype, shape)
    if codec == "huffman_codebook_indices":
        from .codebook.format import pack_indices

        bits, K, N, g = int(e["bits"]), int(e["K"]), int(e["N"]), int(e.get("group", 1))
        if g < 1 or (g > 1 and bits * g > 8) or len(e["lengths"]) != 2 ** (bits * g):
            raise ValueError(f"{where}: bad index grouping (bits={bits}, group={g}, {len(e['lengths'])} code lengths)")
        symbols = _unhuffman(blob, e["lengths"], N * (-(-K // g)), where)
        idx = _ungroup_symbols(torch.from_numpy(symbols.astype(np.int64)).reshape(N, -1), bits, g, K)
        return pack_indices(idx, bits).reshape(shape)
    if codec == "huffman_bsr_rows":
        counts = _unhuffman(blob, e["lengths"], numel - 1, where).astype(np.int64)
        return torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    if codec == "huffman_bsr_columns":
        offsets = state.get(e["rows"])
        if not isinstance(offsets, torch.Tensor):
            raise ValueError(f"{where}: its row offsets {e['rows']!r} are missing")
        gaps = _unhuffman(blob, e["lengths"], numel, where).astype(np.int64)
        offs = offsets.numpy().astype(np.int64)
        if offs.size == 0 or offs[0] != 0 or offs[-1] != numel or bool((np.diff(offs) < 0).any()):
            raise ValueError(f"{where}: row offsets do not match {numel} blocks")
        return torch.from_numpy(_bsr_cols_from_gaps(gaps, offs).astype(np.int32))
    raise ValueError(f"{where}: unknown codec {codec!r}")


def _bsr_gaps_from_cols(cols: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """The column coding: per block row, gap[0] = col[0], gap[i] = col[i] - col[i-1] - 1 (>= 0:
    the columns of a row increase strictly)."""
    gaps = cols.copy()
    gaps[1:] -= cols[:-1] + 1
    starts = offs[:-1][np.diff(offs) > 0]
    gaps[starts] = cols[starts]
    return gaps


def _bsr_cols_from_gaps(gaps: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Inverse of the column coding: per block row, col[0] = gap[0], col[i] = col[i-1] + 1 + gap[i]."""
    cols = np.empty_like(gaps)
    for r in range(len(offs) - 1):
        a, b = offs[r], offs[r + 1]
        if b > a:
            g = gaps[a:b].copy()
            g[1:] += 1
            cols[a:b] = np.cumsum(g)
    return cols
