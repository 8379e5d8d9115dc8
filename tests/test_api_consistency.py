"""The same names for the same things on every format: constructors, views, sizes, format
versions, configs, public ``__all__`` lists, the progress convention and the timing helper."""

from __future__ import annotations

import importlib
import inspect
import types

import pytest
import torch
from torch import nn

import sparsekit
from sparsekit.block_sparse import BSRWeight
from sparsekit.config import Config, handler_for
from sparsekit.nn import (
    BinaryConv2d,
    BinaryLinear,
    BlockSparseLinear,
    CodebookLinear,
    DepthwiseSeparableConv2d,
    LowRankLinear,
)
from sparsekit.pruning import iterative_prune
from sparsekit.timing import median_time

FORMATS = ["binary", "block_sparse", "codebook", "dwsep"]
MODULES = [BinaryConv2d, BinaryLinear, BlockSparseLinear, CodebookLinear, DepthwiseSeparableConv2d, LowRankLinear]
PRUNED = [BlockSparseLinear, CodebookLinear, BSRWeight]  # what has a density


def _is_property(cls, name: str) -> bool:
    return isinstance(inspect.getattr_static(cls, name, None), property)


@pytest.mark.parametrize("cls", MODULES + [BSRWeight], ids=lambda c: c.__name__)
def test_every_format_class_has_the_shared_names(cls):
    assert isinstance(inspect.getattr_static(cls, "from_dense"), classmethod)
    assert callable(getattr(cls, "dense_weight"))
    assert _is_property(cls, "nbytes")
    if cls in PRUNED:
        assert _is_property(cls, "density")
    for old in ("to_dense_weight", "to_dense", "from_modules"):  # renamed, no alias kept
        assert not hasattr(cls, old), f"{cls.__name__}.{old}"


def _built():
    torch.manual_seed(0)
    lin = nn.Linear(40, 24)
    conv = nn.Conv2d(6, 5, 3, padding=1)
    dw, pw = nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(6, 4, 1)
    return lin, {
        "block_sparse": BlockSparseLinear.from_dense(lin, block_size=8, sparsity=0.5),
        "binary_connect": BinaryLinear.from_dense(lin, binarize_input=False),
        "codebook": CodebookLinear.from_dense(lin, bits=3),
        "lowrank": LowRankLinear.from_dense(lin, rank=24),
        "binary_conv": BinaryConv2d.from_dense(conv),
        "dwsep": DepthwiseSeparableConv2d.from_dense(dw, pw),
    }


def test_dense_weight_is_the_weight_the_module_computes_with():
    lin, mods = _built()
    x = torch.randn(3, 40)
    with torch.no_grad():
        for name in ("block_sparse", "binary_connect", "codebook", "lowrank"):
            m = mods[name]
            w = m.dense_weight()
            assert w.shape == (24, 40) and not w.requires_grad, name
            torch.testing.assert_close(m(x), nn.functional.linear(x, w, m.bias), rtol=1e-4, atol=1e-4)
        signs = torch.where(lin.weight >= 0, 1.0, -1.0)
        torch.testing.assert_close(mods["binary_connect"].dense_weight(),
                                   signs * lin.weight.abs().mean(dim=1, keepdim=True))
        assert mods["binary_conv"].dense_weight().shape == (5, 6, 3, 3)
        dw_w, pw_w = mods["dwsep"].dense_weight()
        assert dw_w.shape == (6, 1, 3, 3) and pw_w.shape == (4, 6, 1, 1)


def test_nbytes_and_density():
    _, mods = _built()
    for name, m in mods.items():
        stored = list(m.parameters(recurse=False)) + [b for k, b in m.named_buffers(recurse=False) if k != "format"]
        if name.startswith("binary"):  # the packed weight, not a latent one
            stored = [t for t in stored if t is not getattr(m, "latent_weight", None)]
        assert m.nbytes == sum(t.numel() * t.element_size() for t in stored if t is not None), name
    # 3 x 5 blocks of 8 x 8, half removed: round(7.5) = 8 kept
    assert mods["block_sparse"].density == pytest.approx(8 / 15) == mods["block_sparse"].bsr().density
    assert mods["codebook"].density == 1.0  # nothing pruned
    lin = nn.Linear(40, 24)
    with torch.no_grad():
        lin.weight[:, :10] = 0
    pruned = CodebookLinear.from_dense(lin, bits=2, keep_zeros=True)
    assert pruned.density == pytest.approx(0.75)


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_version_lives_in_format_py(fmt):
    format_mod = importlib.import_module(f"sparsekit.{fmt}.format")
    assert isinstance(format_mod.FORMAT_VERSION, int) and format_mod.FORMAT_VERSION >= 1
    assert importlib.import_module(f"sparsekit.{fmt}").FORMAT_VERSION == format_mod.FORMAT_VERSION
    module_src = inspect.getsource(importlib.import_module(f"sparsekit.{fmt}.module"))
    assert "FORMAT_VERSION =" not in module_src  # one definition, in format.py


