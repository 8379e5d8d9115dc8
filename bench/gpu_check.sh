#!/usr/bin/env bash
# GPU check, for a GPU machine without internet that already has torch, triton, cupy
# and pybind11. Installs the project, runs the tests with CUDA present (Triton compiled
# for real, CUDA sources through NVRTC), then the quick GPU benchmarks against cuBLAS,
# and writes a report. Budget: under 5 minutes. It leaves at most 8 files in OUTDIR:
# gpu_report.md, tests.log, bench.log, install.log, gpu_bench.json and report.py's
# report.md, results.csv and bsr_speedup.png.
#
#   bash bench/gpu_check.sh [OUTDIR]     (default: $OUT if set, else bench/results/gpu)
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-bench/results/gpu}}
mkdir -p "$OUTDIR"
REPORT="$OUTDIR/gpu_report.md"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

{
  echo "# sparsekit GPU check — $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1 | head -3
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| triton', triton.__version__)" 2>&1
  echo '```'
} > "$REPORT"

step() { echo "== $1 ($(date +%T))"; }

step install
$PY -m pip install --no-build-isolation --no-deps -e . > "$OUTDIR/install.log" 2>&1 \
  || { echo "install FAILED (see install.log)" >> "$REPORT"; tail -20 "$OUTDIR/install.log"; exit 1; }

step tests
# one fixed Triton tile: every test shape would otherwise autotune
SPARSEKIT_TRITON_AUTOTUNE=0 timeout 150 $PY -m pytest tests -q -x -p no:cacheprovider > "$OUTDIR/tests.log" 2>&1
test_rc=$?
{
  echo; echo "## Tests (CUDA present; rc=$test_rc)"; echo; echo '```'
  grep -E "passed|failed|error" "$OUTDIR/tests.log" | tail -3
  grep -E "^(FAILED|ERROR)" "$OUTDIR/tests.log" | head -20
  echo '```'
} >> "$REPORT"

step benchmarks
SPARSEKIT_BENCH_DEVICE=${SPARSEKIT_BENCH_DEVICE:-cuda} timeout 120 $PY -m pytest bench -q -p no:cacheprovider --quick \
  --benchmark-json="$OUTDIR/gpu_bench.json" > "$OUTDIR/bench.log" 2>&1
bench_rc=$?
echo; echo "## Quick GPU benchmarks vs cuBLAS (rc=$bench_rc)" >> "$REPORT"
if [ -s "$OUTDIR/gpu_bench.json" ]; then
  $PY bench/report.py "$OUTDIR/gpu_bench.json" --out "$OUTDIR" >> "$REPORT" 2>&1
else
  tail -20 "$OUTDIR/bench.log" >> "$REPORT"
fi
step done
cat "$REPORT"
[ $test_rc -eq 0 ] && [ $bench_rc -eq 0 ]
