"""Export a trained student (backbone + head as one prediction module) for deployment.

``export_model(model, example_inputs, out_path, format=...)`` writes, atomically:

* ``"onnx"``: ``torch.onnx.export`` with a dynamic batch axis (and a dynamic sequence
  axis for text inputs), then checked with ONNX Runtime against PyTorch on the example
  and on a batch of another size. The default exporter is the TorchScript-based one
  (``dynamo=False``): with torch 2.14 it needs only ``onnx``, and exports a small model in
  well under a second; ``exporter="dynamo"`` uses ``torch.export`` (needs ``onnxscript``,
  about 10 s for a tiny model on 2 CPU cores).
* ``"torchscript"``: ``torch.jit.trace`` (deprecated upstream in favour of
  ``torch.export``, still supported), reloaded with ``torch.jit.load`` and checked.
* ``"safetensors"``: the prediction module's ``state_dict`` with metadata (backbone spec
  and options, input names); :func:`load_safetensors` loads it into a freshly built model.

Every check computes the maximum absolute difference between the exported model's and
PyTorch's outputs; above ``tolerance`` (default ``1e-4``) an :class:`ExportError` is raised
and nothing is written. The returned dict (``format``, ``path``, ``size_bytes``,
``max_abs_diff``, ``inputs``, ``sha256``) goes into ``metrics.json``. Only the student is
exported: a distillation method's teacher and hint regressors are not part of the
prediction module (:func:`~transferkit.deploy.predict.predict_module`).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from transferkit.deploy.predict import (
    Inputs,
    PositionalInputs,
    flat_inputs,
    predict_module,
    repeat_batch,
)
from transferkit.engine.checkpoint import tensors_for_saving
from transferkit.errors import ConfigError, TransferkitError
from transferkit.utils.io import atomic_path, sha256_file

__all__ = ["ExportError", "export_model", "load_safetensors"]

Format = Literal["onnx", "torchscript", "safetensors"]
FORMATS = ("onnx", "torchscript", "safetensors")


class ExportError(TransferkitError):
    """An export that cannot be written or does not reproduce the PyTorch outputs."""


def _check_batch(out: Tensor, reference: Tensor, fmt: str, tolerance: float) -> float:
    diff = float(np.max(np.abs(np.asarray(out, dtype=np.float64) - reference.double().numpy())))
    if not diff <= tolerance:  # also catches NaN
        raise ExportError(
            f"the {fmt} export differs from PyTorch by up to {diff:.3g} (> {tolerance:g})",
            where=f"export_model(format={fmt!r})",
            fix="export in float32 with the model in eval mode; an op without an exact "
            "equivalent in the target runtime may need another format",
        )
    return diff


def _checks(example: Inputs) -> list[tuple[tuple[Tensor, ...], list[str]]]:
    """The example, and a batch of a different size (proves the dynamic batch axis)."""
    first = next(iter(example.values())) if isinstance(example, dict) else example
    other = 3 if int(first.shape[0]) != 3 else 2
    out = []
    for ex in (example, repeat_batch(example, other)):
        names, args = flat_inputs(ex)
        out.append((args, names))
    return out


def _export_onnx(
    flat: nn.Module,
    args: tuple[Tensor, ...],
    names: list[str],
    path: Path,
    exporter: str,
    opset: int | None,
) -> None:
    axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in names}
    for n, a in zip(names, args, strict=True):
        if len(names) > 1 and a.ndim == 2 and not a.is_floating_point():
            axes[n][1] = "sequence"  # token ids / masks [B, L]
    axes["output"] = {0: "batch"}
    kw: dict[str, Any] = {"input_names": names, "output_names": ["output"]}
    if opset is not None:
        kw["opset_version"] = opset
    if exporter == "dynamo":
        dims = tuple({i: torch.export.Dim.AUTO for i in axes[n]} for n in names)
        shapes = dims if isinstance(flat, PositionalInputs) else dims[0]
        kw.update(dynamo=True, dynamic_shapes=(shapes,), external_data=False)
    else:
        kw.update(dynamo=False, dynamic_axes=axes, opset_version=opset or 17)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation + tracer warnings of the exporter
        try:
            torch.onnx.export(flat, args, str(path), **kw)
        except ImportError as exc:
            raise ExportError(
                f"the {exporter} ONNX exporter is not available ({exc})",
                where="export_model(format='onnx')",
                fix="pip install onnx onnxscript, or use exporter='legacy'",
            ) from exc


def _onnx_runner(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError(
            "onnxruntime is needed to check the ONNX export",
            where="export_model(format='onnx')",
            fix="pip install onnx onnxruntime",
        ) from exc
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _reference(flat: nn.Module, args: tuple[Tensor, ...]) -> Tensor:
    with torch.inference_mode():
        return flat(*args)


def _flat(module: nn.Module, names: list[str]) -> nn.Module:
    """The module with positional tensor inputs, in eval mode (exporters restore the
    top module's mode afterwards, which must not switch dropout on)."""
    return (module if names == ["x"] else PositionalInputs(module, names)).eval()


def _onnx(
    module: nn.Module, example: Inputs, path: Path, tol: float, exporter: str, opset: int | None
) -> float:
    names, args = flat_inputs(example)
    flat = _flat(module, names)
    _export_onnx(flat, args, names, path, exporter, opset)
    flat.eval()
    session = _onnx_runner(path)
    diff = 0.0
    for batch_args, batch_names in _checks(example):
        feeds = {n: a.numpy() for n, a in zip(batch_names, batch_args, strict=True)}
        ref = _reference(flat, batch_args)
        diff = max(diff, _check_batch(session.run(None, feeds)[0], ref, "onnx", tol))
    return diff


def _torchscript(module: nn.Module, example: Inputs, path: Path, tol: float) -> float:
    names, args = flat_inputs(example)
    flat = _flat(module, names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit deprecation + tracer warnings
        traced = torch.jit.trace(flat, args, check_trace=False)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")
    diff = 0.0
    for batch_args, _ in _checks(example):
        with torch.inference_mode():
            out = loaded(*batch_args)
        diff = max(diff, _check_batch(out, _reference(flat, batch_args), "torchscript", tol))
    return diff


def _metadata(module: nn.Module, names: list[str]) -> dict[str, str]:
    backbone = getattr(module, "backbone", None)
    meta = {"format": "transferkit-predict", "inputs": json.dumps(names)}
    if backbone is not None and hasattr(backbone, "spec"):
        meta["transferkit_spec"] = str(backbone.spec)
        with contextlib.suppress(TypeError):  # options that are not JSON are left out
            meta["init_kwargs"] = json.dumps(getattr(backbone, "init_kwargs", {}))
    return meta


def _safetensors(module: nn.Module, example: Inputs, path: Path) -> float:
    names, _ = flat_inputs(example)
    state = tensors_for_saving(module.state_dict())
    save_file(state, str(path), metadata=_metadata(module, names))
    stored = load_file(str(path))
    if stored.keys() != state.keys():
        raise ExportError("the safetensors file lost tensors", where=str(path))
    return max(
        (
            float((stored[k].double() - v.double()).abs().max())
            for k, v in state.items()
            if v.numel()
        ),
        default=0.0,
    )


def load_safetensors(module: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load weights written by ``export_model(..., format="safetensors")`` into ``module``
    (a method or prediction module of the same architecture), strictly; returns it."""
    target = predict_module(module)
    try:
        target.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, OSError) as exc:
        raise ExportError(
            f"cannot load {path} into {type(target).__name__} ({str(exc)[:300]})",
            where=str(path),
            fix="build the same backbone and head as the exported student, then load",
        ) from exc
    return module


def export_model(
    model: nn.Module,
    example_inputs: Inputs,
    out_path: str | os.PathLike[str],
    format: Format = "onnx",
    *,
    tolerance: float = 1e-4,
    exporter: Literal["legacy", "dynamo"] = "legacy",
    opset: int | None = None,
) -> dict[str, Any]:
    """Export ``model``'s prediction module to ``out_path`` and check it (see module doc).

    Args:
        model: a trained method (the student's ``head(backbone(x))`` is exported) or any
            ``nn.Module`` taking prepared inputs.
        example_inputs: prepared inputs (``backbone.prepare(raw)``): a tensor or a dict.
        out_path: the file to write (parent directories are created).
        format: ``"onnx"``, ``"torchscript"`` or ``"safetensors"``.
        tolerance: largest accepted absolute difference to PyTorch's outputs.
        exporter: ONNX exporter, ``"legacy"`` (TorchScript-based) or ``"dynamo"``.
        opset: ONNX opset version (default: 17 for the legacy exporter, the dynamo
            exporter's own default otherwise).

    Returns:
        ``{"format", "path", "size_bytes", "max_abs_diff", "inputs", "sha256"}``.
    """
    if format not in FORMATS or exporter not in ("legacy", "dynamo"):
        raise ConfigError(
            f"unknown export format {format!r} / exporter {exporter!r}",
            where="export_model(format=..., exporter=...)",
            fix=f"use format in {FORMATS} and exporter 'legacy' or 'dynamo'",
        )
    module = predict_module(model)
    was_training = module.training
    module.eval()
    names, _ = flat_inputs(example_inputs)
    try:
        with atomic_path(out_path) as tmp:
            if format == "onnx":
                diff = _onnx(module, example_inputs, tmp, tolerance, exporter, opset)
            elif format == "torchscript":
                diff = _torchscript(module, example_inputs, tmp, tolerance)
            else:
                diff = _safetensors(module, example_inputs, tmp)
    finally:
        module.train(was_training)
    path = Path(out_path)
    return {
        "format": format,
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "max_abs_diff": diff,
        "inputs": names,
        "sha256": sha256_file(path),
    }
