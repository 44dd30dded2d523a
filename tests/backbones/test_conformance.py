"""One conformance suite over every backbone family (tiny configs, random init, CPU).

For each family: output shape and width, every parameter in exactly one layer group,
gradients reach every parameter, ``forward_intermediates`` equals pooled outputs of
independently hooked modules (the last equals ``forward``), and it runs ONE forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.backbones import Backbone, create_backbone, save_backbone

RNG = np.random.default_rng(0)


@dataclass
class Case:
    spec: str
    kw: dict[str, Any]
    raw: Callable[[], Any]
    taps: list[str]  # modules whose pooled OUTPUT is the output of groups 0 .. n-2
    extra: dict[str, Any] = field(default_factory=dict)


def _photos() -> list[Image.Image]:
    return [
        Image.fromarray(RNG.integers(0, 256, (40, 52, 3), dtype=np.uint8)),
        Image.fromarray(RNG.integers(0, 256, (33, 33), dtype=np.uint8)),
    ]


CASES = {
    "timm-resnet10t": Case(
        "timm:resnet10t",
        {"input_size": 32},
        lambda: RNG.integers(0, 256, (2, 40, 48, 3), dtype=np.uint8),
        ["model.maxpool", "model.layer1", "model.layer2", "model.layer3"],
    ),
    "torchvision-resnet18": Case(
        "torchvision:resnet18",
        {"input_size": 32},
        _photos,
        ["model.maxpool", "model.layer1", "model.layer2", "model.layer3"],
    ),
    "torchvision-mobilenet_v3_small": Case(
        "torchvision:mobilenet_v3_small",
        {"input_size": 32},
        lambda: RNG.random((2, 36, 36)),
        [f"model.features.{i}" for i in range(13)],
    ),
    "hf-tiny-bert": Case(
        "hf:{bert}",
        {},
        lambda: ["a man is playing guitar", "the cat sat", "zebra xylophone"],
        ["model.embeddings", "model.encoder.layer.0"],
    ),
    "tk-smallcnn": Case(
        "tk:smallcnn",
        {"width": 4, "depth": 3},
        lambda: RNG.integers(0, 256, (3, 8, 8), dtype=np.uint8),
        ["model.0", "model.1"],
    ),
    "tk-mlp": Case(
        "tk:mlp",
        {"in_features": 6, "hidden": [8, 5]},
        lambda: RNG.normal(size=(3, 6)).astype(np.float32),
        ["model.1"],
    ),
    "file-smallcnn": Case(
        "file:{ckpt}",
        {},
        lambda: RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        ["model.0"],
        extra={"saved": ("tk:smallcnn", {"width": 4, "depth": 2})},
    ),
}

_BUILT: dict[str, Backbone] = {}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(
    request: pytest.FixtureRequest, tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Case, Backbone]:
    c = CASES[request.param]
    if request.param not in _BUILT:
        torch.manual_seed(0)
        spec = c.spec.replace("{bert}", str(tiny_bert_dir))
        if "saved" in c.extra:
            src_spec, src_kw = c.extra["saved"]
            path = tmp_path_factory.mktemp("ckpt") / "bb.safetensors"
            save_backbone(create_backbone(src_spec, **src_kw), path)
            spec = f"file:{path}"
        _BUILT[request.param] = create_backbone(spec, pretrained=False, **c.kw)
    bb = _BUILT[request.param]
    bb.zero_grad(set_to_none=True)
    return c, bb


def _pool(t: Any, x: Any) -> torch.Tensor:
    """Independent reference pooling: spatial mean, attention-masked token mean."""
    t = t[0] if isinstance(t, tuple) else t
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        m = x["attention_mask"].to(t.dtype)[..., None]
        return (t * m).sum(1) / m.sum(1)
    return t


def test_output_shape_and_width(case: tuple[Case, Backbone]) -> None:
    c, bb = case
    raw = c.raw()
    bb.eval()
    out = bb(bb.prepare(raw))
    assert out.shape == (len(raw), bb.num_features)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert bb.layer_groups()[-1].dim == bb.num_features
    assert bb.modality in ("image", "text", "vector")


def test_every_parameter_in_exactly_one_group(case: tuple[Case, Backbone]) -> None:
    _, bb = case
    groups = bb.layer_groups()
    names = [p for g in groups for p in g.param_names]
    assert len(names) == len(set(names))
    assert set(names) == {n for n, _ in bb.named_parameters()}
    assert all(g.param_names for g in groups)
    assert len({g.name for g in groups}) == len(groups)
    assert len(groups) == len(c_taps(case)) + 1


def c_taps(case: tuple[Case, Backbone]) -> list[str]:
    return case[0].taps


def test_gradients_reach_every_parameter(case: tuple[Case, Backbone]) -> None:
    c, bb = case
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # break zero-init symmetries (timm zero-inits the last BN gamma)
        for p in bb.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    bb.train()
    x = bb.prepare(c.raw())
    out = bb(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    ((out * weights).sum() + out.pow(2).mean()).backward()
    for name, p in bb.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient at {name}"


def _hooked(bb: Backbone, taps: list[str], x: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
    modules = dict(bb.named_modules())
    got: dict[str, Any] = {}
    handles = [
        modules[t].register_forward_hook(lambda _m, _a, o, t=t: got.setdefault(t, o)) for t in taps
    ]
    try:
        out = bb(x)
    finally:
        for h in handles:
            h.remove()
    return [_pool(got[t], x) for t in taps], out


def test_intermediates_equal_hooked_outputs(case: tuple[Case, Backbone]) -> None:
    c, bb = case
    bb.eval()
    x = bb.prepare(c.raw())
    n = len(bb.layer_groups())
    with torch.no_grad():
        ref, out = _hooked(bb, c.taps, x)
        ours = bb.forward_intermediates(x, list(range(n)))
        neg = bb.forward_intermediates(x, [-1, 0])
    assert len(ours) == n
    for k, (a, b) in enumerate(zip(ours[:-1], ref, strict=True)):
        assert a.shape == b.shape == (out.shape[0], bb.layer_groups()[k].dim)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[-1], out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(neg[0], out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(neg[1], ours[0])


def _first_module(bb: Backbone) -> torch.nn.Module:
    first = bb.layer_groups()[0].param_names[0]
    return bb.get_submodule(first.rpartition(".")[0])


@pytest.mark.parametrize("which", ["all", "first"])
def test_intermediates_run_one_forward_pass(case: tuple[Case, Backbone], which: str) -> None:
    c, bb = case
    bb.eval()
    x = bb.prepare(c.raw())
    n = len(bb.layer_groups())
    calls = []
    handle = _first_module(bb).register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            outs = bb.forward_intermediates(x, list(range(n)) if which == "all" else [0])
    finally:
        handle.remove()
    assert len(calls) == 1
    assert outs[0].shape[0] == (x["input_ids"] if isinstance(x, Mapping) else x).shape[0]


def test_gradients_flow_through_intermediates(case: tuple[Case, Backbone]) -> None:
    c, bb = case
    bb.train()
    outs = bb.forward_intermediates(bb.prepare(c.raw()), [0, -1])
    sum(o.pow(2).mean() for o in outs).backward()
    first = next(iter(bb.layer_groups()[0].param_names))
    assert bb.get_parameter(first).grad is not None
