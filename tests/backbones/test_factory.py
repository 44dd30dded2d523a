"""Spec resolution: close-match suggestions, offline errors, options and the models table."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.backbones import create_backbone, describe_families, list_packaged, models_table
from transferkit.errors import BackboneError, ConfigError, DataError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("timmm:resnet18", "timm:resnet18"),
        ("resnet18", "timm:resnet18"),
        ("timm:resnet1888", "timm:resnet18"),
        ("torchvision:resnet_18", "torchvision:resnet18"),
        ("torchvision:efficientnet-lite0", "packaged:efficientnet-lite0"),
        ("packaged:minilm", "minilm-l6"),
        ("tk:smalcnn", "tk:smallcnn"),
    ],
)
def test_unknown_specs_suggest_close_matches(spec: str, expected: str) -> None:
    with pytest.raises(BackboneError) as err:
        create_backbone(spec, pretrained=False)
    assert expected in str(err.value)
    assert err.value.fix


@pytest.mark.parametrize("spec", ["", "timm:", 3])
def test_malformed_specs(spec: object) -> None:
    with pytest.raises(BackboneError):
        create_backbone(spec, pretrained=False)  # type: ignore[arg-type]


def test_offline_hub_id_names_the_offline_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneError) as err:
        create_backbone("hf:transferkit-tests/no-such-model")
    msg = str(err.value)
    assert "unreachable" in msg and "packaged:minilm-l6" in msg and "local directory" in msg


def test_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="no such model directory"):
        create_backbone(f"hf:{tmp_path / 'nope'}")


def test_torchvision_pretrained_offline_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torchvision.models._api as api

    def offline(*_a: object, **_k: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(BackboneError) as err:
        create_backbone("torchvision:mobilenet_v3_small", pretrained=True)
    msg = str(err.value)
    assert "packaged:efficientnet-lite0" in msg and "packaged:minilm-l6" in msg
    assert "pretrained=False" in msg


def test_library_options_pass_through_and_bad_ones_are_named() -> None:
    bb = create_backbone("timm:resnet10t", pretrained=False, in_chans=1, input_size=32)
    assert bb.preprocess.input_size == (1, 32, 32)
    assert bb.prepare(np.zeros((2, 40, 40, 3), np.uint8)).shape == (2, 1, 32, 32)
    with pytest.raises(BackboneError, match="rejected an option"):
        create_backbone("timm:resnet10t", pretrained=False, no_such_option=1)


def test_tk_options_are_validated() -> None:
    with pytest.raises(BackboneError, match="in_features"):
        create_backbone("tk:mlp")
    with pytest.raises(BackboneError, match="width"):
        create_backbone("tk:smallcnn", width=0)
    with pytest.raises(BackboneError, match="unknown option"):
        create_backbone("tk:smallcnn", colour=True)
    cnn = create_backbone("tk:smallcnn", width=3, depth=2, in_chans=3)
    assert cnn.num_features == 6 and [g.dim for g in cnn.layer_groups()] == [3, 6]
    assert cnn(torch.zeros(2, 3, 1, 1)).shape == (2, 6)  # runs down to 1x1 pixels


def test_index_out_of_range_and_modality_mismatch(tiny_bert_dir: Path) -> None:
    mlp = create_backbone("tk:mlp", in_features=3, hidden=[4])
    with pytest.raises(ConfigError, match="out of range"):
        mlp.forward_intermediates(torch.zeros(2, 3), [1])
    bert = create_backbone(f"hf:{tiny_bert_dir}")
    with pytest.raises(DataError, match="list of str"):
        bert.prepare({"pixels": 1})
    with pytest.raises(DataError, match="text backbone"):
        bert.prepare(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="dict from prepare"):
        bert(torch.zeros(2, 3))
    with pytest.raises(DataError, match="numeric"):
        mlp.prepare(["a man", "a dog"])


def test_hf_pooling_options(tiny_bert_dir: Path) -> None:
    texts = ["a man is playing guitar", "the cat"]
    mean = create_backbone(f"hf:{tiny_bert_dir}").eval()
    x = mean.prepare(texts)
    with torch.no_grad():
        h = mean.model(**x).last_hidden_state
        m = x["attention_mask"][..., None].float()
        torch.testing.assert_close(mean(x), (h * m).sum(1) / m.sum(1))
        cls = create_backbone(f"hf:{tiny_bert_dir}", pooling="cls").eval()
        torch.testing.assert_close(cls(x), h[:, 0])
        unit = create_backbone(f"hf:{tiny_bert_dir}", normalize=True).eval()
        torch.testing.assert_close(unit(x).norm(dim=1), torch.ones(2))
        pooler = create_backbone(f"hf:{tiny_bert_dir}", pooling="pooler").eval()
    assert [g.name for g in pooler.layer_groups()][-1] == "pooler"
    assert mean.model.pooler is None  # unused pooler removed: no gradient-less parameters
    with pytest.raises(BackboneError, match="pooling"):
        create_backbone(f"hf:{tiny_bert_dir}", pooling="max")
    short = create_backbone(f"hf:{tiny_bert_dir}", max_length=4)
    assert short.prepare(["a man is playing guitar today"])["input_ids"].shape == (1, 4)


def test_hf_from_config_without_weights(tiny_bert_dir: Path) -> None:
    from transformers import BertConfig

    cfg = BertConfig(
        vocab_size=30,
        hidden_size=8,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    bb = create_backbone(f"hf:{tiny_bert_dir}", config=cfg)
    assert bb.num_features == 8 and len(bb.layer_groups()) == 4
    assert bb.init_kwargs["config"]["num_hidden_layers"] == 3  # JSON-safe for file:


def test_hf_vision_transformer_from_config(tmp_path: Path) -> None:
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
    assert bb.modality == "image" and bb.preprocess.input_size == (3, 16, 16)
    x = bb.prepare([np.zeros((20, 30, 3), np.uint8), np.ones((16, 16), np.uint8)])
    assert x.shape == (2, 3, 16, 16)
    bb.eval()
    with torch.no_grad():
        out = bb(x)
        h = bb.model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(out, h[:, 1:].mean(1))  # patch tokens, class token excluded
    names = {n for n, _ in bb.named_parameters()}
    assert set().union(*(g.param_names for g in bb.layer_groups())) == names


def test_models_table_rows() -> None:
    rows = models_table()
    assert all(list(r) == list(rows[0]) for r in rows)
    names = [r["name"] for r in rows]
    assert {"packaged:minilm-l6", "packaged:efficientnet-lite0", "tk:smallcnn", "tk:mlp"} <= set(
        names
    )
    assert {r["family"] for r in describe_families()} >= {"timm", "torchvision", "hf", "file"}
    cnn = next(r for r in rows if r["name"] == "tk:smallcnn")
    # 3x3 convs 1->32->64->128 (no bias) + BN affine pairs
    assert cnn["params"] == 9 * (32 + 32 * 64 + 64 * 128) + 2 * (32 + 64 + 128)
    assert cnn["num_features"] == 128
    assert [r["name"] for r in list_packaged()] == [
        "packaged:minilm-l6",
        "packaged:efficientnet-lite0",
        "packaged:efficientnet-lite1",
        "packaged:efficientnet-lite2",
    ]