def test_the_format_record_holds_format_version():
    _, mods = _built()
    for name in ("block_sparse", "binary_connect", "codebook", "binary_conv"):
        fmt = type(mods[name]).__module__.rsplit(".", 1)[0]
        assert int(mods[name].format[0]) == importlib.import_module(fmt + ".format").FORMAT_VERSION


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_slice_has_a_config_py_with_a_registered_config(fmt):
    config_mod = importlib.import_module(f"sparsekit.{fmt}.config")
    configs = [v for v in vars(config_mod).values()
               if isinstance(v, type) and issubclass(v, Config) and v is not Config]
    assert configs, fmt
    for cls in configs:
        assert callable(handler_for(cls()))
        assert getattr(sparsekit, cls.__name__) is cls


PACKAGES = ["sparsekit", "sparsekit.nn"] + [f"sparsekit.{f}" for f in FORMATS]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_only_existing_public_names(package):
    mod = importlib.import_module(package)
    names = mod.__all__
    assert len(names) == len(set(names)), "duplicates in __all__"
    for name in names:
        assert not name.startswith("_"), name
        assert not name.endswith("_impl"), name  # the eager paths behind the ops are internal
        obj = getattr(mod, name)  # exists
        if isinstance(obj, types.ModuleType):
            assert obj.__name__.startswith("sparsekit.")


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_slice_exports_its_modules_and_config(fmt):
    pkg = importlib.import_module(f"sparsekit.{fmt}")
    for sub in ("module", "config"):
        src = importlib.import_module(f"sparsekit.{fmt}.{sub}")
        public = [n for n, v in vars(src).items() if isinstance(v, type) and v.__module__ == src.__name__
                  and not n.startswith("_") and (issubclass(v, nn.Module) or issubclass(v, Config))]
        assert public and set(public) <= set(pkg.__all__), (fmt, sub, public)


# ------------------------------------------------------------------------------- progress
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))


def test_convert_progress_callback_counts_every_layer():
    model, calls = _mlp(), []
    report = sparsekit.convert(model, sparsekit.BlockSparseConfig(block_size=8, sparsity=0.5),
                               filter_fn=lambda m, name: name != "4",
                               progress=lambda done, total, name: calls.append((done, total, name)))
    assert calls == [(1, 3, "0"), (2, 3, "2"), (3, 3, "4")]
    assert [layer.name for layer in report.layers] == ["0", "2"] and report.skipped == ["4"]


def test_long_operations_are_silent_by_default(capsys, tmp_path):
    model = _mlp()
    sparsekit.convert(model, sparsekit.CodebookConfig(bits=2, iters=5))
    sparsekit.save_compressed(model, tmp_path / "m.spk")
    iterative_prune(_mlp(), sparsekit.BlockSparseConfig(block_size=8, sparsity=0.5), lambda m, s, f: None, steps=2)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_progress_true_draws_a_tqdm_bar(capsys):
    pytest.importorskip("tqdm")
    sparsekit.convert(_mlp(), sparsekit.CodebookConfig(bits=2, iters=5), progress=True)
    err = capsys.readouterr().err
    assert "convert" in err and "3/3" in err


def test_iterative_prune_progress_per_step():
    calls = []
    sparsities = iterative_prune(_mlp(), sparsekit.BlockSparseConfig(block_size=8, sparsity=0.75),
                                 lambda m, step, s: None, steps=3,
                                 progress=lambda done, total, name: calls.append((done, total, name)))
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert [c[2] for c in calls] == [f"sparsity {s:g}" for s in sparsities]


def test_iterative_prune_channels_progress_per_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    calls = []
    sparsekit.iterative_prune_channels(model, 0.5, lambda m, step, s: None, steps=2,
                                       progress=lambda done, total, name: calls.append((done, total, name)))
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)] and "parameters" in calls[-1][2]


def test_save_compressed_progress_per_entry(tmp_path):
    model = _mlp()
    sparsekit.convert(model, sparsekit.BlockSparseConfig(block_size=8, sparsity=0.5))
    calls = []
    sparsekit.save_compressed(model, tmp_path / "m.spk", progress=lambda *a: calls.append(a))
    keys = list(model.state_dict())
    assert calls == [(i + 1, len(keys), k) for i, k in enumerate(keys)]


def test_a_wrong_progress_argument_fails_before_any_work(tmp_path):
    model = _mlp()
    with pytest.raises(TypeError, match="progress must be False, True or a callable"):
        sparsekit.convert(model, sparsekit.BlockSparseConfig(block_size=8), progress="yes")
    assert all(type(m) in (nn.Linear, nn.ReLU) for m in model)  # nothing converted
    with pytest.raises(TypeError, match="progress must be"):
        sparsekit.save_compressed(model, tmp_path / "m.spk", progress=1)
    assert not (tmp_path / "m.spk").exists()


# ------------------------------------------------------------------------------- timing
def test_median_time_counts_warmup_and_reps():
    calls = []
    t = median_time(lambda: calls.append(1), warmup=2, min_reps=3, min_time=0)
    assert len(calls) == 5 and isinstance(t, float) and t >= 0
    synced = []
    median_time(lambda: None, warmup=1, min_reps=2, min_time=0, sync=lambda: synced.append(1))
    assert len(synced) == 3
    with pytest.raises(ValueError):
        median_time(lambda: None, min_reps=0)
