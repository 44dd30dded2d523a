"""Figures: valid PNG data URIs, sensible fallbacks, moving-average maths."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from transferkit.report import plots
from transferkit.report.load import Curves


def _png(uri: str | None) -> Image.Image:
    assert uri is not None and uri.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    img.load()
    return img


def _distinct_colours(img: Image.Image) -> int:
    return len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0))


def test_ema_is_debiased_and_matches_the_recursion() -> None:
    y = np.array([2.0, 2.0, 2.0])
    assert np.allclose(plots._ema(y, 0.1), 2.0)  # debiased: a constant stays constant
    y = np.array([1.0, 3.0])
    # s1 = 0.5, w1 = 0.5 -> 1; s2 = 0.5*3 + 0.25 = 1.75, w2 = 0.75 -> 7/3
    assert np.allclose(plots._ema(y, 0.5), [1.0, 7 / 3])


def test_learning_curves_panels() -> None:
    both = {
        "a": Curves(
            train_loss=[(i, 1 / i) for i in range(1, 50)],
            val={"val_accuracy": [(1, 0.5), (2, 0.6)]},
        )
    }
    loss_only = {"a": Curves(train_loss=[(1, 1.0), (2, 0.5)])}
    wide, narrow = (
        _png(plots.learning_curves(both, "accuracy")),
        _png(plots.learning_curves(loss_only, "accuracy")),
    )
    assert wide.width > 1.6 * narrow.width  # two panels vs one
    assert _distinct_colours(wide) > 20
    assert plots.learning_curves({}, "accuracy") is None
    assert plots.learning_curves({"a": Curves()}, None) is None


def test_pick_val_metric() -> None:
    c = {
        "a": Curves(val={"val_loss": [(1, 1.0)], "val_macro_f1": [(1, 0.5)]}),
        "b": Curves(val={"val_accuracy": [(1, 0.5)]}),
    }
    assert plots.pick_val_metric(c, "accuracy") == "val_accuracy"
    assert plots.pick_val_metric(c, "r2") == "val_macro_f1"  # first non-loss key
    assert plots.pick_val_metric({"a": Curves(val={"val_loss": [(1, 1)]})}, None) == "val_loss"
    assert plots.pick_val_metric({}, "accuracy") is None


@pytest.mark.parametrize("bad", [[[1, 2], [3]], [[1, 2, 3]], [], [[np.nan]], "x"])
def test_confusion_heatmap_rejects_malformed_matrices(bad: object) -> None:
    assert plots.confusion_heatmap(bad, []) is None  # type: ignore[arg-type]


def test_confusion_heatmap_sizes_with_classes() -> None:
    small = _png(plots.confusion_heatmap([[5, 1], [2, 7]], ["a", "b"]))
    big = _png(plots.confusion_heatmap(np.eye(10, dtype=int).tolist(), [str(i) for i in range(10)]))
    assert big.height > small.height
    # an all-zero row (class never in the test set) must not divide by zero
    assert plots.confusion_heatmap([[0, 0], [1, 1]], ["a", "b"]) is not None


def test_comparison_bars_and_error_sizes() -> None:
    errs = plots._errors([10.0, 5.0], [(8.0, 13.0), None])
    assert errs[:, 0].tolist() == [2.0, 3.0] and np.isnan(errs[:, 1]).all()
    bars = [
        plots.Bar("a", 0.8, (0.78, 0.82), 0.7, 0.1, (0.05, 0.15), "positive"),
        plots.Bar("b", 0.6, None, 0.7, None, None, None),
    ]
    assert _png(plots.comparison_bars(bars, "accuracy")).width > 500
    assert plots.comparison_bars([plots.Bar("a", None)], "accuracy") is None


def test_overlaid_val_curves() -> None:
    groups = {"run1": {"s0": [(1, 0.5), (2, 0.6)], "s1": [(1, 0.55)]}, "run2": {"s0": []}}
    assert _png(plots.overlaid_val_curves(groups, "val_accuracy")).width > 400
    assert plots.overlaid_val_curves({"run2": {"s0": []}}, "val_accuracy") is None
