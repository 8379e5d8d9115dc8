"""The example scripts run end to end (``--quick``: scikit-learn's digits, tiny epochs), so they
cannot rot; their full Fashion-MNIST results are in docs/examples.md."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytest.importorskip("sklearn", reason="scikit-learn is installed by make install-dev")


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def load(name):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


def test_deep_compression_pipeline(example, tmp_path):
    rows = example("deep_compression").main(["--quick", "--out", str(tmp_path)])
    assert [r["stage"].split(" (")[0] for r in rows] == [
        "fp32 baseline", "+ neuron/channel pruning", "+ weight pruning", "+ weight sharing", "+ Huffman coding"]
    fp32, channels, weights, codebook, huffman = rows
    assert channels["params"] < fp32["params"] / 4  # really smaller, not masked
    assert weights["bytes"] == channels["bytes"]  # zeros in dense tensors save nothing on disk
    assert huffman["bytes"] < codebook["bytes"] < channels["bytes"] / 5 and huffman["ratio"] > 40
    assert all(r["top1"] > 0.5 and r["b1_ms"] > 0 and r["b64_ms"] > 0 for r in rows)
    for name in ("deep_compression.md", "deep_compression.json", "deep_compression.spk", "deep_compression.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_binary_and_distillation(example, tmp_path):
    result = example("binary_and_distillation").main(["--quick", "--out", str(tmp_path)])
    assert result["binary_top1"] > 0.6
    assert len(result["teacher_top1"]) == 2 and min(result["teacher_top1"]) > 0.6 and result["ensemble_top1"] > 0.6
    assert len(result["labels_only"]) == len(result["distilled"]) == 2
    assert math.isfinite(result["kd_gain_points"])
    table = (tmp_path / "binary_and_distillation.md").read_text()
    assert "binary CNN (XNOR, packed)" in table and "teacher ensemble (2 x fp32 CNN" in table


def test_distillation_alone(example, tmp_path):
    result = example("binary_and_distillation").main(["--quick", "--skip-binary", "--out", str(tmp_path)])
    assert "binary_top1" not in result and len(result["distilled"]) == 2
    table = (tmp_path / "binary_and_distillation.md").read_text()
    assert "binary CNN" not in table and "student, distilled T=4 alpha=0.9 (2 seeds)" in table


def test_dynamic_computation(example, tmp_path):
    result = example("dynamic_computation").main(["--quick", "--out", str(tmp_path)])
    assert 1.0 <= result["average_depth"] < 3.0 and result["full_top1"] > 0.6
    widths = [r["width"] for r in result["slimmable"]]
    assert widths == [1.0, 0.5, 0.25]
    assert (tmp_path / "early_exit.md").exists() and (tmp_path / "slimmable.md").exists()
