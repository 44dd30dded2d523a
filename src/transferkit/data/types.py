"""The in-memory dataset types every loader returns.

A :class:`Dataset` is a list of raw examples plus labels:

* text: ``x`` is a ``list[str]``;
* image: ``x`` is a uint8/float numpy array ``[N, H, W]`` or ``[N, H, W, C]``, or a list of
  image file paths (decoded lazily by the backbone's ``prepare``);
* tabular / vector: ``x`` is a float32 array ``[N, F]``.

``y`` holds int64 class ids ``[N]`` (classification) or float32 targets ``[N]``
(regression), or is ``None`` for unlabelled data. ``domain`` is an integer domain id
(0 for the target unless the caller sets one; DA uses source >= 0, target < 0 like skada).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

DataModality = Literal["text", "image", "tabular"]
Task = Literal["classification", "regression"]


@dataclass
class Dataset:
    """Raw examples with labels, a task type and a domain id."""

    name: str
    modality: DataModality
    x: Any
    y: np.ndarray | None
    classes: list[str] | None = None
    task: Task = "classification"
    domain: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def subset(self, idx: np.ndarray | list[int]) -> Dataset:
        """A new Dataset holding the examples at ``idx`` (order kept)."""
        idx = np.asarray(idx, dtype=np.int64)
        x = self.x[idx] if isinstance(self.x, np.ndarray) else [self.x[i] for i in idx]
        y = None if self.y is None else self.y[idx]
        return replace(self, x=x, y=y, meta=dict(self.meta))

    def unlabelled(self) -> Dataset:
        """The same examples with labels removed."""
        return replace(self, y=None, meta=dict(self.meta))


@dataclass
class Splits:
    """Deterministic train/val/test splits of one dataset.

    ``unlabelled`` holds training examples left over by a label budget (labels removed),
    for semi-supervised and domain-adaptation methods; ``None`` when there is no budget.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    unlabelled: Dataset | None = None

    @property
    def info(self) -> dict[str, Any]:
        return {
            "name": self.train.name,
            "modality": self.train.modality,
            "task": self.train.task,
            "classes": self.train.classes,
            "sizes": {
                "train": len(self.train),
                "val": len(self.val),
                "test": len(self.test),
                "unlabelled": 0 if self.unlabelled is None else len(self.unlabelled),
            },
        }
