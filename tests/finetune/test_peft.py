"""LoRA / IA3 / LoHa adapters on hf, timm and tk backbones: frozen base, exact init, merge."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch
from torch import nn

from tests.backbones.conftest import write_tiny_bert
from tests.conftest import TinyVectorBackbone
from transferkit.backbones import Backbone, LayerGroup, create_backbone, save_backbone
from transferkit.errors import BackboneError, ConfigError
from transferkit.finetune.peft import (
    PeftConfig,
    adapter_parameter_names,
    apply_peft,
    default_target_modules,
    has_adapters,
    merge_peft,
    trainable_parameter_count,
)

Build = Callable[[], tuple[Backbone, Any]]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("peft-bert"))  # 2 layers, hidden 16, FFN 32


def build(family: str, bert_dir: Path) -> tuple[Backbone, Any]:
    """(backbone, prepared batch of 4) for a tiny model of ``family``, seeded."""
    torch.manual_seed(0)
    if family == "bert":
        bb = create_backbone(f"hf:{bert_dir}")
        x = bb.prepare(["a man is playing guitar", "the cat sat", "dog runs in park", "music"])
        return bb, x
    if family == "resnet":
        # zero_init_last=False: a zero BN gamma would block every gradient into the block
        bb = create_backbone(
            "timm:resnet10t", pretrained=False, input_size=32, zero_init_last=False
        )
        return bb, torch.randn(4, 3, 32, 32)
    bb = create_backbone("tk:smallcnn", in_chans=1, width=8, depth=3)
    return bb, torch.randn(4, 1, 8, 8)


def outputs(bb: Backbone, x: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Eval-mode ``forward`` and every group's intermediate, without gradients."""
    bb.eval()
    with torch.no_grad():
        return bb(x), bb.forward_intermediates(x, list(range(len(bb.layer_groups()))))


def train_steps(bb: Backbone, x: Any, steps: int = 3) -> None:
    """A few AdamW steps (weight decay on) over ALL backbone parameters, frozen ones too."""
    bb.train()
    target = torch.randn(len(bb(x)), 3)
    proj = torch.randn(bb.num_features, 3)
    opt = torch.optim.AdamW(bb.parameters(), lr=0.005, weight_decay=0.1)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((bb(x) @ proj - target) ** 2).mean()
        loss.backward()
        opt.step()


def strip(name: str) -> str:
    return ".".join(p for p in name.split(".") if p != "base_layer")


def assert_groups_cover(bb: Backbone) -> None:
    """Every parameter lies in exactly one layer group."""
    listed = [p for g in bb.layer_groups() for p in g.param_names]
    assert sorted(listed) == sorted(n for n, _ in bb.named_parameters())
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("family", ["bert", "resnet", "smallcnn"])
def test_lora_lifecycle(family: str, bert_dir: Path) -> None:
    bb, x = build(family, bert_dir)
    y0, mids0 = outputs(bb, x)
    keys0 = list(bb.state_dict())
    groups0 = [g.param_names for g in bb.layer_groups()]
    base0 = {n: p.detach().clone() for n, p in bb.named_parameters()}

    info = apply_peft(bb, PeftConfig(r=4, alpha=8))
    adapters = adapter_parameter_names(bb)
    n_base = sum(p.numel() for p in base0.values())
    assert info["trainable"] == trainable_parameter_count(bb) > 0
    assert info["base_frozen"] == n_base and info["total"] == n_base + info["trainable"]
    assert info["trainable"] < 0.35 * info["total"]
    assert {n for n, p in bb.named_parameters() if p.requires_grad} == adapters
    assert_groups_cover(bb)

    y_init, mids_init = outputs(bb, x)  # B = 0 at init: exactly the base model
    assert torch.equal(y_init, y0)
    assert all(torch.equal(a, b) for a, b in zip(mids_init, mids0, strict=True))

    train_steps(bb, x)
    for n, p in bb.named_parameters():
        if n not in adapters:
            assert torch.equal(p, base0[strip(n)]), n  # base weights bit-unchanged
    assert all(p.abs().sum() > 0 for n, p in bb.named_parameters() if "lora_B" in n)
    y_ad, mids_ad = outputs(bb, x)
    assert not torch.allclose(y_ad, y0, atol=1e-4)
    assert torch.equal(mids_ad[-1], y_ad)
    assert [m.shape[-1] for m in mids_ad] == [g.dim for g in bb.layer_groups()]

    merge_peft(bb)
    y_merged, mids_merged = outputs(bb, x)
    torch.testing.assert_close(y_merged, y_ad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mids_merged[0], mids_ad[0], atol=1e-5, rtol=1e-5)
    assert list(bb.state_dict()) == keys0
    assert [g.param_names for g in bb.layer_groups()] == groups0
    assert not has_adapters(bb)


