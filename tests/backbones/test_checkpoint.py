"""``save_backbone`` / ``file:``: safetensors round trips, trainer state dicts, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from transferkit.backbones import create_backbone, save_backbone
from transferkit.errors import BackboneError, CheckpointError


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: object) -> None:
    a.eval()
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_smallcnn_round_trip_keeps_weights_spec_and_options(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bb = create_backbone("tk:smallcnn", width=4, depth=2, input_size=12)
    with torch.no_grad():
        bb.model[0][1].running_mean.add_(0.3)  # buffers travel too
    path = save_backbone(bb, tmp_path / "sub" / "bb.safetensors")
    assert sorted(p.name for p in path.parent.iterdir()) == ["bb.safetensors"]  # no temp left
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["transferkit_spec"] == "tk:smallcnn"
    assert json.loads(meta["init_kwargs"]) == {
        "in_chans": 1,
        "width": 4,
        "depth": 2,
        "input_size": [12, 12],
    }
    loaded = create_backbone(f"file:{path}")
    assert loaded.preprocess.input_size == (1, 12, 12)
    x = loaded.prepare(np.random.default_rng(0).integers(0, 256, (2, 9, 9), dtype=np.uint8))
    _same_outputs(bb, loaded, x)


def test_hf_round_trip(tmp_path: Path, tiny_bert_dir: Path) -> None:
    bb = create_backbone(f"hf:{tiny_bert_dir}", pooling="cls")
    with torch.no_grad():
        bb.model.embeddings.word_embeddings.weight.mul_(2.0)  # differs from the directory
    path = save_backbone(bb, tmp_path / "bert.safetensors")
    loaded = create_backbone(f"file:{path}")
    assert loaded.pooling == "cls"
    _same_outputs(bb, loaded, bb.prepare(["a man is playing guitar"]))


def test_trainer_state_dict_with_backbone_prefix(tmp_path: Path) -> None:
    bb = create_backbone("tk:mlp", in_features=3, hidden=[4])
    state = {f"backbone.{k}": v for k, v in bb.state_dict().items()}
    state["head.weight"] = torch.zeros(2, 4)
    with_meta = tmp_path / "method.safetensors"
    save_file(
        state,
        str(with_meta),
        metadata={"transferkit_spec": "tk:mlp", "init_kwargs": json.dumps(bb.init_kwargs)},
    )
    _same_outputs(bb, create_backbone(f"file:{with_meta}"), torch.ones(2, 3))
    bare = tmp_path / "bare.safetensors"
    save_file(state, str(bare))
    with pytest.raises(BackboneError, match="backbone_spec="):
        create_backbone(f"file:{bare}")
    loaded = create_backbone(f"file:{bare}", backbone_spec="tk:mlp", in_features=3, hidden=[4])
    _same_outputs(bb, loaded, torch.ones(2, 3))


def test_mismatched_checkpoint_is_rejected(tmp_path: Path) -> None:
    path = save_backbone(
        create_backbone("tk:mlp", in_features=3, hidden=[4]), tmp_path / "m.safetensors"
    )
    with pytest.raises(BackboneError, match="does not fit"):
        create_backbone(f"file:{path}", hidden=[5])
    with pytest.raises(BackboneError, match="does not fit"):
        create_backbone(f"file:{path}", hidden=[4, 4])


def test_pickles_missing_and_corrupt_files_are_refused(tmp_path: Path) -> None:
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pt)
    with pytest.raises(BackboneError, match="safetensors only"):
        create_backbone(f"file:{pt}")
    with pytest.raises(BackboneError, match="no such checkpoint"):
        create_backbone(f"file:{tmp_path / 'absent.safetensors'}")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 16)
    with pytest.raises(BackboneError, match="not a readable safetensors"):
        create_backbone(f"file:{junk}")


def test_unserialisable_init_kwargs(tmp_path: Path) -> None:
    bb = create_backbone("tk:mlp", in_features=3, hidden=[4])
    bb.init_kwargs = {"fn": print}
    with pytest.raises(CheckpointError, match="JSON"):
        save_backbone(bb, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_model_built_from_a_config_round_trips(tmp_path: Path) -> None:
    from transformers import ViTConfig

    cfg = ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
    )
    bb = create_backbone("hf:vit-from-config", config=cfg)
    loaded = create_backbone(f"file:{save_backbone(bb, tmp_path / 'vit.safetensors')}")
    assert type(loaded.model) is type(bb.model)
    _same_outputs(bb, loaded, torch.randn(2, 3, 16, 16))


def test_file_spec_without_pretrained_is_random_init(tmp_path: Path) -> None:
    """The target-only baseline of a file: backbone must not reuse the saved weights."""
    torch.manual_seed(0)
    bb = create_backbone("tk:smallcnn", width=8, depth=2)
    path = save_backbone(bb, tmp_path / "bb.safetensors")
    same = create_backbone(f"file:{path}")
    fresh = create_backbone(f"file:{path}", pretrained=False)
    ref = bb.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in same.state_dict().items())
    assert not all(torch.equal(ref[k], v) for k, v in fresh.state_dict().items())
    assert fresh.state_dict().keys() == ref.keys()
