"""Augmentation policies inside fine-tuning: from YAML, training batches only, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from transferkit.backbones import create_backbone
from transferkit.errors import ConfigError
from transferkit.experiment import run
from transferkit.experiment.config import validate_config
from transferkit.methods import METHODS
from transferkit.methods.finetune import Finetune, FinetuneParams
from transferkit.methods.heads import make_head
from transferkit.methods.supervised import task_loss

METHOD_YAML = """
name: finetune
params:
  backbone_lr_mult: 1.0
  augment: {image: {policy: randaugment, hflip: true, mixup_alpha: 0.2}}
"""
RUN_YAML = f"""
name: aug
data: {{target: digits, label_budget: 10, max_eval_examples: 60}}
model: {{backbone: "tk:smallcnn", backbone_options: {{width: 8, depth: 2}}}}
method: {json.dumps(yaml.safe_load(METHOD_YAML))}
train: {{epochs: 1, batch_size: 32, lr: 0.01, mixed_precision: "no", log_every_steps: 1}}
baselines: {{enabled: false}}
seeds: [0]
bootstrap_samples: 100
"""


def _finetune(params: dict) -> Finetune:
    torch.manual_seed(0)
    backbone = create_backbone("tk:smallcnn", in_chans=1, width=8, depth=2, input_size=16)
    p = FinetuneParams.model_validate(params)
    return Finetune(backbone, make_head(backbone.num_features, 3), "classification", p)


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(6, 1, 16, 16, generator=g), "y": torch.tensor([0, 1, 2, 0, 1, 2])}


def test_yaml_method_section_validates_into_an_augment_policy() -> None:
    section = yaml.safe_load(METHOD_YAML)
    params = METHODS.get("finetune").Params.model_validate(section["params"])
    assert params.augment is not None and params.augment.image is not None
    assert params.augment.image.policy == "randaugment" and params.augment.image.mixup_alpha == 0.2
    doc = yaml.safe_load(RUN_YAML)
    doc["method"]["params"]["augment"]["image"]["polcy"] = "none"
    with pytest.raises(ConfigError, match=r"augment\.image\.polcy"):
        validate_config(doc)


def test_training_step_trains_on_the_augmented_batch_with_soft_targets() -> None:
    m = _finetune(yaml.safe_load(METHOD_YAML)["params"]).train()
    batch = _batch()
    torch.manual_seed(11)
    loss = m.training_step(batch)["loss"]
    torch.manual_seed(11)
    x, y = m.augmenter(batch["x"], batch["y"])  # type: ignore[misc]
    assert y is not None and y.shape == (6, 3) and torch.allclose(y.sum(1), torch.ones(6))
    assert not torch.equal(x, batch["x"])
    want = task_loss(m.head(m.backbone(x)), y, "classification")
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_evaluation_never_sees_augmentation() -> None:
    m = _finetune(yaml.safe_load(METHOD_YAML)["params"]).eval()
    batch = _batch()
    x, y = m.augmented(batch)
    assert x is batch["x"] and y is batch["y"]
    with torch.no_grad():
        assert torch.equal(m.predict(batch["x"]), m.predict(batch["x"]))
    m.train()
    assert m.augmented(batch)[0] is not batch["x"]
    assert _finetune({}).augmenter is None


def test_policy_for_another_modality_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="reads image") as err:
        _finetune({"augment": {"text": {"token_dropout": 0.1}}})
    assert err.value.where == "method.params.augment.text"


def test_run_from_yaml_with_randaugment_and_mixup(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(yaml.safe_load(RUN_YAML), out=out, quiet=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["target"]["accuracy"] <= 1.0
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["method"]["params"]["augment"]["image"]["policy"] == "randaugment"
    steps = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
    assert any(torch.isfinite(torch.tensor(r["loss"])) for r in steps if "loss" in r)
