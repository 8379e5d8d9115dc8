"""The ahead-of-time Triton compile check (``make triton-aot``) on a few cases: one tensor-core
config of each kernel compiled for sm_90 without a GPU, the report's fields, and a compile error
reported as a failure.

The tests run Triton's interpreter (conftest.py), whose kernels cannot be compiled, so the check
runs in one child process without it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (make install-dev installs the pinned one)")

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import dataclasses, json, sys
from sparsekit import _triton_aot as aot

def fp16_64(cases):  # the first fp16 tile of 64 rows (pixels) on 4 warps: one warpgroup MMA on sm_90
    return [next(i for i, c in enumerate(cases) if c.spec.startswith("fp16") and not c.fixed and c.num_warps == 4
                 and c.tile.get("BM", c.tile.get("BP")) == 64)]

out = dict(slices=aot.slices(), cases={})
for m in out["slices"]:
    cases = aot.cases(m)  # raises if an autotuned kernel or one of its configs is missing
    out["cases"][m] = [[c.spec, c.config] for c in cases]
out["rows"] = aot.run(archs=(90,), select=fp16_64)
out["markdown"] = aot.markdown(out["rows"])
case = aot.cases("sparsekit.block_sparse.triton")[0]
bad = aot.compile_case(dataclasses.replace(case, tile={"BM": 3}), 90)  # tl.arange needs a power of 2
aot.run = lambda jobs: [bad]
out["bad"], out["bad_rc"] = bad, aot.main(["--out", sys.argv[1], "--jobs", "1"])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    report = tmp_path_factory.mktemp("aot") / "r"
    # no interpreter; no sanitizer runtimes (`make sanitize` preloads them: ptxas crashes with them)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "LD_PRELOAD")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    r = subprocess.run([sys.executable, "-c", CHILD, str(report)], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.splitlines()[-1]), report


def test_every_kernel_module_describes_its_launches(child):
    out, _ = child
    assert out["slices"] == ["sparsekit.block_sparse.triton", "sparsekit.codebook.triton", "sparsekit.dwsep.triton"]
    for cases in out["cases"].values():
        assert len({tuple(c) for c in cases}) == len(cases)
        assert {spec.split()[0] for spec, _ in cases} == {"fp32", "fp16", "bf16"}


def test_one_config_of_each_kernel_compiles_for_sm90(child):
    out, _ = child
    rows = out["rows"]
    assert [r["kernel"] for r in rows] == ["_bsr_linear_kernel", "_codebook_linear_kernel", "_dwsep_kernel"]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert r["arch"] == "sm_90" and r["num_warps"] == 4 and r["num_stages"] in (2, 3)
        assert 0 < r["shared"] <= 227 * 1024 and r["fits"] is True
        assert 0 < r["registers"] <= 255 and r["spill_stores"] >= 0 and r["spill_loads"] >= 0
        assert r["tensor_cores"] == "wgmma"  # Hopper's tensor-core path for tl.dot
    assert out["markdown"].startswith("# Triton ahead-of-time compile: 3 of 3 compiled, 0 do not fit")
    assert out["markdown"].count("| wgmma | yes |") == 3


def test_compile_error_fails_the_check(child):
    out, report = child
    assert "error" in out["bad"] and "shared" not in out["bad"]
    assert out["bad_rc"] == 1
    assert "FAILED" in report.with_suffix(".md").read_text()
    assert json.loads(report.with_suffix(".json").read_text())[0]["error"] == out["bad"]["error"]
