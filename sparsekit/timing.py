"""The one timing helper the examples and the stand-alone benchmark scripts share (the benchmark
suite itself times through pytest-benchmark, see ``bench/harness.py``)."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Optional

__all__ = ["median_time"]


def median_time(fn: Callable[[], object], *, warmup: int = 5, min_reps: int = 20, min_time: float = 0.5,
                sync: Optional[Callable[[], None]] = None) -> float:
    """Median wall time of ``fn()`` in seconds: ``warmup`` untimed calls, then timed calls until
    there are at least ``min_reps`` of them and they ran at least ``min_time`` seconds in all.
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs after every call, inside its time, so that
    asynchronous work is counted. Set the model's mode and grad mode before calling."""
    if warmup < 0 or min_reps < 1 or min_time < 0:
        raise ValueError(f"need warmup >= 0, min_reps >= 1, min_time >= 0; got {warmup}, {min_reps}, {min_time}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
        sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
