"""SetFit: pair generation, pair losses, body training, the logreg head, runs end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression

from tests.backbones.conftest import write_tiny_bert
from tests.conftest import TinyVectorBackbone
from transferkit.backbones import create_backbone
from transferkit.data.loaders import ExampleDataset, collate_with
from transferkit.data.types import Dataset
from transferkit.diagnostics.metrics import compute_metrics
from transferkit.engine import Callback, CheckpointStore, TrainConfig, Trainer
from transferkit.engine.evaluate import evaluate_predictions
from transferkit.errors import ConfigError, DataError
from transferkit.experiment.config import load_config
from transferkit.methods.base import METHODS
from transferkit.methods.heads import make_head
from transferkit.methods.pairs import (
    PairDataset,
    contrastive_loss,
    cosent_loss,
    cosine_similarity_loss,
    draw_pairs,
    generate_pairs,
    pair_loss,
    training_rows,
)
from transferkit.methods.setfit import (
    SetFit,
    SetFitParams,
    embed_rows,
    fit_head_on_embeddings,
)

POS = ["good", "great", "fun", "superb"]
NEG = ["bad", "awful", "boring", "dull"]
NEUTRAL = ["movie", "plot", "actor", "film", "the", "a"]


# --------------------------------------------------------------------- fixtures
def sentences(n: int, seed: int) -> Dataset:
    """``n`` 5-word sentences: 2 sentiment words of the label's list among 3 neutral ones."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        words = [*rng.choice(POS if i % 2 else NEG, 2), *rng.choice(NEUTRAL, 3)]
        rng.shuffle(words)
        xs.append(" ".join(words))
        ys.append(i % 2)
    return Dataset("toy", "text", xs, np.array(ys, np.int64), classes=["neg", "pos"])


