"""Crafted and corrupted compressed checkpoints: ``load_compressed`` raises ``ValueError`` (naming
the file, and the entry where one is at fault) and nothing else, and its memory stays bounded by
the size of the file.

Every case starts from a valid file of one of several models (codebook layers of 2, 3 and 4 bits,
their indices coded one per symbol or in runs; a block-sparse layer; plain tensors of several
dtypes) and changes it: truncations at every boundary of the layout, random bit flips (the
checksums catch them), the same flips with the checksums recomputed (the parser has to catch
them), edited length fields, and hostile format records (wrong types, out-of-range numbers,
missing keys, unknown codecs and dtypes, duplicate names, invalid code lengths, deep nesting).

The random cases are seeded. ``SPARSEKIT_FUZZ_SCALE=10`` runs ten times as many of them.
"""

import copy
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from collections import Counter

import pytest
import torch
from torch import nn

import sparsekit
from sparsekit import _ext
from sparsekit.nn import BinaryLinear, BlockSparseLinear, CodebookLinear
from sparsekit.storage import RECORD_CRC_KEY, RECORD_KEY, VERSION

pytestmark = pytest.mark.skipif(not _ext.available(), reason="the Huffman coder is native")

SCALE = int(os.environ.get("SPARSEKIT_FUZZ_SCALE", "1"))
# Peak Python/NumPy allocation of one load (tracemalloc) may not exceed this multiple of the
# file's size plus a constant; the native and torch side is bounded by the address-space test.
MEMORY_FACTOR, MEMORY_SLACK = 64, 1 << 20


# ------------------------------------------------------------------ the file layout
# A safetensors file: u64 header length, the header (JSON: each tensor's dtype, shape and byte
# range; "__metadata__" with the format record and its checksum), the tensors' bytes. The helpers
# below take files apart and write them back by hand, so that a test can write what no valid
# writer would.
def _crc(b) -> int:
    return zlib.crc32(b)


def _split(data: bytes):
    """A valid file -> (its format record, {tensor name: [safetensors dtype, shape, bytes]} in
    the order of the bytes)."""
    n = struct.unpack_from("<Q", data, 0)[0]
    header = json.loads(data[8: 8 + n])
    record = json.loads(header.pop("__metadata__")[RECORD_KEY])
    at = 8 + n
    blobs = {name: [info["dtype"], info["shape"], data[at + info["data_offsets"][0]: at + info["data_offsets"][1]]]
             for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])}
    return record, blobs


def _container(header: dict, blobs: dict) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(b[2] for b in blobs.values())


def _join(record, blobs: dict, refresh: bool = True) -> bytes:
    """The file of ``record`` (a dict, or its JSON text as bytes) and ``blobs``, the record's
    checksum valid (``refresh``: also the checksums it keeps of the tensors)."""
    if refresh and isinstance(record, dict):
        record = json.loads(json.dumps(record))
        for e in record["entries"]:
            e["crc32"] = _crc(blobs[e["name"]][2])
    text = record if isinstance(record, bytes) else json.dumps(record).encode()
    header = {"__metadata__": {RECORD_KEY: text.decode("utf-8", errors="replace"), RECORD_CRC_KEY: str(_crc(text))}}
    pos = 0
    for name, (dtype, shape, b) in blobs.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len(b)]}
        pos += len(b)
    return _container(header, blobs)


