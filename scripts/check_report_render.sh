#!/usr/bin/env bash
# Render a run's report.html with headless Chromium to a PNG screenshot and print its path.
#
#   scripts/check_report_render.sh RUN_DIR [OUT_PNG]
#
# Writes RUN_DIR/report.html first if it is missing (with $PYTHON, else .venv/bin/python,
# else python3). Installs Debian's chromium with apt-get when no chromium is on PATH (needs
# root). WINDOW="WIDTH,HEIGHT" sets the viewport in pixels (default 1200,2000).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
    echo "usage: $0 RUN_DIR [OUT_PNG]" >&2
    exit 2
fi
run_dir=$(realpath -- "$1")
out_png=$(realpath -m -- "${2:-$run_dir/report.png}")
window=${WINDOW:-1200,2000}
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

if [[ ! -d "$run_dir" ]]; then
    echo "error: run directory not found: $run_dir" >&2
    exit 2
fi

browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$browser" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: chromium is not installed; run as root or: sudo apt-get install -y chromium" >&2
        exit 1
    fi
    echo "installing chromium (apt-get) ..." >&2
    apt-get update >&2 && apt-get install -y chromium >&2
    browser=$(command -v chromium)
fi

report="$run_dir/report.html"
if [[ ! -f "$report" ]]; then
    python=${PYTHON:-}
    if [[ -z "$python" ]]; then
        if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
    fi
    "$python" -c 'import sys; from pathlib import Path; from transferkit.report import write_report; write_report(Path(sys.argv[1]))' "$run_dir"
fi

profile=$(mktemp -d)
trap 'rm -rf -- "$profile"' EXIT
mkdir -p -- "$(dirname -- "$out_png")"
rm -f -- "$out_png"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --screenshot="$out_png" --window-size="$window" \
    "file://$report" >"$profile/chromium.log" 2>&1 || {
        echo "error: chromium failed:" >&2; tail -20 "$profile/chromium.log" >&2; exit 1; }
if [[ ! -s "$out_png" ]]; then
    echo "error: chromium wrote no screenshot:" >&2; tail -20 "$profile/chromium.log" >&2
    exit 1
fi
echo "$out_png"
