"""Compressed checkpoints: ``save_compressed`` / ``load_compressed``.

Every tensor of a model's ``state_dict`` is written in its packed format; the indices of the
compressed layers are Huffman-coded (canonical codes, native coder):

- ``CodebookLinear.indices``: the k-means indices as symbols (their frequencies are uneven, so
  a 2-bit index takes fewer than 2 bits; 3-bit indices also lose their 4-bit memory fields), or
  runs of ``8 // bits`` indices of a row as one symbol where that codes shorter (a pruned
  layer's zero centroid then costs well under one bit per weight);
- ``BlockSparseLinear.row_offsets`` as blocks per block row, ``col_indices`` as the gap to the
  previous block of the row (the first block: its column), both small numbers.

Everything else is stored raw. The file is a safetensors file (its own header: u64 length,
then JSON naming each tensor's dtype, shape and byte range; then the tensors' bytes). Each
``state_dict`` entry is the tensor of the same name: the tensor itself if raw, a uint8 tensor of
the code's bytes if Huffman-coded. The safetensors metadata holds two strings::

    "sparsekit"        the format record, JSON: {"version": 2, "entries": [...]}, one entry per
                       state_dict tensor in state_dict order: name, dtype, shape, codec, the
                       codec's parameters, crc32 of the stored bytes
    "sparsekit.crc32"  crc32 of the format record's text, in decimal

safetensors checks its own header (offsets, sizes, dtypes); the checksums, which it does not
have, catch flipped bits. Loading trusts nothing else in the file either: the format record is
checked against a strict schema (types, ranges, exactly the keys of its codec) and against the
safetensors header, and every size and symbol count against the bytes present, before anything
is allocated. A wrong, truncated, corrupted or crafted file fails with a ``ValueError`` that names
the file, the entry and what is wrong, and memory stays within a fixed multiple of the file's
size. Files of format version 1 (a home-made container) are refused with that version named.
"""

from __future__ import annotations

import heapq
import json
import os
import reprlib
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from . import _ext
from ._progress import Progress, progress_steps

VERSION = 2
MAGIC_V1 = b"SPARSEKITC\r\n"  # how files of version 1 began
RECORD_KEY, RECORD_CRC_KEY = "sparsekit", "sparsekit.crc32"  # safetensors metadata
MAX_CODE_BITS = 32

# What a file may hold (load_compressed checks every entry against these before decoding it):
# dtype name in the record -> (torch dtype, its safetensors name)
DTYPES = {
    "float64": (torch.float64, "F64"), "float32": (torch.float32, "F32"), "float16": (torch.float16, "F16"),
    "bfloat16": (torch.bfloat16, "BF16"), "int64": (torch.int64, "I64"), "int32": (torch.int32, "I32"),
    "int16": (torch.int16, "I16"), "int8": (torch.int8, "I8"), "uint8": (torch.uint8, "U8"),
    "bool": (torch.bool, "BOOL"),
}
_ENTRY_KEYS = ("name", "dtype", "shape", "codec", "crc32")
_CODEC_KEYS = {  # the codec's parameters, all required
    "raw": (),
    "huffman_codebook_indices": ("bits", "K", "N", "group", "lengths"),
    "huffman_bsr_rows": ("Kb", "lengths"),
    "huffman_bsr_columns": ("Kb", "rows", "lengths"),
}
_MAX_DIMS = 64
_MAX_NUMEL = 2**62  # dimensions multiply to at most this (zeros counted as ones): no overflow in torch
_INT32_MAX = 2**31 - 1
_UNPACK_BLOCK = 1 << 16  # codebook indices unpacked at a time (int64 intermediates stay small)


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
    return lengths.tolist(), huffman_encode(symbols, lengths)


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """The canonical Huffman code of int32 ``symbols`` (code ``lengths``, uint8 per symbol) as
    bytes, MSB first (the native op ``sparsekit::_huffman_encode``)."""
    _ext.native()
    code = torch.ops.sparsekit._huffman_encode(torch.from_numpy(np.ascontiguousarray(symbols)),
                                               torch.from_numpy(np.ascontiguousarray(lengths)))
    return code.numpy().tobytes()