def _boundaries(data: bytes) -> list[int]:
    """Offsets where a part of the file starts or ends, and the middles of the parts."""
    n = struct.unpack_from("<Q", data, 0)[0]
    cuts = {0, 1, 7, 8, 8 + n // 2, 8 + n}
    pos = 8 + n
    for _, _, b in _split(data)[1].values():
        cuts |= {pos, pos + 1, pos + len(b) // 2, pos + len(b)}
        pos += len(b)
    return sorted({c + d for c in cuts for d in (-1, 0)} - {-1})


def _length_edits(data: bytes):
    """(label, file): a length, offset, shape or dtype in the safetensors header edited, or the
    header replaced by a hostile one. The format record (and its checksum) stays as it was."""
    n = struct.unpack_from("<Q", data, 0)[0]
    for v in (0, 1, n - 1, n + 1, n + 8, len(data), 2**31, 2**63, 2**64 - 1):
        yield f"header length {v}", struct.pack("<Q", v) + data[8:]
    header = json.loads(data[8: 8 + n])
    metadata = header["__metadata__"]
    names = [k for k in header if k != "__metadata__"]
    _, blobs = _split(data)

    def edited(name, **changes):
        h = json.loads(json.dumps(header))
        h[name].update(changes)
        return _container(h, blobs)

    for name in names:
        info = header[name]
        b, e = info["data_offsets"]
        for offsets in ([b + 1, e], [b, e - 1], [b, e + 1], [b - 1, e], [b, b], [b, 2**62], [0, 2**64 - 1]):
            if offsets != [b, e]:
                yield f"{name} data_offsets {offsets}", edited(name, data_offsets=offsets)
        shape = info["shape"]
        for s in ([d + 1 for d in shape] or [2], shape[::-1] if shape[::-1] != shape else shape + [1],
                  [2**62], [2**32, 2**32], shape + [0]):
            yield f"{name} shape {s}", edited(name, shape=s)
        same_size = {"F32": "I32", "I32": "F32", "U8": "I8", "I8": "U8", "F16": "BF16", "BF16": "F16", "F64": "I64",
                     "I64": "F64", "BOOL": "U8", "I16": "F16"}[info["dtype"]]
        for dtype in (same_size, "F64" if info["dtype"] != "F64" else "F32", "F8_E5M2", "C64", "XX", 3):
            yield f"{name} dtype {dtype}", edited(name, dtype=dtype)
    for label, hostile in [
        ("header nested 200000 deep", b"[" * 200_000 + b"]" * 200_000),
        ("header a list", b"[]"),
        ("metadata nested", json.dumps({"__metadata__": {RECORD_KEY: {"a": [1]}}}).encode()),
        ("metadata a number", json.dumps(dict(header, __metadata__={RECORD_KEY: 5})).encode()),
        ("no metadata", json.dumps({k: v for k, v in header.items() if k != "__metadata__"}).encode()),
        ("no checksum of the record", json.dumps(dict(header, __metadata__={RECORD_KEY: metadata[RECORD_KEY]})).encode()),
        ("checksum not a number", json.dumps(dict(header, __metadata__=dict(metadata, **{RECORD_CRC_KEY: "x"}))).encode()),
        ("a tensor twice", data[8: 8 + n].rstrip().replace(b"{", b'{"%s":%s,' % (names[0].encode(), json.dumps(
            header[names[0]]).encode()), 1)),
        ("a tensor missing", json.dumps({k: v for k, v in header.items() if k != names[-1]}).encode()),
        ("a tensor more", json.dumps(dict(header, extra={"dtype": "U8", "shape": [0], "data_offsets": [0, 0]})).encode()),
    ]:
        hostile += b" " * (-len(hostile) % 8)
        yield label, struct.pack("<Q", len(hostile)) + hostile + data[8 + n:]


# ------------------------------------------------------------------ models
def _pruned_linear(k: int, n: int, keep: float) -> nn.Linear:
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(n, k) < keep)
    return lin


def _plain() -> nn.Module:
    m = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5))
    m.register_buffer("f16", torch.randn(3, 2, dtype=torch.float16))
    m.register_buffer("bf16", torch.randn(4, dtype=torch.bfloat16))
    m.register_buffer("mask", torch.rand(7) > 0.5)
    m.register_buffer("small", torch.arange(-3, 3, dtype=torch.int8))
    m.register_buffer("scalar", torch.tensor(2.5, dtype=torch.float64))
    m.register_buffer("empty", torch.zeros(0, 3))
    return m


