"""Decoder (GPT-2 style) ``hf:`` backbones: last-token pooling, layer groups, intermediates,
fine-tuning (with text augmentation), LoRA, probing and ``file:`` reload, on a tiny GPT-2
and byte-level BPE tokenizer built in code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.backbones import create_backbone, save_backbone
from transferkit.backbones.hf import HFBackbone, last_token_index
from transferkit.errors import BackboneError, ConfigError
from transferkit.methods.finetune import Finetune, FinetuneParams
from transferkit.methods.heads import make_head

SENTENCES = [
    "a man is playing guitar",
    "someone plays loud music",
    "the cat sat on the mat",
    "the dog runs in the park",
    "stock market fell sharply today",
    "a man plays the guitar in the park",
]
TEXTS = ["a cat", "the dog runs in the park", "stock market fell"]  # three lengths


def write_tiny_gpt2(path: Path, layers: int = 2, width: int = 32) -> Path:
    """A random ``layers``-deep GPT-2 (n_embd ``width``) + a byte-level BPE tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    eos = "<|endoftext|>"
    bpe.train_from_iterator(
        SENTENCES, vocab_size=300, min_frequency=1, special_tokens=[eos], show_progress=False
    )
    tok = GPT2TokenizerFast(tokenizer_object=bpe, eos_token=eos, bos_token=eos, unk_token=eos)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=32,
        n_embd=width,
        n_layer=layers,
        n_head=2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    GPT2Model(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def reference(gpt2_dir: Path) -> torch.nn.Module:
    """The untouched transformers GPT2Model (Conv1D projections)."""
    from transformers import GPT2Model

    return GPT2Model.from_pretrained(gpt2_dir).eval()


def _lengths(bb: HFBackbone, texts: list[str]) -> list[int]:
    return [len(bb.preprocess.tokenizer(t)["input_ids"]) for t in texts]


def test_decoder_builds_with_eos_right_padding_and_linear_projections(gpt2_dir: Path) -> None:
    bb = create_backbone(f"hf:{gpt2_dir}")
    assert isinstance(bb, HFBackbone) and bb.is_decoder and bb.pooling == "last"
    tok = bb.preprocess.tokenizer
    assert tok.pad_token == tok.eos_token and tok.padding_side == "right"
    assert isinstance(bb.model.h[0].attn.c_attn, torch.nn.Linear)
    assert bb.num_features == 32 and bb.modality == "text"
    x = bb.prepare(TEXTS)
    assert set(x) == {"input_ids", "attention_mask"}
    assert x["attention_mask"].sum(1).tolist() == _lengths(bb, TEXTS)
    assert len(set(_lengths(bb, TEXTS))) == 3  # two padded rows, two padding lengths


def test_pooled_feature_is_the_hidden_state_of_the_last_non_padding_token(
    gpt2_dir: Path, reference: torch.nn.Module
) -> None:
    bb = create_backbone(f"hf:{gpt2_dir}").eval()
    x = bb.prepare(TEXTS)
    with torch.no_grad():
        pooled = bb(x)
        h = reference(**x).last_hidden_state
        alone = [bb(bb.prepare([t]))[0] for t in TEXTS]
    lengths = _lengths(bb, TEXTS)
    want = torch.stack([h[b, n - 1] for b, n in enumerate(lengths)])
    assert torch.allclose(pooled, want, atol=1e-5)
    assert not torch.allclose(pooled[0], h[0, -1], atol=1e-3)  # not the padded end
    for b in range(len(TEXTS)):  # right padding never changes a row's feature
        assert torch.allclose(pooled[b], alone[b], atol=1e-5)


def test_last_token_index_handles_right_left_and_empty_rows() -> None:
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [1, 3, 2, 0]


def test_mean_pooling_option_and_pooling_errors(gpt2_dir: Path, reference: torch.nn.Module) -> None:
    bb = create_backbone(f"hf:{gpt2_dir}", pooling="mean").eval()
    x = bb.prepare(TEXTS)
    with torch.no_grad():
        h = reference(**x).last_hidden_state
        pooled = bb(x)
    for b, n in enumerate(_lengths(bb, TEXTS)):
        assert torch.allclose(pooled[b], h[b, :n].mean(0), atol=1e-5)
    with pytest.raises(BackboneError, match="sees only itself") as err:
        create_backbone(f"hf:{gpt2_dir}", pooling="cls")
    assert "last" in (err.value.fix or "")
    with pytest.raises(BackboneError, match="unknown pooling"):
        create_backbone(f"hf:{gpt2_dir}", pooling="max")


def test_conv1d_swap_keeps_the_outputs(gpt2_dir: Path) -> None:
    linear = create_backbone(f"hf:{gpt2_dir}").eval()
    conv = create_backbone(f"hf:{gpt2_dir}", conv1d_as_linear=False).eval()
    assert type(conv.model.h[0].attn.c_attn).__name__ == "Conv1D"
    x = linear.prepare(TEXTS)
    with torch.no_grad():
        assert torch.allclose(linear(x), conv(x), atol=1e-6)


def test_layer_groups_cover_every_parameter_once(gpt2_dir: Path) -> None:
    bb = create_backbone(f"hf:{gpt2_dir}")
    groups = bb.layer_groups()
    assert [g.name for g in groups] == ["embeddings", "h.0", "h.1", "ln_f"]
    assert set(groups[0].param_names) == {"model.wte.weight", "model.wpe.weight"}
    assert set(groups[-1].param_names) == {"model.ln_f.weight", "model.ln_f.bias"}
    assert all(p.startswith("model.h.1.") for p in groups[2].param_names)
    listed = [p for g in groups for p in g.param_names]
    assert sorted(listed) == sorted(n for n, _ in bb.named_parameters())
    assert [g.dim for g in groups] == [32] * 4


def test_intermediates_pool_each_group_at_the_last_token(
    gpt2_dir: Path, reference: torch.nn.Module
) -> None:
    bb = create_backbone(f"hf:{gpt2_dir}").eval()
    x = bb.prepare(TEXTS)
    idx = torch.tensor(_lengths(bb, TEXTS)) - 1
    rows = torch.arange(len(TEXTS))
    with torch.no_grad():
        outs = bb.forward_intermediates(x, [0, 1, 2, 3])
        states = reference(**x, output_hidden_states=True).hidden_states
        assert torch.allclose(outs[0], states[0][rows, idx], atol=1e-5)  # wte + wpe
        assert torch.allclose(outs[1], states[1][rows, idx], atol=1e-5)  # after h.0
        assert torch.allclose(bb.model.ln_f(outs[2]), outs[3], atol=1e-5)  # h.1 raw output
        assert not torch.allclose(outs[2], outs[3], atol=1e-3)
        assert torch.equal(outs[3], bb(x))
        assert torch.allclose(bb.forward_intermediates(x, [2])[0], outs[2], atol=1e-6)
        assert torch.allclose(bb.forward_intermediates(x, [-1, 0])[1], outs[0], atol=1e-6)


def _finetune(gpt2_dir: Path, **params: object) -> Finetune:
    torch.manual_seed(0)
    bb = create_backbone(f"hf:{gpt2_dir}")
    head = make_head(bb.num_features, 2)
    return Finetune(bb, head, "classification", FinetuneParams.model_validate(params))


def test_finetune_step_with_text_augmentation_updates_every_group(gpt2_dir: Path) -> None:
    aug = {"text": {"token_dropout": 0.1, "span_delete": 0.2, "swap_prob": 0.3}}
    m = _finetune(gpt2_dir, augment=aug, layer_decay=0.5, backbone_lr_mult=1.0).train()
    batch = {"x": m.backbone.prepare(TEXTS), "y": torch.tensor([0, 1, 0])}
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.SGD(m.param_groups(0.1), lr=0.1)
    loss = m.training_step(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    assert no_grad == []
    opt.step()
    for g in m.backbone.layer_groups():
        assert any(
            not torch.equal(before[f"backbone.{p}"], m.get_parameter(f"backbone.{p}"))
            for p in g.param_names
        ), g.name
    names = [g["name"] for g in m.param_groups(1.0)]
    assert names[:4] == [f"backbone.{g}" for g in ("embeddings", "h.0", "h.1", "ln_f")]
    with pytest.raises(ConfigError, match="mask token"):
        _finetune(gpt2_dir, augment={"text": {"mask_prob": 0.1}})


def test_lora_adapts_the_gpt2_projections(gpt2_dir: Path) -> None:
    pytest.importorskip("peft")
    from transferkit.finetune.peft import merge_peft

    base = _finetune(gpt2_dir).eval()
    x = base.backbone.prepare(TEXTS)
    with torch.no_grad():
        want = base.backbone(x)
    m = _finetune(gpt2_dir, peft={"kind": "lora", "r": 2, "alpha": 4.0}).eval()
    trainable = {n.split(".lora_")[0] for n, p in m.backbone.named_parameters() if p.requires_grad}
    for i in range(2):
        for mod in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            assert f"model.h.{i}.{mod}" in trainable
    with torch.no_grad():
        assert torch.allclose(m.backbone(x), want, atol=1e-6)  # B = 0 at step 0
    listed = sorted(p for g in m.backbone.layer_groups() for p in g.param_names)
    assert listed == sorted(n for n, _ in m.backbone.named_parameters())
    merge_peft(m.backbone)
    assert isinstance(m.backbone.model.h[0].attn.c_attn, torch.nn.Linear)


def test_probe_runs_on_every_decoder_layer_group(gpt2_dir: Path) -> None:
    from transferkit.data.types import Dataset
    from transferkit.diagnostics.probing import layer_probe

    bb = create_backbone(f"hf:{gpt2_dir}")
    texts = SENTENCES * 4
    y = np.array([0, 0, 1, 1, 0, 0] * 4)
    train = Dataset("toy", "text", texts[:12], y[:12], classes=["a", "b"])
    val = Dataset("toy", "text", texts[12:], y[12:], classes=["a", "b"])
    res = layer_probe(bb, train, val, head="logreg", batch_size=8)
    assert res.groups == ["embeddings", "h.0", "h.1", "ln_f"]
    assert res.dims == [32] * 4 and len(res.val_metric) == 4
    assert all(0.0 <= v <= 1.0 for v in res.val_metric)


def test_file_checkpoint_and_student_reload(gpt2_dir: Path, tmp_path: Path) -> None:
    from transferkit.distill.student import student_from_teacher

    bb = create_backbone(f"hf:{gpt2_dir}").eval()
    x = bb.prepare(TEXTS)
    path = save_backbone(bb, tmp_path / "gpt2.safetensors")
    back = create_backbone(f"file:{path}").eval()
    with torch.no_grad():
        assert torch.equal(back(x), bb(x))
    student = student_from_teacher(bb, keep_every=2)
    assert [g.name for g in student.layer_groups()] == ["embeddings", "h.0", "ln_f"]
    assert torch.equal(student.model.h[0].attn.c_attn.weight, bb.model.h[1].attn.c_attn.weight)
