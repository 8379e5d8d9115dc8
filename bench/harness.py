"""Shared benchmark machinery: machine record, timing through pytest-benchmark, providers.

Every benchmark is a pytest-benchmark test; one *group* is one shape, holding every
provider (sparsekit backends and the PyTorch baselines) measured in the same run.
``bench/report.py`` turns the JSON into ratios against the group's baseline.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess

import torch

QUICK = os.environ.get("SPARSEKIT_BENCH_QUICK") == "1"
THREADS = int(os.environ.get("SPARSEKIT_BENCH_THREADS", "2"))
# devices every suite runs on: the CPU, and CUDA where present; SPARSEKIT_BENCH_DEVICE picks
# (e.g. "cuda" in bench/gpu_check.sh)
DEVICES = (os.environ.get("SPARSEKIT_BENCH_DEVICE", "").split(",") if os.environ.get("SPARSEKIT_BENCH_DEVICE")
           else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))


@functools.lru_cache(None)
def machine() -> dict:
    """Device, versions and commit recorded with every result."""
    import sparsekit
    from sparsekit import _ext

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__), timeout=10).stdout.strip() or "unknown"
    except Exception:
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except Exception:
        pass
    info = {
        "cpu": cpu,
        "threads": THREADS,
        "cpu_isa": _ext.cpu_isa() if _ext.available() else "none",
        "torch": torch.__version__,
        "sparsekit": sparsekit.__version__,
        "commit": commit,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        try:
            import triton

            info["triton"] = triton.__version__
        except Exception:
            pass
    return info


def device_name(device: str) -> str:
    return machine().get("gpu", "cuda") if device == "cuda" else f"{machine()['cpu']} ({THREADS} threads)"


def measure(benchmark, fn, *, group: str, provider: str, baseline: str, device: str = "cpu", **extra):
    """Times ``fn`` with pytest-benchmark under ``group``; ``baseline`` names the provider the
    report divides by. Rounds adapt to the op's cost so the whole suite stays short."""
    torch.set_num_threads(THREADS)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        fn()
        sync()

    run()  # warm-up (and Triton autotuning)
    import time

    t0 = time.perf_counter()
    run()
    once = time.perf_counter() - t0
    budget = 0.3 if QUICK else 1.5
    # calls of a few microseconds: several per round, so that a round lasts >= 50 us and the
    # timer's own cost and resolution stay out of the figure
    iterations = max(1, min(100, int(5e-5 / max(once, 1e-7))))
    rounds = int(max(3 if QUICK else 7, min(200, budget / max(once * iterations, 1e-6))))
    benchmark.group = group
    benchmark.extra_info.update(dict(provider=provider, baseline=baseline, device=device_name(device),
                                     **{k: str(v) for k, v in extra.items()}, **machine()))
    benchmark.pedantic(run, rounds=rounds, iterations=iterations, warmup_rounds=1)
