"""Ready-to-run experiment configs for the advised strategies (``recommended.yaml`` ...).

Each config is the smallest valid :class:`~transferkit.experiment.config.ExperimentConfig`
document for one :class:`~transferkit.advisor.strategies.Strategy`: the same target data,
label budget and backbone as the advice measured, the strategy's method and parameters,
few epochs (``epochs``, default 5, times the strategy's ``epochs_mult``) and the given
seeds. Every ``transferkit run`` trains
the target-only baselines as well (the same architecture from random initialisation and a
classical model; source-only for domain adaptation) and reports its verdict against them,
so no baseline needs configuring. The document is validated with ``load_config`` before it
is written, and the written file is loaded back as a check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from transferkit.advisor.strategies import Strategy
from transferkit.utils.io import atomic_write_text

BASELINE_NOTE = (
    "every run also trains the target-only baselines (same architecture from random "
    "initialisation, and a classical model on raw inputs; source-only for domain "
    "adaptation) and reports whether transfer beat them"
)


def data_ref(spec: Any) -> str | dict[str, Any]:
    """A data spec as YAML can hold it: built-in names as they are, paths made absolute."""
    if isinstance(spec, Mapping):
        out = dict(spec)
        if "path" in out:
            out["path"] = str(Path(str(out["path"])).expanduser().resolve())
        return out
    text = str(spec)
    path = Path(text).expanduser()
    if isinstance(spec, Path) or path.exists():
        return str(path.resolve())
    return text


def strategy_config(
    strategy: Strategy,
    *,
    name: str,
    model: str,
    target: Any,
    source: Any = None,
    backbone_options: dict[str, Any] | None = None,
    model_pretrained: bool = True,
    label_budget: int | None = None,
    epochs: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
) -> dict[str, Any]:
    """The config document (a dict) that runs ``strategy`` on the advised data and model."""
    data: dict[str, Any] = {"target": data_ref(target)}
    if strategy.uses_source:
        data["source"] = data_ref(source)
    if label_budget is not None:
        data["label_budget"] = int(label_budget)
    doc: dict[str, Any] = {
        "name": name,
        "data": data,
        "model": {
            "backbone": model,
            "backbone_options": dict(backbone_options or {}),
            "pretrained": bool(strategy.pretrained and model_pretrained),
        },
        "method": {"name": strategy.method, "params": dict(strategy.params)},
        "train": {"epochs": int(epochs) * strategy.epochs_mult, **strategy.train},
        "seeds": [int(s) for s in seeds],
    }
    if not strategy.pretrained:
        # the method IS the random-init baseline; the classical baseline still runs
        doc["baselines"] = {"random_init": False}
    return doc


def render(doc: dict[str, Any], title: str, strategy: Strategy) -> str:
    """YAML text with a comment header saying what the file runs and how."""
    header = [
        f"# {title}: {strategy.summary}",
        f"# {BASELINE_NOTE}.",
        f"# run it: transferkit run <this file> --out runs/{doc['name']}",
    ]
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return "\n".join(header) + "\n" + body


def write_config(path: str | Path, doc: dict[str, Any], title: str, strategy: Strategy) -> Path:
    """Validate ``doc``, write it atomically as YAML, and load the file back as a check."""
    from transferkit.experiment.config import load_config

    load_config(doc)  # ConfigError here would be an advisor bug: never write an invalid file
    path = Path(path)
    atomic_write_text(path, render(doc, title, strategy))
    load_config(path)
    return path
