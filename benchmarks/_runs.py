"""Shared by the benchmark scripts: run (or reuse, or resume) one experiment directory."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import transferkit
from transferkit.utils.io import atomic_write_text


def run_one(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``metrics.json`` of ``run_dir``: reused when finished, resumed when interrupted
    (its finished trainings are kept), otherwise trained from ``cfg``."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    if (run_dir / "config.yaml").is_file():
        res = transferkit.resume(run_dir, quiet=True)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        res = transferkit.run(cfg, out=run_dir, quiet=True)
    m = res.metrics
    src = m.get("baselines", {}).get("source_only", {}).get("accuracy")
    src_txt = "" if src is None else f" src-only {src:.3f}"
    print(
        f"  {cfg['name']}: acc {m['target']['accuracy']:.3f}{src_txt} "
        f"({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    return m


def write_section(doc: Path, text: str, name: str) -> None:
    """Put ``text`` between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``doc``
    (replacing what was there; appended, markers included, when the page has none)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new = head + block + ("\n" + tail if tail else "")
    else:
        new = (old + "\n" if old else "") + block
    atomic_write_text(doc, new)
