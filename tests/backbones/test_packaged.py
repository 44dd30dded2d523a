"""The packaged pretrained weights, proven on real inputs (integration: real weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from transferkit.backbones import create_backbone, list_packaged, save_backbone
from transferkit.backbones.base import Backbone

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def effnet() -> Backbone:
    return create_backbone("packaged:efficientnet-lite0").eval()


@pytest.fixture(scope="module")
def minilm() -> Backbone:
    return create_backbone("packaged:minilm-l6").eval()


def _catalog(name: str) -> dict:
    return next(r for r in list_packaged() if r["name"] == name)


def test_efficientnet_lite0_classifies_real_photos(effnet: Backbone) -> None:
    x = effnet.prepare([data.chelsea(), data.coffee()])  # uint8 HxWx3 photos of any size
    assert x.shape == (2, 3, 224, 224)
    with torch.no_grad():
        top1 = effnet.imagenet_logits(x).argmax(dim=1).tolist()
    assert 281 <= top1[0] <= 285  # a cat: tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert top1[1] in (967, 968)  # espresso, cup
    row = _catalog("packaged:efficientnet-lite0")
    assert row["params"] == sum(p.numel() for p in effnet.parameters())
    assert row["num_features"] == effnet.num_features == 1280


def test_efficientnet_random_init_has_the_same_architecture(
    effnet: Backbone, tmp_path: Path
) -> None:
    rand = create_backbone("packaged:efficientnet-lite0", pretrained=False)
    assert {k: v.shape for k, v in rand.state_dict().items()} == {
        k: v.shape for k, v in effnet.state_dict().items()
    }
    assert not torch.equal(rand.imagenet_weight, effnet.imagenet_weight)
    path = save_backbone(effnet, tmp_path / "e.safetensors")  # ImageNet head travels along
    back = create_backbone(f"file:{path}")
    assert torch.equal(back.imagenet_weight, effnet.imagenet_weight)


def test_minilm_ranks_paraphrases_above_unrelated_text(minilm: Backbone) -> None:
    s = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
    ]
    with torch.no_grad():
        e = F.normalize(minilm(minilm.prepare(s)), dim=1)
    cos = e @ e.T
    assert cos[0, 1] > cos[0, 2] + 0.3 and cos[0, 1] > cos[1, 2] + 0.3
    row = _catalog("packaged:minilm-l6")
    assert row["params"] == sum(p.numel() for p in minilm.parameters())
    assert row["num_features"] == minilm.num_features == 384


def test_minilm_matches_sentence_transformers(minilm: Backbone) -> None:
    st = pytest.importorskip("sentence_transformers")
    from transferkit.backbones.packaged import minilm_dir

    s = ["A man is playing a guitar.", "short", "a much longer sentence " * 5]
    ref = st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(s, convert_to_tensor=True)
    unit = create_backbone("packaged:minilm-l6", normalize=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(unit(unit.prepare(s)), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_efficientnet_lites_classify_real_photos(variant: str) -> None:
    net = create_backbone(f"packaged:efficientnet-{variant}").eval()
    x = net.prepare([data.chelsea(), data.coffee()])
    with torch.no_grad():
        top1 = net.imagenet_logits(x).argmax(dim=1).tolist()
    assert 281 <= top1[0] <= 285 and top1[1] in (967, 968)
    row = _catalog(f"packaged:efficientnet-{variant}")
    assert row["params"] == sum(p.numel() for p in net.parameters())
    assert row["num_features"] == net.num_features == 1280