MODELS = {
    "codebook2_runs": lambda: nn.Sequential(CodebookLinear.from_dense(_pruned_linear(200, 40, 0.08), bits=2,
                                                                      keep_zeros=True)),
    "codebook3": lambda: nn.Sequential(CodebookLinear.from_dense(nn.Linear(37, 24), bits=3, group_size=8)),
    "codebook3_runs": lambda: nn.Sequential(CodebookLinear.from_dense(_pruned_linear(100, 40, 0.05), bits=3,
                                                                      keep_zeros=True)),
    "codebook4_runs": lambda: nn.Sequential(CodebookLinear.from_dense(_pruned_linear(201, 48, 0.05), bits=4,
                                                                      keep_zeros=True), nn.ReLU(),
                                            BinaryLinear.from_dense(nn.Linear(48, 9))),
    "block_sparse": lambda: nn.Sequential(BlockSparseLinear.from_dense(nn.Linear(70, 52), block_size=8,
                                                                       sparsity=0.6)),
    "plain": _plain,
}


@pytest.fixture(scope="module")
def files():
    """name -> (model, its file's bytes, a copy of its state_dict)."""
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in MODELS.items():
            torch.manual_seed(0)
            model = make()
            path = os.path.join(tmp, name + ".spk")
            sparsekit.save_compressed(model, path)
            with open(path, "rb") as f:
                out[name] = (model, f.read(), copy.deepcopy(model.state_dict()))
    groups = {e.get("group") for _, data, _ in out.values() for e in _split(data)[0]["entries"]}
    assert {1, 2, 4} <= groups  # indices coded one per symbol and in runs of 2 and 4
    return out


