import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sparsekit._nvrtc import CUDA_DIR

SOURCES = sorted(Path(CUDA_DIR).glob("*.cu"))


def test_cuda_sources_are_shipped():
    assert [p.name for p in SOURCES] == ["xnor.cu", "xnor_b1.cu"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles_with_nvcc(source, arch, tmp_path):
    # without LD_PRELOAD: `make sanitize` preloads the sanitizer runtimes for the Python process,
    # and nvcc's own programs crash with them
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    r = subprocess.run(["nvcc", "-std=c++17", f"-arch={arch}", "-c", str(source), "-o", str(tmp_path / "k.o")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