def huffman_decode(data: bytes, lengths: np.ndarray, n: int) -> np.ndarray:
    """``n`` int32 symbols from the code bytes; ValueError on a truncated or invalid stream
    (the native op ``sparsekit::_huffman_decode``, which trusts neither ``n`` nor the bytes)."""
    _ext.native()
    stream = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    return torch.ops.sparsekit._huffman_decode(stream, torch.from_numpy(np.ascontiguousarray(lengths)), n).numpy()


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


def _unhuffman(data: bytes, lengths: np.ndarray, n: int, where: str, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``n`` symbols from a stream of code ``lengths`` (uint8), into ``out`` (int32) if given.
    Every code has at least one bit: ``n`` is checked against the stream before allocating."""
    if n > 8 * len(data):
        raise ValueError(f"{where}: {n} symbols cannot be coded in {len(data)} bytes (at most 8 per byte)")
    try:
        symbols = huffman_decode(data, lengths, n)
    except ValueError as exc:
        raise ValueError(f"{where}: corrupted Huffman stream: {exc}") from exc
    if out is None:
        return symbols
    out[:] = symbols
    return out


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor (uint8, no copy)."""
    if t.numel() == 0:
        return np.empty(0, dtype=np.uint8)
    return t.reshape(-1).view(torch.uint8).numpy()


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


def save_compressed(model: nn.Module, path: str | os.PathLike, *, progress: Progress = False) -> CompressedReport:
    """Writes ``model.state_dict()`` to ``path`` in the compressed format (module docstring).
    ``progress``: False (silent), True (a tqdm bar) or ``progress(done, total, name)``, called
    after each state_dict entry is coded (``name``: the entry's)."""
    state = model.state_dict()
    codecs = _codecs(model)
    entries, tensors, report_entries, storages = [], {}, [], set()
    with progress_steps(progress, len(state), "save_compressed") as done:
        for name, t in state.items():
            entry, stored = _encode_entry(name, t, state, codecs, storages)
            entries.append(entry)
            tensors[name] = stored
            nbytes = stored.numel() * stored.element_size()
            report_entries.append(CompressedEntry(name, entry["codec"], nbytes, t.numel() * t.element_size()))
            done(name)
    record = json.dumps({"version": VERSION, "entries": entries}, separators=(",", ":"))
    metadata = {RECORD_KEY: record, RECORD_CRC_KEY: str(zlib.crc32(record.encode()))}
    safetensors.torch.save_file(tensors, path, metadata=metadata)
    state_bytes = sum(t.numel() * t.element_size() for t in state.values())
    return CompressedReport(str(path), os.path.getsize(path), _dense_fp32_bytes(model), state_bytes, report_entries)


def _encode_entry(name: str, t, state: dict, codecs: dict, storages: set) -> tuple[dict, torch.Tensor]:
    """One state_dict entry's record and the tensor the file stores for it (its code's bytes, or
    the tensor itself); ``storages``: the storages already stored, for tied weights."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"state_dict entry {name!r} is not a tensor")
    if t.device.type == "meta":
        raise ValueError(f"state_dict entry {name!r} is on the meta device (no data to save)")
    if _dtype_name(t.dtype) not in DTYPES:
        raise ValueError(f"state_dict entry {name!r}: dtype {t.dtype} cannot be stored (one of {sorted(DTYPES)})")
    if name == "__metadata__":
        raise ValueError("a state_dict entry named '__metadata__' cannot be stored (safetensors reserves it)")
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
        stored = torch.from_numpy(np.frombuffer(blob, dtype=np.uint8).copy())
    else:
        stored = t.detach().cpu().contiguous()
        if stored.numel() and stored.untyped_storage().data_ptr() in storages:
            stored = stored.clone()  # tied weights: safetensors stores each tensor on its own
        storages.add(stored.untyped_storage().data_ptr())
    entry["crc32"] = zlib.crc32(_tensor_bytes(stored))
    return entry, stored


def load_compressed(path: str | os.PathLike, model: Optional[nn.Module] = None):
    """Reads a file written by :func:`save_compressed`. Returns the state_dict, or, with
    ``model``, loads it into the model and returns the model. ``ValueError`` naming the problem
    on a wrong, truncated, corrupted or crafted file, and, before anything is loaded, on a file
    that does not match the model (names, shapes, integer dtypes, the format records of
    sparsekit layers). Memory stays within a fixed multiple of the file's size."""
    where = os.fspath(path)
    with open(path, "rb") as f:
        if f.read(len(MAGIC_V1)) == MAGIC_V1:
            raise ValueError(f"{where}: compressed format version 1 is not supported (this sparsekit reads "
                             f"{VERSION}); save the model again with this sparsekit")
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            entries = _read_record(f.metadata() or {}, where)
            stored = _read_tensors(f, entries, where)
    except safetensors.SafetensorError as exc:
        raise ValueError(f"{where}: not a sparsekit compressed checkpoint, or a truncated, extended or "
                         f"corrupted one (safetensors: {exc})") from exc
    state = _decode_all(entries, stored)
    if model is None:
        return state
    _check_matches_model(state, model, where)
    model.load_state_dict(state)
    return model


def _read_record(metadata: dict, where: str) -> list[tuple[dict, str]]:
    """The format record from the safetensors metadata, checksum and schema checked."""
    if RECORD_KEY not in metadata:
        raise ValueError(f"{where}: not a sparsekit compressed checkpoint (a safetensors file without sparsekit's "
                         f"format record)")
    text = metadata[RECORD_KEY].encode()
    if metadata.get(RECORD_CRC_KEY) != str(zlib.crc32(text)):
        raise ValueError(f"{where}: format record checksum mismatch (corrupted file)")
    return _parse_record(text, where)


def _read_tensors(f, entries: list[tuple[dict, str]], where: str) -> list[torch.Tensor]:
    """Each entry's stored tensor, after its dtype and shape in the safetensors header are checked
    against the record, and its checksum."""
    names = {e["name"] for e, _ in entries}
    keys = set(f.keys())
    if keys != names:
        raise ValueError(f"{where}: the tensors of the file and the entries of its format record differ: "
                         f"{_show(sorted(keys - names))} not in the record, {_show(sorted(names - keys))} not "
                         f"in the file")
    out = []
    for e, w in entries:
        info = f.get_slice(e["name"])
        got = (info.get_dtype(), list(info.get_shape()))
        if e["codec"] == "raw":
            expected = (DTYPES[e["dtype"]][1], e["shape"])
            if got != expected:
                raise ValueError(f"{w}: stored as {got[0]} {got[1]}, the format record says {expected[0]} {expected[1]}")
        elif got[0] != "U8" or len(got[1]) != 1:
            raise ValueError(f"{w}: a coded stream is stored as U8 bytes, not {got[0]} {got[1]}")
        t = f.get_tensor(e["name"])
        if zlib.crc32(_tensor_bytes(t)) != e["crc32"]:
            raise ValueError(f"{where}: checksum mismatch in entry {e['name']!r} (corrupted file)")
        out.append(t)
    return out


def _show(value) -> str:
    """A short repr of a value from a file (it may be huge or deeply nested)."""
    return reprlib.repr(value)


def _int_field(e: dict, key: str, where: str, lo: int, hi: int) -> int:
    v = e[key]
    if type(v) is not int or not lo <= v <= hi:  # type(): True is an int to isinstance
        raise ValueError(f"{where}: {key} must be an integer in [{lo}, {hi}], not {_show(v)}")
    return v


def _parse_record(text: bytes, where: str) -> list[tuple[dict, str]]:
    """The format record's entries, each with the name errors give it; checks the record's
    structure and each entry's keys, name, dtype, shape and checksum field (the codec's
    parameters are checked where they are used, in :func:`_decode`)."""
    try:
        meta = json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: unreadable format record: nested too deeply") from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise ValueError(f"{where}: unreadable format record: {exc}") from exc
    if isinstance(meta, dict) and "version" in meta and (type(meta["version"]) is not int
                                                         or meta["version"] != VERSION):
        raise ValueError(f"{where}: compressed format version {_show(meta['version'])} is not supported (this "
                         f"sparsekit reads {VERSION})")
    if not isinstance(meta, dict) or set(meta) != {"version", "entries"}:
        raise ValueError(f"{where}: the format record must be an object with 'version' and 'entries', not "
                         f"{_show(meta)}")
    if not isinstance(meta["entries"], list):
        raise ValueError(f"{where}: the format record's entries must be a list, not {_show(meta['entries'])}")
    out, names = [], set()
    for i, e in enumerate(meta["entries"]):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
            raise ValueError(f"{where}: entry #{i} must be an object with a name (a non-empty string), not {_show(e)}")
        w = f"{where}: entry {e['name']!r}"
        if e["name"] in names:
            raise ValueError(f"{w}: the name appears twice")
        names.add(e["name"])
        codec = e.get("codec")
        if not isinstance(codec, str) or codec not in _CODEC_KEYS:
            raise ValueError(f"{w}: unknown codec {_show(codec)}")
        expected = set(_ENTRY_KEYS) | set(_CODEC_KEYS[codec])
        if set(e) != expected:
            raise ValueError(f"{w}: keys {sorted(set(e) - expected)} unexpected, {sorted(expected - set(e))} "
                             f"missing for codec {codec!r}")
        if not isinstance(e["dtype"], str) or e["dtype"] not in DTYPES:  # an allow-list, not getattr(torch, ...)
            raise ValueError(f"{w}: dtype {_show(e['dtype'])} is not one of {sorted(DTYPES)}")
        shape = e["shape"]
        if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
                or not all(type(d) is int and 0 <= d <= _MAX_NUMEL for d in shape)):
            raise ValueError(f"{w}: shape must be a list of at most {_MAX_DIMS} non-negative integers, not "
                             f"{_show(shape)}")
        if _numel([max(d, 1) for d in shape]) > _MAX_NUMEL:
            raise ValueError(f"{w}: shape {_show(shape)} is too large")
        _int_field(e, "crc32", w, 0, 2**32 - 1)
        out.append((e, w))
    return out


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d  # Python integers: no overflow
    return n