# ------------------------------------------------------------------ checking one case
def _same_state(a, b) -> bool:
    return list(a) == list(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


class Tally:
    """Loads each case and counts what went wrong, so that one test reports every kind of
    failure with its count instead of stopping at the first."""

    def __init__(self, tmp_path):
        self.path = tmp_path / "case.spk"
        self.cases = 0
        self.problems: Counter = Counter()
        self.examples: dict = {}

    def check(self, label: str, data: bytes, *, may_load: bool = False, same_as=None, model=None,
              names: tuple = ()) -> None:
        """``may_load``: the change may leave a valid file (then, with ``same_as``, it must load
        as that state: the change was in bytes that carry nothing); otherwise ValueError naming the
        file (and one of ``names``) is the only right answer."""
        self.cases += 1
        self.path.write_bytes(data)
        tracemalloc.start()
        try:
            result = sparsekit.load_compressed(self.path, model)
        except Exception as exc:  # noqa: BLE001 (counting what was raised is the point)
            result = exc
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        problem = None
        if isinstance(result, ValueError):
            msg = str(result)
            if model is None and str(self.path) not in msg:
                problem = "ValueError without the file's name"
            elif names and not any(n in msg for n in names):
                problem = "ValueError without the entry's name"
        elif isinstance(result, Exception):
            problem = type(result).__name__
        elif not may_load:
            problem = "accepted"
        elif same_as is not None and not _same_state(result, same_as):
            problem = "loaded different data"
        if problem is None and peak > MEMORY_FACTOR * len(data) + MEMORY_SLACK:
            problem = "memory"
        if problem is not None:
            self.problems[problem] += 1
            detail = f"{type(result).__name__}: {str(result)[:200]}" if isinstance(result, Exception) else ""
            self.examples.setdefault(problem, f"{label} (peak {peak:,} B for {len(data):,} B) {detail}")

    def assert_clean(self) -> None:
        assert not self.problems, (f"{sum(self.problems.values())} of {self.cases} cases: {dict(self.problems)}; "
                                   f"e.g. {self.examples}")


@pytest.fixture
def tally(tmp_path):
    return Tally(tmp_path)


# ------------------------------------------------------------------ the cases
def test_valid_files_load_within_the_memory_bound(files, tally):
    for name, (model, data, state) in files.items():
        tally.check(name, data, may_load=True, same_as=state)
    tally.assert_clean()


def test_truncated_and_extended_files(files, tally):
    for name, (_, data, _) in files.items():
        for cut in _boundaries(data):
            if cut < len(data):
                tally.check(f"{name} cut at {cut}", data[:cut])
        for extra in (b"\0", b"\0" * 4, data[-8:]):
            tally.check(f"{name} + {len(extra)} bytes", data + extra)
    assert tally.cases > 200
    tally.assert_clean()


def test_bit_flips_are_caught_by_the_checksums(files, tally):
    rng = random.Random(1)
    for name, (_, data, state) in files.items():
        for _ in range(40 * SCALE):
            bit = rng.randrange(len(data) * 8)
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            # a flip in bytes that carry nothing (JSON whitespace, say) may load: as the same state
            tally.check(f"{name} bit {bit}", bytes(flipped), may_load=True, same_as=state)
    tally.assert_clean()


def test_bit_flips_behind_valid_checksums(files, tally):
    """The checksums recomputed after the flip: the parser, not the checksum, has to notice."""
    rng = random.Random(2)
    for name, (model, data, _) in files.items():
        model = copy.deepcopy(model)  # loads change it
        record, blobs = _split(data)
        text = json.dumps(record).encode()
        for i in range(30 * SCALE):
            # a flip in a stored tensor or coded stream
            key = rng.choice([k for k in blobs if blobs[k][2]])
            blob = bytearray(blobs[key][2])
            bit = rng.randrange(len(blob) * 8)
            blob[bit // 8] ^= 1 << (bit % 8)
            flipped = _join(record, dict(blobs, **{key: blobs[key][:2] + [bytes(blob)]}))
            tally.check(f"{name} {key} bit {bit}", flipped, may_load=True)
            tally.check(f"{name} {key} bit {bit} into the model", flipped, may_load=True, model=model)
            # a flip in the format record
            bit = rng.randrange(len(text) * 8)
            t = bytearray(text)
            t[bit // 8] ^= 1 << (bit % 8)
            tally.check(f"{name} record bit {bit}", _join(bytes(t), blobs), may_load=True)
    tally.assert_clean()


def test_edited_length_fields_and_safetensors_headers(files, tally):
    for name, (_, data, state) in files.items():
        for label, edited in _length_edits(data):
            # safetensors keeps the last of two equal keys: the file may still be the same one
            twice = label.startswith("a tensor twice")
            tally.check(f"{name} {label}", edited, may_load=twice, same_as=state if twice else None)
    tally.assert_clean()


BAD_VALUES = [-1, 2**64, 1.5, "3", None, True, [], {}]


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _entry_mutations(e: dict, entries: list):
    """(label, the entry changed, kind): kind "bad" (no valid file has it), "huge" (bad, and
    declares sizes far beyond the file) or "maybe" (may still describe the same data)."""
    for key in e:
        yield f"no {key}", {k: v for k, v in e.items() if k != key}, "bad"
        for v in BAD_VALUES:
            if key == "name" and isinstance(v, str):
                yield f"{key}={v!r}", dict(e, **{key: v}), "maybe"  # another name: a valid file
            elif not (type(v) is type(e[key]) and v == e[key]):
                yield f"{key}={v!r}", dict(e, **{key: v}), "huge" if v == 2**64 else "bad"
    yield "unknown key", dict(e, zstd_level=3), "bad"
    yield "codec zstd", dict(e, codec="zstd"), "bad"
    empty = _numel(e["shape"]) == 0  # another dtype or more dimensions still hold no bytes
    resized = "int8" if getattr(torch, e["dtype"]).itemsize > 1 else "float64"  # a valid dtype of another size
    for dtype in ("float128", "Tensor", "__class__", "qint8", "", resized):
        yield f"dtype {dtype}", dict(e, dtype=dtype), "maybe" if empty and dtype == resized else "bad"
    shape = e["shape"]
    for s in ([2**40, 2**40], [2**62], [2**31] * 8, [2**64] + shape[1:]):
        yield f"shape {s}", dict(e, shape=s), "huge"
    for s in ([-1] + shape[1:], [s + 1 for s in shape] or [2]):
        yield f"shape {s}", dict(e, shape=s), "bad"
    yield f"shape {shape + [2]}", dict(e, shape=shape + [2]), "maybe" if empty else "bad"
    for key in ("K", "N", "Kb", "bits", "group"):
        if key in e:
            # K only sets how many indices of the last run of a row are kept: K + 1 can name the same data
            yield f"{key}={e[key] + 1}", dict(e, **{key: e[key] + 1}), "maybe" if key == "K" else "bad"
            yield f"{key}={e[key] - 1}", dict(e, **{key: e[key] - 1}), "maybe" if key == "K" else "bad"
            for v in (e[key] * 1000, 2**20 * max(e[key], 1), 2**32, 2**62):
                yield f"{key}={v}", dict(e, **{key: v}), "huge"
    if e["codec"] == "huffman_codebook_indices":
        # sizes declared beyond the stream, the shape made to agree with them
        per = 32 // {1: 1, 2: 2, 3: 4, 4: 4}[e["bits"]]  # indices per int32 word
        for n in (2**20, 2**32):
            yield f"N={n} and its shape", dict(e, N=n, shape=[n, shape[1]]), "huge"
        for k in (2**20 * e["K"], 2**32):
            yield f"K={k} and its shape", dict(e, K=k, shape=[shape[0], -(-k // per)]), "huge"
    if "lengths" in e:
        lengths = e["lengths"]
        yield "lengths not a prefix code", dict(e, lengths=[1] * len(lengths)), "bad"
        yield "lengths above 32", dict(e, lengths=[33] + lengths[1:]), "bad"
        yield "lengths of 255", dict(e, lengths=[255] + lengths[1:]), "bad"
        yield "lengths of 256", dict(e, lengths=[256] + lengths[1:]), "bad"
        yield "lengths negative", dict(e, lengths=[-1] + lengths[1:]), "bad"
        yield "lengths float", dict(e, lengths=[1.0] + lengths[1:]), "bad"
        yield "one length short", dict(e, lengths=lengths[:-1]), "bad"
        yield "one length more", dict(e, lengths=lengths + [0]), "bad"
        yield "100000 lengths", dict(e, lengths=[0] * 10**5), "huge"
        yield "no codes", dict(e, lengths=[0] * len(lengths)), "bad"
    if "rows" in e:
        yield "rows of a missing entry", dict(e, rows="nowhere"), "bad"
        yield "rows of itself", dict(e, rows=e["name"]), "bad"
        others = [o["name"] for o in entries if o["name"] not in (e["name"], e["rows"])]
        for other in others[:2]:
            yield f"rows of {other}", dict(e, rows=other), "bad"


def _with_deep_value(record: dict, i: int, key: str, depth: int) -> bytes:
    """The record's JSON text with entry i's ``key`` a list nested ``depth`` deep."""
    entries = record["entries"]
    marked = dict(record, entries=entries[:i] + [dict(entries[i], **{key: "@deep@"})] + entries[i + 1:])
    return json.dumps(marked).encode().replace(b'"@deep@"', _deep(depth))


def _hostile_records(data: bytes):
    """(label, file, kind, names the error should mention): the format record changed,
    checksums valid."""
    record, blobs = _split(data)
    entries = record["entries"]
    raw = [i for i, e in enumerate(entries) if e["codec"] == "raw"]
    for i, e in enumerate(entries):
        if e["codec"] == "raw" and i != raw[0]:
            continue  # every coded entry and one raw one
        names = (repr(e["name"]), f"#{i}")
        for label, changed, kind in _entry_mutations(e, entries):
            hostile = _join(dict(record, entries=entries[:i] + [changed] + entries[i + 1:]), blobs, refresh=False)
            yield f"{e['name']} {label}", hostile, kind, names
        for key in ("shape", "lengths") if "lengths" in e else ("shape",):
            for depth in (1000, 200_000):
                yield f"{e['name']} {key} nested {depth} deep", _join(_with_deep_value(record, i, key, depth), blobs,
                                                                       refresh=False), "bad", ()
    for label, changed in [
        ("no entries", {k: v for k, v in record.items() if k != "entries"}),
        ("entries a dict", dict(record, entries={})),
        ("entries None", dict(record, entries=None)),
        ("entries of numbers", dict(record, entries=[1, 2])),
        ("an entry twice", dict(record, entries=entries + entries[:1])),
        ("an entry missing", dict(record, entries=entries[:-1])),
        ("every entry named alike", dict(record, entries=[dict(e, name=entries[0]["name"]) for e in entries])),
        ("version 1.0", dict(record, version=1.0)),
        ("version '1'", dict(record, version="1")),
        ("no version", {k: v for k, v in record.items() if k != "version"}),
        ("version 2**64", dict(record, version=2**64)),
        ("a list", [record]),
        ("a number", 3),
    ]:
        yield label, _join(changed, blobs, refresh=False), "bad", ()
    for depth in (1000, 200_000):
        deep = b'{"version":%d,"entries":%s}' % (VERSION, _deep(depth))
        yield f"entries nested {depth} deep", _join(deep, blobs, refresh=False), "bad", ()
    text = json.dumps(record).encode()
    yield "not JSON", _join(b"{not JSON", blobs, refresh=False), "bad", ()
    yield "trailing JSON", _join(text + b"{}", blobs, refresh=False), "bad", ()


def test_hostile_format_records(files, tally):
    for name, (_, data, _) in files.items():
        for label, hostile, kind, names in _hostile_records(data):
            tally.check(f"{name}: {label}", hostile, may_load=kind == "maybe", names=names)
    assert tally.cases > 500
    tally.assert_clean()


def test_files_that_do_not_match_the_model_leave_it_unchanged(files, tally):
    """Checked before anything is copied: no half-loaded model (torch's own load_state_dict copies
    the tensors that fit before it reports those that do not)."""
    cases = [(f"codebook3 into {name}", files["codebook3"][1], copy.deepcopy(model))
             for name, (model, _, _) in files.items() if name != "codebook3"]
    torch.manual_seed(0)
    cases.append(("3-bit file into a 2-bit layer", files["codebook3"][1],
                  nn.Sequential(CodebookLinear.from_dense(nn.Linear(37, 24), bits=2, group_size=8))))
    model, data, _ = files["codebook4_runs"]
    wider = copy.deepcopy(model)
    wider[2] = BinaryLinear.from_dense(nn.Linear(48, 10))  # the first layer fits, the last does not
    cases.append(("a wider last layer", data, wider))
    record, blobs = _split(data)
    fmt = torch.frombuffer(bytearray(blobs["2.format"][2]), dtype=torch.int64).clone()
    fmt[1] += 1  # the binary layer's format record names another shape; the checksum is recomputed
    changed = dict(blobs, **{"2.format": blobs["2.format"][:2] + [fmt.numpy().tobytes()]})
    cases.append(("a format record of another shape", _join(record, changed), copy.deepcopy(model)))
    for label, data, target in cases:
        with torch.no_grad():
            for p in target.parameters():
                p.add_(1)  # unlike the file's, so that loading any of them shows
        before = copy.deepcopy(target.state_dict())
        tally.check(label, data, model=target)
        assert _same_state(target.state_dict(), before), label
    tally.assert_clean()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_declared_sizes_allocate_nothing_in_a_limited_address_space(files, tmp_path):
    """Sizes and counts far beyond the file, loaded in a process whose address space ends a
    little above what it uses: any allocation of the declared size (NumPy, torch or native)
    fails there instead of succeeding lazily."""
    paths = []
    for name, (_, data, _) in files.items():
        for _, hostile, kind, _ in _hostile_records(data):
            if kind == "huge":
                paths.append(tmp_path / f"{len(paths)}.spk")
                paths[-1].write_bytes(hostile)
    assert len(paths) > 50
    _, valid, _ = files["codebook2_runs"]
    (tmp_path / "valid.spk").write_bytes(valid)
    script = textwrap.dedent("""
        import resource, sys
        import torch
        torch.set_num_threads(1)
        import sparsekit
        sparsekit.load_compressed(sys.argv[1])  # imports everything a load needs first
        vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
        for p in sys.argv[2:]:
            try:
                sparsekit.load_compressed(p)
                print("loaded", p)
            except ValueError:
                pass
            except BaseException as exc:
                print(type(exc).__name__, p, str(exc)[:100])
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "valid.spk"), *map(str, paths)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert not lines, f"{len(lines)} of {len(paths)}: {Counter(l.split()[0] for l in lines)}; " + "\n".join(lines[:5])
