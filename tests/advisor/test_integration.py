"""Real data: a tk:smallcnn trained for a few steps on UCI digits vs its random-init copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from transferkit.advisor.ranking import rank_models
from transferkit.backbones import create_backbone, save_backbone
from transferkit.data import load_dataset


@pytest.mark.integration
def test_trained_cnn_outranks_its_random_copy_on_digits(tmp_path: Path) -> None:
    splits = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    bb = create_backbone("tk:smallcnn", width=8, depth=2)
    head = nn.Linear(bb.num_features, 10)
    opt = torch.optim.Adam([*bb.parameters(), *head.parameters()], lr=1e-2)
    x, y = bb.prepare(splits.train.x), torch.as_tensor(splits.train.y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        loss = nn.functional.cross_entropy(head(bb(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    spec = f"file:{save_backbone(bb, tmp_path / 'digits_cnn.safetensors')}"
    rows = rank_models([f"random:{spec}", spec], "digits", max_examples=400, layers=True)
    assert [r["model"] for r in rows] == [spec, f"random:{spec}"]
    trained, control = rows
    assert trained["score"] - control["score"] > 0.08  # "clearly better" on the advisor's scale
    assert trained["scores"]["hscore"] > control["scores"]["hscore"]
    assert trained["scores"]["gbc"] > control["scores"]["gbc"]
    assert [g["name"] for g in trained["layers"]] == ["block0", "block1"]