def _code_lengths(e: dict, alphabet: int, where: str) -> np.ndarray:
    lengths = e["lengths"]
    if not isinstance(lengths, list) or len(lengths) != alphabet:
        raise ValueError(f"{where}: needs a list of {alphabet} code lengths, not {_show(lengths)}")
    if not all(type(n) is int and 0 <= n <= MAX_CODE_BITS for n in lengths):
        raise ValueError(f"{where}: code lengths must be integers in [0, {MAX_CODE_BITS}], not {_show(lengths)}")
    return np.array(lengths, dtype=np.uint8)


def _decode_all(entries: list[tuple[dict, str]], stored: list[torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    state: "OrderedDict[str, object]" = OrderedDict((e["name"], None) for e, _ in entries)
    # column indices decode against their row offsets, wherever those stand in the file
    for first_pass in (True, False):
        for (e, w), t in zip(entries, stored):
            if (e["codec"] == "huffman_bsr_columns") != first_pass:
                state[e["name"]] = _decode(e, t, state, w)
    return state


def _decode(e: dict, stored: torch.Tensor, state: dict, where: str) -> torch.Tensor:
    """One entry's tensor from what the file stores for it (its dtype and shape checked against
    the record by :func:`_read_tensors`). Every codec parameter is checked against the entry's
    shape and the bytes present before anything is allocated."""
    codec, shape, dtype = e["codec"], e["shape"], DTYPES[e["dtype"]][0]
    numel = _numel(shape)
    if codec == "raw":
        if dtype == torch.bool and bool((stored.view(torch.uint8) > 1).any()):
            raise ValueError(f"{where}: a bool tensor holds bytes other than 0 and 1")
        return stored
    if dtype != torch.int32:
        raise ValueError(f"{where}: codec {codec} stores int32 tensors, not {e['dtype']}")
    blob = _tensor_bytes(stored).tobytes()
    if codec == "huffman_codebook_indices":
        from .codebook.format import SUPPORTED_BITS, index_words

        bits = _int_field(e, "bits", where, 1, 8)
        if bits not in SUPPORTED_BITS:
            raise ValueError(f"{where}: bits must be one of {SUPPORTED_BITS}, not {bits}")
        g = _int_field(e, "group", where, 1, 8 // bits)  # runs of g indices fit in a byte
        K = _int_field(e, "K", where, 0, _MAX_NUMEL)
        N = _int_field(e, "N", where, 0, _MAX_NUMEL)
        lengths = _code_lengths(e, 2 ** (bits * g), where)
        if shape != [N, index_words(K, bits)]:
            raise ValueError(f"{where}: shape {shape} does not hold {N} rows of {K} {bits}-bit indices")
        symbols = _unhuffman(blob, lengths, N * -(-K // g), where)
        return _pack_symbols(symbols, bits, g, N, K)
    if len(shape) != 1:
        raise ValueError(f"{where}: codec {codec} stores 1-D tensors, not shape {shape}")
    if codec == "huffman_bsr_rows":
        Kb = _int_field(e, "Kb", where, 0, _INT32_MAX - 1)
        lengths = _code_lengths(e, Kb + 1, where)  # blocks per row: 0..Kb
        if numel < 1:
            raise ValueError(f"{where}: row offsets need at least one element")
        if numel - 1 > 8 * len(blob):  # checked before allocating the offsets
            raise ValueError(f"{where}: {numel - 1} symbols cannot be coded in {len(blob)} bytes (at most 8 per byte)")
        offsets = np.zeros(numel, dtype=np.int32)
        counts = _unhuffman(blob, lengths, numel - 1, where, out=offsets[1:])
        if int(counts.sum(dtype=np.int64)) > _INT32_MAX:
            raise ValueError(f"{where}: more than 2^31 - 1 blocks")
        np.cumsum(counts, out=counts)
        return torch.from_numpy(offsets)
    if codec == "huffman_bsr_columns":
        Kb = _int_field(e, "Kb", where, 0, _INT32_MAX)
        lengths = _code_lengths(e, Kb, where)  # column gaps: 0..Kb - 1
        rows = e["rows"]
        offsets = state.get(rows) if isinstance(rows, str) and rows != e["name"] else None
        if not isinstance(offsets, torch.Tensor) or offsets.dtype != torch.int32 or offsets.dim() != 1:
            raise ValueError(f"{where}: its row offsets {_show(rows)} are not an int32 vector of the file")
        offs = offsets.numpy().astype(np.int64)
        if offs.size == 0 or offs[0] != 0 or offs[-1] != numel or bool((np.diff(offs) < 0).any()):
            raise ValueError(f"{where}: row offsets {rows!r} do not match {numel} blocks")
        if numel * max(Kb, 1) >= 2**62:  # keeps the running sum of the gaps within int64
            raise ValueError(f"{where}: {numel} blocks of up to {Kb} columns are too many")
        gaps = _unhuffman(blob, lengths, numel, where)
        cols = _bsr_cols_from_gaps(gaps, offs)
        if cols.size and int(cols.max()) >= Kb:
            raise ValueError(f"{where}: a column index is >= the {Kb} block columns")
        return torch.from_numpy(cols.astype(np.int32))
    raise AssertionError(codec)  # _parse_record admits the codecs above only


def _pack_symbols(symbols: np.ndarray, bits: int, g: int, N: int, K: int) -> torch.Tensor:
    """Decoded symbols (runs of ``g`` indices, rows padded to whole runs) -> the packed indices
    ``[N, index_words(K, bits)]``, a block of rows and whole words at a time so that the int64
    intermediates stay small whatever the layer's size."""
    from .codebook.format import field_bits, index_words, pack_indices

    per = 32 // field_bits(bits)  # indices per int32 word: a multiple of g (g <= 8 <= per)
    symbols = symbols.reshape(N, -(-K // g))
    out = torch.empty(N, index_words(K, bits), dtype=torch.int32)
    cols = max(per, _UNPACK_BLOCK // per * per)
    rows = max(1, _UNPACK_BLOCK // max(1, min(K, cols)))
    for k0 in range(0, K, cols):
        k1 = min(K, k0 + cols)
        block = symbols[:, k0 // g: -(-k1 // g)]
        for r0 in range(0, N, rows):
            idx = _ungroup_symbols(torch.from_numpy(block[r0: r0 + rows].astype(np.int64)), bits, g, k1 - k0)
            out[r0: r0 + rows, k0 // per: -(-k1 // per)] = pack_indices(idx, bits)
    return out


def _check_matches_model(state: dict, model: nn.Module, where: str) -> None:
    """ValueError unless ``state`` loads into ``model`` as it is: checked before anything is
    copied, so a file of another model leaves this one untouched. Float tensors may differ in
    dtype (``load_state_dict`` converts them); integer ones (indices, offsets, format records) may not."""
    from .formats import VersionedFormat, check_format_tensor

    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{where}: does not match the model: missing {_show(missing)}, unexpected "
                         f"{_show(unexpected)}")
    wrong = []
    for k, t in expected.items():
        s = state[k]
        if s.shape != t.shape:
            wrong.append(f"{k}: size mismatch, {list(s.shape)} in the file, {list(t.shape)} in the model")
        elif s.dtype != t.dtype and not (s.is_floating_point() and t.is_floating_point()):
            wrong.append(f"{k}: {s.dtype} in the file, {t.dtype} in the model")
    if wrong:
        raise ValueError(f"{where}: does not match the model: " + "; ".join(wrong[:5]))
    for prefix, mod in model.named_modules():
        if isinstance(mod, VersionedFormat):
            p = prefix + "." if prefix else ""
            check_format_tensor(state[p + "format"], mod.FORMAT_KIND, mod._format_fields(),
                                ["version", *mod.FORMAT_FIELDS], where=f"{where}: {prefix or type(mod).__name__}")


def _bsr_gaps_from_cols(cols: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """The column coding: per block row, gap[0] = col[0], gap[i] = col[i] - col[i-1] - 1 (>= 0:
    the columns of a row increase strictly)."""
    gaps = cols.copy()
    gaps[1:] -= cols[:-1] + 1
    starts = offs[:-1][np.diff(offs) > 0]
    gaps[starts] = cols[starts]
    return gaps


def _bsr_cols_from_gaps(gaps: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Inverse of the column coding: per block row, col[0] = gap[0], col[i] = col[i-1] + 1 + gap[i]
    (int64). One running sum over all rows, less the sum before each row's first block."""
    cols = gaps.astype(np.int64)
    cols += 1
    np.cumsum(cols, out=cols)
    starts, counts = offs[:-1], np.diff(offs)
    before = np.where(starts > 0, cols[np.maximum(starts - 1, 0)] if cols.size else 0, 0)
    cols -= np.repeat(before, counts)
    cols -= 1
    return cols
