#!/bin/bash
# Run the image setup of da_suite.py with one process per (pair, method), all at once:
# how the image table of docs/da_benchmark.md was measured on a 16-core H100 machine
# (26 runs in 280 s + 175 s of wall time). Each process writes its own run directory
# under OUT/jN/image/<pair>/<method>; copy those into runs/da_suite/image/ and collect
# them with `da_suite.py --report-only`.
#
#   PYTHON=python3 OUT=/tmp/da bash benchmarks/da_parallel.sh "digits->mnist5k dann" ...
set -u
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/da_parallel}
LIMIT=${LIMIT:-3600}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
mkdir -p "$OUT/logs"
i=0
for job in "$@"; do
  set -- $job
  i=$((i + 1))
  timeout "$LIMIT" "$PYTHON" benchmarks/da_suite.py --setups image --pairs "$1" \
      --methods "$2" --seeds 0 1 2 --out "$OUT/j$i" > "$OUT/logs/j$i.log" 2>&1 &
done
wait
tail -n 2 "$OUT"/logs/*.log
