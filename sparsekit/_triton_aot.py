"""Ahead-of-time compile check of every Triton kernel, without a GPU.

``python -m sparsekit._triton_aot [--out build/triton_aot] [--jobs 2]`` compiles each kernel's
:class:`~sparsekit._triton.AotCase` list (``aot_cases()`` in every ``sparsekit/<slice>/triton.py``:
each autotune config of each launch specialisation) to a cubin for sm_80 and sm_90 with
``triton.compile`` (triton's own LLVM and ptxas, which need no device), writes the report
(``.md`` and ``.json``) and exits 1 if any compile failed. Per compile: shared memory, warps,
stages, registers and spills (ptxas -v) and which tensor-core instructions the PTX uses
(``wgmma``: Hopper's warpgroup MMA; ``mma``: the sm_80 ``mma.sync``; ``-``: none).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ARCHS = (80, 90)
# the most shared memory one block may use (A100, H100), and the register file per SM
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
REGISTER_FILE = 64 * 1024


def slices() -> list:
    """The module name of every slice's Triton kernel file (a new one is checked without a list to edit)."""
    root = Path(__file__).parent
    return sorted(f"sparsekit.{p.parent.name}.triton" for p in root.glob("*/triton.py"))


def cases(module: str) -> list:
    """``module``'s AotCase list; ValueError when it has none, or when an autotuned kernel or one of
    its configs is missing from it."""
    from triton.runtime.autotuner import Autotuner

    mod = importlib.import_module(module)
    if not hasattr(mod, "aot_cases"):
        raise ValueError(f"{module} has no aot_cases(): its kernels would not be checked")
    out = mod.aot_cases()
    for tuner in (v for v in vars(mod).values() if isinstance(v, Autotuner)):
        done = {(tuple(c.tile.items()), c.num_warps, c.num_stages) for c in out if c.kernel is tuner.fn}
        want = {(tuple(c.kwargs.items()), c.num_warps, c.num_stages) for c in tuner.configs}
        if not want <= done:
            raise ValueError(f"{module}: autotune configs of {tuner.fn.__name__} not compiled: {sorted(want - done)}")
    return out


def compile_case(case, arch: int) -> dict:
    """Compile ``case`` for sm_``arch``; the report row (``error`` set, not raised, on failure)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    row = dict(kernel=case.kernel.__name__, spec=case.spec, config=case.config, arch=f"sm_{arch}")
    log = io.StringIO()
    # a private cache (every compile is a real one, nothing left behind) and the ptxas -v log on stdout
    with knobs.cache.scope(), knobs.nvidia.scope(), tempfile.TemporaryDirectory() as cache, \
            contextlib.redirect_stdout(log), warnings.catch_warnings():
        knobs.cache.dir = cache
        knobs.nvidia.dump_ptxas_log = True
        warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION is unset")  # the runtime's default
        try:
            src = ASTSource(fn=case.kernel, signature=case.signature, constexprs={**case.constexprs, **case.tile},
                            attrs=case.attrs)
            k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                               options=dict(num_warps=case.num_warps, num_stages=case.num_stages))
            ptx = k.asm["ptx"]
            md = k.metadata
        except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
            return dict(row, error=f"{type(e).__name__}: {e}".strip()[-4000:])
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    mma = "wgmma" if "wgmma.mma_async" in ptx else "mma" if re.search(r"\bmma\.sync", ptx) else "-"
    row.update(shared=md.shared, num_warps=md.num_warps, num_stages=md.num_stages,
               registers=int(regs.group(1)) if regs else None,
               spill_stores=int(spills.group(1)) if spills else None,
               spill_loads=int(spills.group(2)) if spills else None, tensor_cores=mma)
    row["fits"] = md.shared <= SHARED_LIMIT[arch] and (row["registers"] or 0) * 32 * md.num_warps <= REGISTER_FILE
    return row


def _job(job):
    module, i, arch = job
    return compile_case(cases(module)[i], arch)


def run(modules=None, archs=ARCHS, jobs: int = 1, select=None) -> list:
    """Compile every case of ``modules`` (default: all slices) for every arch; the rows in order.
    ``select(cases) -> indices`` picks a subset (the fast test)."""
    work = []
    for module in modules or slices():
        cs = cases(module)
        idx = select(cs) if select else range(len(cs))
        work += [(module, i, arch) for i in idx for arch in archs]
    if jobs <= 1:
        return [_job(w) for w in work]
    import multiprocessing

    # spawn: a fork of a process that holds torch's and triton's threads is not safe
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_job, work))


COLUMNS = (("kernel", "kernel"), ("spec", "specialisation"), ("config", "config"), ("arch", "arch"),
           ("shared", "shared mem (B)"), ("num_warps", "warps"), ("num_stages", "stages"), ("registers", "regs"),
           ("spill_stores", "spill st (B)"), ("spill_loads", "spill ld (B)"), ("tensor_cores", "tensor cores"),
           ("fits", "fits"))


def markdown(rows: list) -> str:
    failed = [r for r in rows if "error" in r]
    unfit = sum(r.get("fits") is False for r in rows)
    lines = [f"# Triton ahead-of-time compile: {len(rows) - len(failed)} of {len(rows)} compiled, "
             f"{unfit} do not fit the GPU", "",
             "Tensor cores: `wgmma` Hopper warpgroup MMA, `mma` mma.sync (sm_80 path), `-` none. "
             f"fits: shared memory within {SHARED_LIMIT[80]} B (sm_80) / {SHARED_LIMIT[90]} B (sm_90) and "
             "registers x threads within one SM's register file; an autotune config that does not fit is "
             "skipped by the autotuner at run time (OutOfResources), a fixed tile that does not fit fails its "
             "launch.", "",
             "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            cells = [str(r[k]) for k, _ in COLUMNS[:4]] + ["FAILED"] + [""] * (len(COLUMNS) - 5)
        else:
            cells = ["yes" if r[k] is True else "NO" if r[k] is False else "?" if r[k] is None else str(r[k])
                     for k, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    for r in failed:
        lines += ["", f"## FAILED: {r['kernel']} {r['spec']} {r['config']} {r['arch']}", "", "```",
                  r["error"], "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/triton_aot", help="report path without suffix (.md and .json written)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="compile processes")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(jobs=args.jobs)
    wall = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = markdown(rows)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(md)
    failed = sum("error" in r for r in rows)
    unfit = sum(r.get("fits") is False for r in rows)
    print(f"{len(rows)} compiles ({len(rows) - failed} ok, {failed} failed; {unfit} do not fit the GPU, see `fits`) "
          f"in {wall:.0f} s with {args.jobs} processes; report: {out}.md, {out}.json", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