@pytest.mark.parametrize("family", ["bert", "resnet", "smallcnn"])
def test_adapters_join_the_group_of_their_layer(family: str, bert_dir: Path) -> None:
    bb, _ = build(family, bert_dir)
    apply_peft(bb, PeftConfig())
    index = bb.group_index_of()
    for n in adapter_parameter_names(bb):
        layer = n.split(".lora_")[0]
        assert index[n] == index[f"{layer}.base_layer.weight"], n


def test_lora_parameter_counts_by_hand(bert_dir: Path) -> None:
    bb, _ = build("bert", bert_dir)
    one = apply_peft(bb, PeftConfig(r=4, target_modules=["encoder.layer.0.attention.self.query"]))
    assert one["trainable"] == 4 * (16 + 16)  # A [4, 16] + B [16, 4]

    bb, _ = build("bert", bert_dir)
    names = default_target_modules(bb, "lora")
    assert len(names) == 12 and {n.rsplit(".", 1)[-1] for n in names} == {
        "query", "key", "value", "dense"
    }  # fmt: skip
    # per layer: q, k, v, attention-out 16->16; intermediate 16->32; output 32->16
    per_layer = 4 * 4 * (16 + 16) + 4 * (16 + 32) + 4 * (32 + 16)
    assert apply_peft(bb, PeftConfig(r=4))["trainable"] == 2 * per_layer

    cnn, _ = build("smallcnn", bert_dir)  # convs 1->8, 8->16, 16->32, all 3x3
    conv = apply_peft(cnn, PeftConfig(r=2, target_modules=["model.1.0"]))
    assert conv["trainable"] == 2 * 8 * 3 * 3 + 16 * 2  # A: conv 8->2 3x3; B: 1x1 conv 2->16


def test_ia3_on_bert_scales_ffn_inputs(bert_dir: Path) -> None:
    bb, x = build("bert", bert_dir)
    y0, _ = outputs(bb, x)
    info = apply_peft(bb, PeftConfig(kind="ia3"))
    # per layer: q, k, v, attention-out (16 each) + intermediate (32) + output.dense input (32)
    assert info["trainable"] == 2 * (4 * 16 + 32 + 32)
    ff = bb.get_submodule("model.encoder.layer.0.output.dense")
    assert ff.is_feedforward and ff.ia3_l["default"].shape == (1, 32)
    assert torch.equal(outputs(bb, x)[0], y0)  # l = 1 at init
    bb.train()
    bb(x).square().mean().backward()
    for n, p in bb.named_parameters():
        assert (p.grad is not None) == (n in adapter_parameter_names(bb)), n
    with torch.no_grad():
        for p in bb.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    y_ad, _ = outputs(bb, x)
    merge_peft(bb)
    torch.testing.assert_close(outputs(bb, x)[0], y_ad, atol=1e-5, rtol=1e-5)


def test_loha_on_cnn_trains_and_merges(bert_dir: Path) -> None:
    bb, x = build("smallcnn", bert_dir)
    y0, _ = outputs(bb, x)
    base0 = {n: p.detach().clone() for n, p in bb.named_parameters()}
    info = apply_peft(bb, PeftConfig(kind="loha", r=2, alpha=2))
    # each conv: w1a, w2a [c_out, 2] and w1b, w2b [2, c_in * 9]
    assert info["trainable"] == sum(2 * 2 * (o + i * 9) for i, o in [(1, 8), (8, 16), (16, 32)])
    assert torch.equal(outputs(bb, x)[0], y0)
    train_steps(bb, x)
    adapters = adapter_parameter_names(bb)
    assert all(
        torch.equal(p, base0[strip(n)]) for n, p in bb.named_parameters() if n not in adapters
    )
    y_ad, mids = outputs(bb, x)
    assert not torch.allclose(y_ad, y0, atol=1e-4) and len(mids) == 3
    merge_peft(bb)
    torch.testing.assert_close(outputs(bb, x)[0], y_ad, atol=1e-5, rtol=1e-5)


def test_train_norms_unfreezes_batchnorm_affine(bert_dir: Path) -> None:
    bb, _ = build("smallcnn", bert_dir)
    info = apply_peft(bb, PeftConfig(r=2, train_norms=True))
    lora = sum(2 * (i * 9 + o) for i, o in [(1, 8), (8, 16), (16, 32)])
    assert info["trainable"] == lora + 2 * (8 + 16 + 32)
    assert bb.get_submodule("model.0.1").weight.requires_grad
    assert not bb.get_submodule("model.0.0.base_layer").weight.requires_grad


def test_merged_backbone_reloads_from_file_with_plain_spec(bert_dir: Path, tmp_path: Path) -> None:
    bb, x = build("smallcnn", bert_dir)
    apply_peft(bb, PeftConfig(r=2))
    train_steps(bb, x)
    merge_peft(bb)
    y, _ = outputs(bb, x)
    path = save_backbone(bb, tmp_path / "merged.safetensors")
    again = create_backbone(f"file:{path}")
    torch.testing.assert_close(outputs(again, x)[0], y, atol=0, rtol=0)