def blobs(n: int, seed: int, classes: int = 3) -> Dataset:
    """Gaussian blobs ``[n, 6]`` around well separated class centres."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0.0, 2.0, size=(classes, 6))
    y = np.arange(n) % classes
    x = (centres[y] + rng.normal(0.0, 0.7, size=(n, 6))).astype(np.float32)
    return Dataset(
        "blobs", "tabular", x, y.astype(np.int64), classes=[str(c) for c in range(classes)]
    )


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("setfit-bert"), words=POS + NEG + NEUTRAL)


def setfit(backbone: Any, classes: int = 2, **params: Any) -> SetFit:
    head = make_head(backbone.num_features, classes)
    return SetFit(backbone, head, "classification", SetFitParams(**params))


def vector_setfit(seed: int = 0, **params: Any) -> SetFit:
    torch.manual_seed(seed)
    return setfit(TinyVectorBackbone(6, 8), classes=3, **params)


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        lr=0.01, epochs=2, batch_size=16, mixed_precision="no", early_stopping=False, seed=3
    )
    return TrainConfig(**{**base, **kw})


def val_fn_for(data: Dataset, prepare: Any) -> Any:
    def val_fn(method: Any) -> dict[str, float]:
        out, y = evaluate_predictions(method, ExampleDataset(data), collate_with(prepare), 64)
        return compute_metrics(out, y, "classification")

    return val_fn


# --------------------------------------------------------------------- pair generation
def test_pairs_of_a_hand_made_case() -> None:
    p = generate_pairs([0, 0, 1, 1], 1, rng=0)
    assert p.a.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert p.b[0::2].tolist() == [1, 0, 3, 2]  # each anchor's only same-label partner
    assert set(p.b[1::2][:2]) <= {2, 3} and set(p.b[1::2][2:]) <= {0, 1}
    assert p.target.tolist() == [1.0, 0.0] * 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_are_balanced_correct_and_skip_unlabelled_rows(seed: int) -> None:
    y = np.array([0, 0, 0, 1, 1, 2, -1, 2, 1, 0])  # row 6 is unlabelled
    p = generate_pairs(y, 7, rng=seed)
    assert len(p) == 2 * 7 * 9
    assert int(p.target.sum()) == len(p) // 2  # as many positives as negatives
    same = y[p.a] == y[p.b]
    assert np.array_equal(same, p.target == 1.0)
    assert np.all(p.a != p.b)
    assert 6 not in set(p.a) | set(p.b)
    assert np.array_equal(np.bincount(p.a, minlength=10)[[0, 1, 2, 3, 4, 5, 7, 8, 9]], [14] * 9)


def test_a_lone_row_of_its_class_is_only_a_negative_partner() -> None:
    p = generate_pairs([0, 0, 1], 5, rng=0)
    assert len(p) == 2 * 5 * 2 and set(p.a) == {0, 1}
    assert np.all(p.b[p.target == 0.0] == 2)


def test_pairs_are_deterministic_under_the_seed() -> None:
    y = np.arange(30) % 3
    a, b = generate_pairs(y, 4, rng=5), generate_pairs(y, 4, rng=5)
    assert np.array_equal(a.a, b.a) and np.array_equal(a.b, b.b)
    c = generate_pairs(y, 4, rng=6)
    assert not np.array_equal(a.b, c.b)


def test_partners_are_drawn_uniformly() -> None:
    p = generate_pairs([0, 0, 0, 1, 1], 4000, rng=0)
    anchor0 = p.a == 0
    pos = p.b[anchor0 & (p.target == 1.0)]
    neg = p.b[anchor0 & (p.target == 0.0)]
    assert set(pos) == {1, 2} and abs(np.mean(pos == 1) - 0.5) < 0.04
    assert set(neg) == {3, 4} and abs(np.mean(neg == 3) - 0.5) < 0.04


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        ([1, 1, 1], DataError, "two labelled classes"),
        ([0, 1, 2], DataError, "two labelled rows"),
        ([0, -1, -1, 1], DataError, "two labelled"),
        ([0.5, 1.5], DataError, "integer class labels"),
        ([[0, 1], [1, 0]], DataError, "one label per row"),
    ],
)
def test_pairs_reject_labels_that_cannot_pair(labels: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        generate_pairs(labels, 2, rng=0)
    assert info.value.where and info.value.fix


def test_pair_iterations_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="pair_iterations"):
        draw_pairs([0, 0, 1], 0, rng=0)


def test_pair_dataset_redraws_per_epoch_and_collates() -> None:
    data = sentences(8, seed=0)
    ds = PairDataset(data, pair_iterations=3, seed=11)
    assert len(ds) == 2 * 3 * 8
    first = ds.pairs
    item = ds[5]
    a, b = int(first.a[5]), int(first.b[5])
    assert item["x_a"] == data.x[a] and item["x_b"] == data.x[b]
    assert item["target"] == float(data.y[a] == data.y[b])
    ds.set_epoch(1)
    assert len(ds) == 2 * 3 * 8 and not np.array_equal(ds.pairs.b, first.b)
    again = PairDataset(data, pair_iterations=3, seed=11)
    again.set_epoch(1)
    assert np.array_equal(again.pairs.b, ds.pairs.b)
    batch = collate_with(lambda raw: list(raw))([ds[i] for i in range(4)])
    assert batch["target"].dtype == torch.float32 and batch["y_a"].dtype == torch.int64
    with pytest.raises(DataError, match="unlabelled"):
        PairDataset(data.unlabelled(), 3)


def test_training_rows_are_the_labelled_rows_behind_any_training_dataset() -> None:
    data = sentences(6, seed=0)
    data.y[2] = -1  # an unlabelled row
    for ds in (
        ExampleDataset(data),
        PairDataset(data, 2),
        [(x, y) for x, y in zip(data.x, data.y, strict=True)],
    ):
        x, y = training_rows(ds)
        assert x == [data.x[i] for i in (0, 1, 3, 4, 5)] and y.tolist() == [0, 1, 1, 0, 1]
    with pytest.raises(DataError, match="labelled rows"):
        training_rows([data.x[0], data.x[1]])
    with pytest.raises(DataError, match="labelled"):
        training_rows(data.unlabelled())


# --------------------------------------------------------------------- losses
def test_cosine_loss_matches_a_hand_computed_case() -> None:
    e_a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    e_b = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # cosines 1/sqrt(2) and 0
    loss = pair_loss("cosine", e_a, e_b, torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(((1 / math.sqrt(2) - 1) ** 2 + 0.0) / 2, abs=1e-6)
    perfect = cosine_similarity_loss(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert perfect.item() == 0.0
    scaled = pair_loss("cosine", 3 * e_a, 0.5 * e_b, torch.tensor([1.0, 0.0]))
    assert scaled.item() == pytest.approx(loss.item(), abs=1e-6)  # scale invariant


def test_cosent_loss_matches_hand_computed_values() -> None:
    t = torch.tensor([1.0, 0.0], dtype=torch.float64)
    right = cosent_loss(torch.tensor([0.8, 0.3], dtype=torch.float64), t, scale=20.0)
    wrong = cosent_loss(torch.tensor([0.3, 0.8], dtype=torch.float64), t, scale=20.0)
    assert right.item() == pytest.approx(math.log1p(math.exp(-10.0)), rel=1e-5)
    assert wrong.item() == pytest.approx(math.log1p(math.exp(10.0)), rel=1e-5)
    shifted = cosent_loss(torch.tensor([0.6, 0.1], dtype=torch.float64), t, scale=20.0)
    assert shifted.item() == pytest.approx(right.item(), rel=1e-5)  # only differences count
    assert cosent_loss(torch.tensor([0.2, 0.9]), torch.tensor([1.0, 1.0])).item() == 0.0


def test_contrastive_loss_matches_a_hand_computed_case() -> None:
    # d = 1 - cos = [0.5, 0.1]; positive: 0.5^2; negative: (0.5 - 0.1)^2
    loss = contrastive_loss(torch.tensor([0.5, 0.9]), torch.tensor([1.0, 0.0]), margin=0.5)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.16) / 2, rel=1e-6)
    far = contrastive_loss(torch.tensor([1.0, 0.2]), torch.tensor([1.0, 0.0]), margin=0.5)
    assert far.item() == 0.0  # identical positives, negatives beyond the margin


# --------------------------------------------------------------------- training steps
def test_in_batch_step_pairs_rows_of_the_batch() -> None:
    m = vector_setfit(pair_iterations=4)
    data = blobs(12, seed=0)
    batch = collate_with(m.backbone.prepare)([(data.x[i], data.y[i]) for i in range(12)])
    torch.manual_seed(0)
    out = m.training_step(batch)
    assert out["pairs"] == 2 * 4 * 12 and out["loss"].requires_grad
    torch.manual_seed(0)
    assert m.training_step(batch)["loss"].item() == out["loss"].item()  # torch-RNG seeded
    out["loss"].backward()
    for name, p in m.backbone.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not any(p.requires_grad for p in m.head.parameters())  # logreg head: not trained
    one = collate_with(m.backbone.prepare)([(data.x[i], 0) for i in range(4)])
    lone = m.training_step(one)
    assert lone["pairs"] == 0 and lone["loss"].item() == 0.0 and lone["loss"].requires_grad


def test_a_few_steps_reduce_the_pair_loss() -> None:
    m = vector_setfit(pair_iterations=5)
    data = blobs(30, seed=1)
    pairs = generate_pairs(data.y, 5, rng=0)
    x = m.backbone.prepare(data.x)

    def held_loss() -> float:
        m.eval()
        with torch.no_grad():
            e = m.backbone(x)
            return pair_loss("cosine", e[pairs.a], e[pairs.b], torch.as_tensor(pairs.target)).item()

    before = held_loss()
    opt = torch.optim.Adam([g for grp in m.param_groups(0.02) for g in grp["params"]], lr=0.02)
    batch = {"x": x, "y": torch.as_tensor(data.y)}
    m.train()
    for _ in range(25):
        opt.zero_grad()
        m.training_step(batch)["loss"].backward()
        opt.step()
    assert held_loss() < 0.5 * before


def test_differentiable_head_trains_with_the_body() -> None:
    m = vector_setfit(head="differentiable", head_lr_mult=5.0, head_loss_weight=0.5)
    data = blobs(12, seed=0)
    batch = {"x": m.backbone.prepare(data.x), "y": torch.as_tensor(data.y)}
    out = m.training_step(batch)
    assert out["loss"].item() == pytest.approx(
        (out["pair_loss"] + 0.5 * out["head_loss"]).item(), rel=1e-6
    )
    out["loss"].backward()
    assert all(p.grad is not None for p in m.head.parameters())
    groups = {g["name"]: g["lr"] for g in m.param_groups(0.1)}
    assert groups == {"backbone": 0.1, "head": pytest.approx(0.5)}
    with pytest.raises(ConfigError, match="differentiable"):
        fit_head_on_embeddings(m, (data.x, data.y), (data.x, data.y))


def test_a_batch_without_labels_or_pairs_is_refused() -> None:
    m = vector_setfit()
    with pytest.raises(DataError, match="pair_dataset"):
        m.training_step({"x": torch.zeros(4, 6)})


# --------------------------------------------------------------------- the logreg head
def test_fit_head_on_embeddings_matches_scikit_learn() -> None:
    m = vector_setfit(strengths=[0.01, 1.0])
    train, val = blobs(30, seed=2), blobs(30, seed=3)
    fitted = fit_head_on_embeddings(m, train, (val.x, val.y))
    assert m.head_fit_ is not None and m.head_fit_.C == fitted.selected in (0.01, 1.0)
    assert set(m.head_fit_.val_scores) == {0.01, 1.0}
    f = embed_rows(m.backbone, train.x)
    mu, sigma = f.mean(0), f.std(0) + 1e-6
    ref = LogisticRegression(C=fitted.selected, max_iter=1000).fit((f - mu) / sigma, train.y)
    f_val = embed_rows(m.backbone, val.x)
    with torch.no_grad():
        ours = m.head(torch.as_tensor(f_val)).argmax(1).numpy()
    assert np.array_equal(ours, ref.predict((f_val - mu) / sigma))


@pytest.mark.parametrize(("mode", "expected"), [("min", 0.01), ("max", 100.0)])
def test_head_C_is_chosen_by_the_trainers_validation_metric(
    tmp_path: Path, mode: str, expected: float
) -> None:
    m = vector_setfit(strengths=[1.0, 0.01, 100.0])
    data = blobs(24, seed=4)

    def wnorm(method: Any) -> dict[str, float]:  # grows with C: min -> smallest C
        return {"wnorm": float(method.head.weight.norm())}

    cfg = config(epochs=1, monitor="val_wnorm", mode=mode, save_checkpoints=False)
    Trainer(
        m,
        ExampleDataset(data),
        collate_with(m.backbone.prepare),
        cfg,
        tmp_path,
        val_fn=wnorm,
        quiet=True,
    ).fit()
    assert m.head_fit_ is not None
    assert expected == m.head_fit_.C and m.head_fit_.metric == "val_wnorm"
    norms = m.head_fit_.val_scores
    assert abs(norms[0.01]) < abs(norms[1.0]) < abs(norms[100.0])


def test_without_validation_the_head_uses_C_1(tmp_path: Path) -> None:
    m = vector_setfit(strengths=[0.01, 100.0])
    data = blobs(24, seed=4)
    Trainer(
        m,
        ExampleDataset(data),
        collate_with(m.backbone.prepare),
        config(save_checkpoints=False),
        tmp_path,
        quiet=True,
    ).fit()
    assert m.head_fit_ is not None and m.head_fit_.C == 1.0 and m.head_fit_.metric is None
    assert m.head.weight.abs().sum() > 0


def test_training_refuses_data_that_cannot_pair(tmp_path: Path) -> None:
    m = vector_setfit()
    one_class = blobs(9, seed=0)
    one_class.y[:] = 1
    trainer = Trainer(
        m,
        ExampleDataset(one_class),
        collate_with(m.backbone.prepare),
        config(save_checkpoints=False),
        tmp_path,
        quiet=True,
    )
    with pytest.raises(DataError, match="two labelled classes"):
        trainer.fit()
    trainer = Trainer(
        m,
        ExampleDataset(blobs(9, seed=0)),
        collate_with(m.backbone.prepare),
        config(batch_size=1, save_checkpoints=False),
        tmp_path,
        quiet=True,
    )
    with pytest.raises(ConfigError, match="batch_size"):
        trainer.fit()


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, trainer: Any, path: Any) -> None:
        if trainer.global_step == self.step:
            raise Crash


def test_resume_is_bit_exact_with_the_refitted_head(tmp_path: Path) -> None:
    data, val = blobs(40, seed=5), blobs(21, seed=6)

    def train(run_dir: Path, resume: bool = False, callbacks: tuple = ()) -> SetFit:
        m = vector_setfit(seed=0 if not resume else 9, pair_iterations=3)
        cfg = config(
            epochs=3,
            batch_size=8,
            checkpoint_every_steps=3,
            early_stopping=True,
            monitor="val_accuracy",
            mode="max",
            patience=5,
        )
        Trainer(
            m,
            ExampleDataset(data),
            collate_with(m.backbone.prepare),
            cfg,
            run_dir,
            val_fn=val_fn_for(val, m.backbone.prepare),
            callbacks=callbacks,
            quiet=True,
        ).fit(resume=resume)
        return m

    straight = train(tmp_path / "a")
    with pytest.raises(Crash):
        train(tmp_path / "b", callbacks=(CrashAt(6),))  # mid-epoch 2 (5 steps per epoch)
    assert CheckpointStore(tmp_path / "b" / "checkpoints").latest() is not None
    resumed = train(tmp_path / "b", resume=True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert straight.head.weight.abs().sum() > 0


# --------------------------------------------------------------------- end to end
@pytest.mark.parametrize("feed", ["pairs", "batches"])
def test_tiny_bert_learns_sentiment_end_to_end(bert_dir: Path, tmp_path: Path, feed: str) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(f"hf:{bert_dir}")
    m = setfit(backbone, pair_iterations=5)
    train, val, test = sentences(16, 0), sentences(16, 1), sentences(40, 2)
    ds = m.pair_dataset(train, seed=0) if feed == "pairs" else ExampleDataset(train)
    cfg = config(
        lr=1e-3,
        epochs=3,
        early_stopping=True,
        monitor="val_accuracy",
        mode="max",
        save_checkpoints=False,
    )
    res = Trainer(
        m,
        ds,
        collate_with(backbone.prepare),
        cfg,
        tmp_path,
        val_fn=val_fn_for(val, backbone.prepare),
        quiet=True,
    ).fit()
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    logits, y = evaluate_predictions(m, ExampleDataset(test), collate_with(backbone.prepare), 64)
    assert logits.shape == (40, 2)
    assert compute_metrics(logits, y, "classification")["accuracy"] >= 0.8
    assert m.head_fit_ is not None and m.head_fit_.C in m.hparams.strengths
    assert m.head_fit_.metric == "val_accuracy"


def test_experiment_run_with_setfit(bert_dir: Path, tmp_path: Path) -> None:
    data = sentences(100, seed=7)
    labels = np.array(["neg", "pos"])[data.y]
    pd.DataFrame({"text": data.x, "label": labels}).to_csv(tmp_path / "toy.csv", index=False)
    doc = {
        "name": "setfit-tiny",
        "data": {"target": str(tmp_path / "toy.csv"), "label_budget": 8},
        "model": {"backbone": f"hf:{bert_dir}"},
        "method": {
            "name": "setfit",
            "params": {"pair_iterations": 5, "loss": "cosine", "head": "logreg"},
        },
        "train": {"epochs": 3, "batch_size": 16, "lr": 1e-3, "mixed_precision": "no"},
        "baselines": {"random_init": False},
        "seeds": [0],
        "report": False,
        "bootstrap_samples": 100,
    }
    from transferkit.experiment import run

    res = run(doc, out=tmp_path / "run", quiet=True)
    m = res.metrics
    assert m["method"] == "setfit" and m["family"] == "fine-tuning"
    assert m["target"]["accuracy"] >= 0.8 and "tfidf_logreg" in m["baselines"]
    weights = list((tmp_path / "run" / "checkpoints").glob("*/model.safetensors"))
    assert len(weights) == 1
    assert load_file(str(weights[0]))["head.weight"].abs().sum() > 0  # the fitted head
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["method"] == "setfit"


# --------------------------------------------------------------------- parameters
def test_parameters_are_documented_and_registered() -> None:
    assert METHODS.get("setfit") is SetFit and SetFit.family == "fine-tuning"
    assert "2209.11055" in SetFit.paper
    described = SetFit.describe_params()
    assert set(described) == set(SetFitParams.model_fields)
    assert all(":" in text for text in described.values())  # each has a description
    p = SetFitParams()
    assert (p.pair_iterations, p.loss, p.head) == (20, "cosine", "logreg")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"pair_iterations": 0}, "pair_iterations"),
        ({"loss": "triplet"}, "loss"),
        ({"head": "svm"}, "head"),
        ({"strengths": [1.0, -2.0]}, "strengths"),
        ({"strengths": []}, "strengths"),
        ({"margin": 3.0}, "margin"),
        ({"pair_iteration": 5}, "did you mean 'pair_iterations'"),
    ],
)
def test_bad_parameters_are_config_errors(params: dict[str, Any], match: str) -> None:
    doc = {
        "name": "x",
        "data": {"target": "sentiment/tweets"},
        "model": {"backbone": "packaged:minilm-l6"},
        "method": {"name": "setfit", "params": params},
    }
    with pytest.raises(ConfigError, match=match) as info:
        load_config(doc)
    assert info.value.fix and "pair_iterations" in info.value.fix


def test_setfit_needs_classification_and_a_linear_head() -> None:
    backbone = TinyVectorBackbone(6, 8)
    with pytest.raises(ConfigError, match="classification"):
        SetFit(backbone, make_head(8, 1), "regression", SetFitParams())
    with pytest.raises(ConfigError, match="Linear"):
        SetFit(backbone, torch.nn.Identity(), "classification", SetFitParams())


# --------------------------------------------------------------------- real weights
@pytest.mark.integration
def test_packaged_minilm_setfit_separates_real_sentences(tmp_path: Path) -> None:
    pos = [
        "I loved this film, it was wonderful",
        "What a great and moving story",
        "Brilliant acting and a clever plot",
        "A delightful, funny movie",
        "One of the best films this year",
        "Beautifully shot and very touching",
    ]
    neg = [
        "I hated this film, it was terrible",
        "What a dull and boring story",
        "Awful acting and a stupid plot",
        "A tedious, painful movie",
        "One of the worst films this year",
        "Badly shot and very annoying",
    ]
    x = [s for pair in zip(pos, neg, strict=True) for s in pair]
    y = np.array([1, 0] * 6)
    train = Dataset("real", "text", x[:8], y[:8], classes=["neg", "pos"])
    test = Dataset("real", "text", x[8:], y[8:], classes=["neg", "pos"])
    backbone = create_backbone("packaged:minilm-l6")
    m = setfit(backbone, pair_iterations=2)
    Trainer(
        m,
        ExampleDataset(train),
        collate_with(backbone.prepare),
        config(lr=2e-5, epochs=1, batch_size=8, save_checkpoints=False),
        tmp_path,
        quiet=True,
    ).fit()
    logits, labels = evaluate_predictions(
        m, ExampleDataset(test), collate_with(backbone.prepare), 8
    )
    assert compute_metrics(logits, labels, "classification")["accuracy"] == 1.0
