"""The run directory (DESIGN.md, "Run directory and metrics").

```
DIR/config.yaml      the fully resolved config
DIR/metrics.json     results, baselines, transfer gain and verdict
DIR/log.jsonl        one JSON object per logged step / epoch ("run" names the training)
DIR/report.html      self-contained report
DIR/checkpoints/     safetensors weights + trainer state, one folder per training
DIR/stages/          finished trainings' test outputs (so `resume` skips them)
```

A run never overwrites another run's directory unless asked: ``prepare_run_dir`` refuses a
non-empty directory without ``overwrite=True``.

Under a multi-process launch only the main process calls the functions that write here
(the runner wraps them in ``engine.accel.on_main``, which shares their result or error
with the other processes and acts as a barrier).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import CheckpointError
from transferkit.utils.io import atomic_write_json, atomic_write_text

MARKER = ".transferkit-run"


def prepare_run_dir(path: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create (or reopen, with ``resume``) a run directory; refuse to clobber one."""
    d = Path(path)
    if resume:
        if not (d / "config.yaml").is_file():
            raise CheckpointError(
                f"{str(d)!r} is not a transferkit run directory (no config.yaml)",
                fix="pass the directory given to `transferkit run --out`",
            )
        return d
    if d.exists() and not d.is_dir():
        raise CheckpointError(f"{str(d)!r} exists and is not a directory", fix="choose --out")
    if d.exists() and any(d.iterdir()):
        if not overwrite:
            raise CheckpointError(
                f"run directory {str(d)!r} already exists and is not empty",
                fix="choose another --out, resume it with `transferkit resume`, "
                "or pass --overwrite to replace it",
            )
        if not (d / MARKER).exists():
            raise CheckpointError(
                f"refusing to overwrite {str(d)!r}: it is not a transferkit run directory",
                fix="choose another --out",
            )
        shutil.rmtree(d)
    try:
        d.mkdir(parents=True, exist_ok=True)
        (d / MARKER).write_text("transferkit run directory\n")
    except OSError as exc:
        raise CheckpointError(
            f"cannot create run directory: {exc.strerror}",
            where=str(d),
            fix="choose a writable --out",
        ) from None
    return d


def open_run_dir(path: str | Path, config_yaml: str, overwrite: bool, resume: bool) -> Path:
    """:func:`prepare_run_dir`, then write the resolved config as ``DIR/config.yaml``.

    On resume the directory's config must equal ``config_yaml``: a changed config is refused
    before anything is written (finished stages were trained with the old one). Keys the
    stored config lacks are settings added to transferkit after the run started; they take
    their defaults and are reported as a warning, not refused (else no run could be
    resumed across an upgrade that adds a setting).
    """
    d = prepare_run_dir(path, overwrite=overwrite, resume=resume)
    if resume:
        old = (d / "config.yaml").read_text(encoding="utf-8")
        changed = config_changes(old, config_yaml)
        added = config_additions(old, config_yaml)
        if added:
            warnings.warn(
                f"{d}: resuming a run started before these settings existed; they take "
                f"their defaults: {', '.join(added[:8])}",
                stacklevel=2,
            )
        if changed:
            raise CheckpointError(
                "the config differs from the one this run was started with: "
                + ", ".join(changed[:8])
                + (f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""),
                where=str(d / "config.yaml"),
                fix="resume with the run's own config (`transferkit resume DIR`), or start a "
                "new run with another --out",
            )
        return d
    atomic_write_text(d / "config.yaml", config_yaml)
    return d


def _flat_config(text: str) -> dict[str, Any]:
    """A resolved config YAML as ``{dotted.key: leaf value}``."""
    import yaml

    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(node, dict) and node:
            out: dict[str, Any] = {}
            for k, v in node.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix.rstrip("."): node}

    return flat(yaml.safe_load(text) or {})


def _added(a: dict[str, Any], k: str) -> bool:
    """``k`` is absent from ``a`` and so is every parent key: a setting added later."""
    parts = k.split(".")
    return not any(".".join(parts[:i]) in a for i in range(1, len(parts) + 1))


def config_changes(old_yaml: str, new_yaml: str) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, ``key: old -> new``.

    Keys missing from ``old_yaml`` (and all its parents) are settings added since: they are
    listed by :func:`config_additions`, not here.
    """
    a, b = _flat_config(old_yaml), _flat_config(new_yaml)
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k) and not (k in b and _added(a, k))
    ]


def config_additions(old_yaml: str, new_yaml: str) -> list[str]:
    """Keys of ``new_yaml`` that ``old_yaml`` lacks entirely, ``key = value``."""
    a, b = _flat_config(old_yaml), _flat_config(new_yaml)
    return [f"{k} = {b[k]!r}" for k in sorted(b) if _added(a, k)]


def stage_dirname(stage: str) -> str:
    """A training's folder under ``DIR/checkpoints/`` (``target/seed0`` -> ``target-seed0``)."""
    return stage.replace("/", "-")


def stage_path(run_dir: Path, stage: str) -> Path:
    return run_dir / "stages" / f"{stage.replace('/', '__')}.json"


def save_stage(run_dir: Path, stage: str, record: dict[str, Any]) -> None:
    """Persist a finished training's test outputs and metrics (atomic)."""
    atomic_write_json(stage_path(run_dir, stage), record)


def load_stage(run_dir: Path, stage: str) -> dict[str, Any] | None:
    """A finished training's record, or None if it has not finished."""
    p = stage_path(run_dir, stage)
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    rec["outputs"] = np.asarray(rec["outputs"], dtype=np.float32)
    rec["y"] = np.asarray(rec["y"])
    return rec


def merge_logs(run_dir: Path) -> None:
    """Rebuild ``DIR/log.jsonl`` from every training's log, tagging lines with ``"run"``."""
    lines = []
    for log_file in sorted((run_dir / "checkpoints").glob("*/log.jsonl")):
        run_name = log_file.parent.name
        for raw in log_file.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            lines.append(json.dumps({"run": run_name, **rec}))
    atomic_write_text(run_dir / "log.jsonl", "\n".join(lines) + ("\n" if lines else ""))