def test_bad_target_modules_name_close_matches(bert_dir: Path) -> None:
    bb, _ = build("bert", bert_dir)
    with pytest.raises(ConfigError) as err:
        apply_peft(bb, PeftConfig(target_modules=["qurey"]))
    assert "'qurey'" in err.value.what and "query" in (err.value.fix or "")
    with pytest.raises(ConfigError) as err:
        apply_peft(bb, PeftConfig(target_modules=["attention"]))  # a BertAttention container
    assert "BertAttention" in err.value.what and "query" in (err.value.fix or "")
    assert not has_adapters(bb)
    apply_peft(bb, PeftConfig(target_modules=["value"]))
    with pytest.raises(ConfigError, match="already holds"):
        apply_peft(bb, PeftConfig())


def test_default_targets_skip_layers_adapters_cannot_match() -> None:
    from timm.layers import Conv2dSame

    net = nn.Sequential(
        Conv2dSame(3, 4, 3, stride=2),  # pads in forward: a stock-conv adapter would not fit
        nn.Conv2d(4, 4, 3, groups=4),  # depthwise: LoRA cannot merge into it
        nn.Conv2d(4, 8, 1),
        nn.Linear(8, 8),
    )
    assert default_target_modules(net, "lora") == ["2", "3"]
    assert default_target_modules(net, "loha") == ["1", "2", "3"]


class TinyAttention(Backbone):
    """One MultiheadAttention + Linear on ``[B, L, 8]`` tokens; static groups (no fix-up)."""

    def __init__(self, static_groups: bool = False) -> None:
        super().__init__()
        self.spec, self.modality, self.num_features = "test:attn", "vector", 8
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 8)
        names = [n for n, _ in self.named_parameters()]
        self._static = [tuple(n for n in names if n.startswith(b)) for b in ("attn", "fc")]
        self.static_groups = static_groups

    def forward(self, x: Any) -> torch.Tensor:
        return self.fc(self.attn(x, x, x, need_weights=False)[0]).mean(dim=1)

    def layer_groups(self) -> list[LayerGroup]:
        names = [n for n, _ in self.named_parameters()]
        if self.static_groups:
            return [LayerGroup(b, g, 8) for b, g in zip(("attn", "fc"), self._static, strict=True)]
        return [
            LayerGroup(b, tuple(n for n in names if n.startswith(b)), 8) for b in ("attn", "fc")
        ]

    def forward_intermediates(self, x: Any, indices: Sequence[int]) -> list[torch.Tensor]:
        return [self(x) for _ in indices]

    def prepare(self, raw: Any) -> torch.Tensor:
        return torch.as_tensor(raw, dtype=torch.float32)


def test_lora_on_multihead_attention_merges_back_to_torch_layout() -> None:
    torch.manual_seed(0)
    bb, x = TinyAttention(), torch.randn(2, 5, 8)
    keys0 = list(bb.state_dict())
    info = apply_peft(bb, PeftConfig(r=2))
    # in_proj: A [2, 8] + B [24, 2]; out_proj: A [2, 8] + B [8, 2]; fc: A [2, 8] + B [8, 2]
    assert info["trainable"] == (16 + 48) + (16 + 16) + (16 + 16)
    assert_groups_cover(bb)  # this backbone derives its groups from named_parameters()
    train_steps(bb, x)
    y_ad, _ = outputs(bb, x)
    merge_peft(bb)
    torch.testing.assert_close(outputs(bb, x)[0], y_ad, atol=1e-5, rtol=1e-5)
    assert list(bb.state_dict()) == keys0


def test_backbone_with_static_groups_is_rolled_back() -> None:
    bb = TinyAttention(static_groups=True)
    bb.attn.in_proj_bias.requires_grad_(False)
    keys0 = list(bb.state_dict())
    with pytest.raises(BackboneError, match="does not follow renamed parameters"):
        apply_peft(bb, PeftConfig(target_modules=["fc"]))
    assert not has_adapters(bb) and type(bb.fc) is nn.Linear and list(bb.state_dict()) == keys0
    frozen = [n for n, p in bb.named_parameters() if not p.requires_grad]
    assert frozen == ["attn.in_proj_bias"]  # flags restored

    vec = TinyVectorBackbone()  # Linear + BatchNorm1d blocks, groups from named_parameters()
    info = apply_peft(vec, PeftConfig(r=2))
    assert info["trainable"] == 2 * (6 + 8) + 2 * (8 + 8)
    assert_groups_cover(vec)


@pytest.mark.parametrize(
    "bad",
    [{"r": 0}, {"kind": "dora"}, {"r": "8"}, {"alpha": 0}, {"dropout": 1.0}, {"rank": 4}],
)
def test_config_rejects_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        PeftConfig(**bad)
