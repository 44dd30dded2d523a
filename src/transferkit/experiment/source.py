"""A finished transferkit run used as the *source* of a new one (``model.source_run``).

The source run's final model (``checkpoints/target-seed<first>/model.safetensors``, keys
``backbone.*`` and ``head.*``) provides:

* the backbone, when ``model.backbone: source`` (its architecture from the source run's
  config, its weights from the source run's fine-tuned model);
* the source head (``[B, D] -> [B, C_s]``), which Learning without Forgetting needs and
  which measures forgetting: source-task test accuracy before and after fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from transferkit.backbones import Backbone, create_backbone
from transferkit.data.types import Dataset
from transferkit.errors import ConfigError
from transferkit.experiment.config import ExperimentConfig, load_config
from transferkit.methods.heads import make_head


@dataclass
class SourceRun:
    """What a new run takes from a finished source run."""

    run_dir: Path
    config: ExperimentConfig
    weights: dict[str, torch.Tensor]
    test: Dataset

    def backbone(self) -> Backbone:
        """The source run's fine-tuned backbone (architecture from its config)."""
        m = self.config.model
        bb = create_backbone(m.backbone, pretrained=False, **m.backbone_options)
        state = {
            k[len("backbone.") :]: v for k, v in self.weights.items() if k.startswith("backbone.")
        }
        bb.load_state_dict(state, strict=True)
        return bb

    def head(self, in_features: int) -> nn.Module:
        """The source task's head with its trained weights."""
        m = self.config.model
        n_out = self.test.num_classes if self.test.task == "classification" else 1
        head = make_head(in_features, n_out, m.head, m.head_hidden, m.head_dropout)
        state = {k[len("head.") :]: v for k, v in self.weights.items() if k.startswith("head.")}
        try:
            head.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(
                f"the source run's head does not fit this backbone ({exc})",
                where=f"model.source_run={self.run_dir}",
                fix="use the source run's backbone (model.backbone: source)",
            ) from None
        return head


def load_source_run(path: str | Path) -> SourceRun:
    """Open a finished run directory as a source (its first seed's final model)."""
    from transferkit.experiment.runner import load_splits

    d = Path(path)
    if not (d / "config.yaml").is_file():
        raise ConfigError(
            f"{str(d)!r} is not a transferkit run directory",
            where="model.source_run",
            fix="give the --out of a finished run",
        )
    cfg = load_config(d / "config.yaml")
    weights_path = d / "checkpoints" / f"target-seed{cfg.seeds[0]}" / "model.safetensors"
    if not weights_path.is_file():
        raise ConfigError(
            "the source run has no final fine-tuned model",
            where=str(weights_path),
            fix="use a finished run of a gradient-trained method (e.g. finetune)",
        )
    test = load_splits(cfg, cfg.seeds[0]).test
    return SourceRun(d, cfg, load_file(str(weights_path)), test)


@torch.no_grad()
def source_accuracy(backbone: Backbone, head: nn.Module, test: Dataset, batch_size: int) -> float:
    """Accuracy of ``head(backbone(x))`` on the source test split (classification)."""
    from transferkit.engine.extract import extract_features

    was = head.training
    head.eval()
    feats = extract_features(backbone, test.x, batch_size=batch_size)
    pred = head(torch.as_tensor(feats)).argmax(-1).numpy()
    head.train(was)
    return float(np.mean(pred == test.y))


def forgetting_record(before: float, after: float, source: SourceRun) -> dict[str, Any]:
    return {
        "kind": "source_task_accuracy",
        "source_run": str(source.run_dir),
        "source_dataset": str(source.config.data.target),
        "before": before,
        "after": after,
        "drop": before - after,
    }
