"""``transferkit export RUN_DIR``: the final model of a finished run as ONNX / TorchScript /
safetensors, checked against PyTorch on real test inputs.

The exported module is ``head(backbone(prepared inputs))`` of the first seed (the student
of a distillation run). Gradient-trained runs keep ``checkpoints/target-seed<s>/
model.safetensors``; closed-form runs keep the head only (``head.safetensors``) on top of
the pretrained backbone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from transferkit.backbones import create_backbone
from transferkit.errors import CheckpointError, ConfigError
from transferkit.experiment.config import load_config
from transferkit.methods.heads import make_head

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}


def _split(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def export_run(
    run_dir: str | Path,
    fmt: str = "onnx",
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Export the run's model; returns :func:`~transferkit.deploy.export.export_model`'s
    record (path, size, max abs difference to PyTorch)."""
    from transferkit.deploy.export import export_model
    from transferkit.deploy.predict import BackboneHead
    from transferkit.experiment.runner import load_splits

    d = Path(run_dir)
    if fmt not in SUFFIX:
        raise ConfigError(
            f"unknown export format {fmt!r}",
            where="--format",
            fix="use onnx, torchscript or safetensors",
        )
    if not (d / "config.yaml").is_file():
        raise CheckpointError(
            f"{str(d)!r} is not a transferkit run directory",
            where=str(d),
            fix="pass the --out directory of a finished run",
        )
    cfg = load_config(d / "config.yaml")
    m = cfg.model
    if m.backbone == "source" or (cfg.method.params or {}).get("peft"):
        raise ConfigError(
            "runs with model.backbone: source or PEFT adapters cannot be exported yet",
            where=str(d / "config.yaml"),
            fix="export a run with a named backbone and no peft adapters",
        )
    target = Path(out) if out is not None else d / "export" / f"model{SUFFIX[fmt]}"
    if target.exists() and not overwrite:
        raise CheckpointError(
            f"{str(target)!r} already exists",
            where="--out",
            fix="choose another --out or pass --overwrite",
        )
    work = d / "checkpoints" / f"target-seed{cfg.seeds[0]}"
    full, head_only = work / "model.safetensors", work / "head.safetensors"
    if not full.is_file() and not head_only.is_file():
        raise CheckpointError(
            "the run has no final model",
            where=str(work),
            fix="finish the run first (transferkit resume RUN_DIR)",
        )
    test = load_splits(cfg, cfg.seeds[0]).test
    n_out = test.num_classes if test.task == "classification" else 1
    bb = create_backbone(m.backbone, pretrained=not full.is_file(), **m.backbone_options)
    head = make_head(bb.num_features, n_out, m.head, m.head_hidden, m.head_dropout)
    if full.is_file():
        state = load_file(str(full))
        bb.load_state_dict(_split(state, "backbone."), strict=True)
        head.load_state_dict(_split(state, "head."), strict=True)
    else:
        head = _closed_form_head(head_only, head)
    module = BackboneHead(bb, head, test.task == "regression")
    example = bb.prepare(test.x[:2])
    return export_model(module, example, target, fmt, tolerance=tolerance)  # type: ignore[arg-type]


def _closed_form_head(path: Path, head: Any) -> Any:
    state = load_file(str(path))
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ConfigError(
            "this closed-form head (e.g. knn / mlp probe) is not a plain "
            "linear head and cannot be rebuilt for export",
            where=str(path),
            fix="export a run with head: logreg / ridge / linear_svm",
        ) from None
    return head
