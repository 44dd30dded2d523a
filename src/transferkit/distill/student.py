"""A shallower student initialised from its transformer teacher's own layers.

Sanh, Debut, Chaumond & Wolf 2019, "DistilBERT, a distilled version of BERT",
https://arxiv.org/abs/1910.01108, section 3: the student takes the teacher's architecture
with fewer layers and is initialised "by taking one layer out of two" — embeddings,
final norms and the kept encoder layers are copied, so distillation starts from a student
that already computes something close to the teacher.

``student_from_teacher(teacher, keep_every=k)`` keeps the encoder layers
``k-1, 2k-1, 3k-1, ...`` (0-based): every k-th layer, ending on the teacher's top layer
when ``k`` divides the depth (a 6-layer MiniLM with ``k = 2`` keeps layers 1, 3, 5).
``layers=[...]`` chooses them explicitly. Every other parameter (embeddings, a final
norm, the pooler) is copied as it is. The student is an ordinary ``hf:`` backbone with the
teacher's tokenizer, pooling and options; its ``init_kwargs`` carry the smaller config,
so ``file:`` checkpoints of it reload.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from transferkit.backbones.base import Backbone
from transferkit.backbones.factory import create_backbone
from transferkit.backbones.hf import HFBackbone, layer_list
from transferkit.errors import BackboneError, ConfigError

__all__ = ["kept_layers", "student_from_teacher"]


def kept_layers(n: int, keep_every: int, layers: Sequence[int] | None = None) -> list[int]:
    """Teacher layer indices the student keeps, in order (validated)."""
    if layers is not None:
        chosen = [int(i) for i in layers]
        if not chosen or sorted(set(chosen)) != chosen or not all(0 <= i < n for i in chosen):
            raise ConfigError(
                f"layers={list(layers)} must be increasing, distinct indices in 0..{n - 1}",
                where="student_from_teacher(layers=...)",
                fix=f"e.g. layers={list(range(1, n, 2))}",
            )
        return chosen
    if isinstance(keep_every, bool) or not isinstance(keep_every, int) or not 1 <= keep_every <= n:
        raise ConfigError(
            f"keep_every={keep_every!r} must be an integer in 1..{n} (the teacher has {n} layers)",
            where="student_from_teacher(keep_every=...)",
            fix="use keep_every=2 to halve the depth",
        )
    return list(range(keep_every - 1, n, keep_every))


def _copy_weights(teacher: HFBackbone, student: HFBackbone, keep: list[int], prefix: str) -> None:
    """Student layer ``j`` <- teacher layer ``keep[j]``; every other tensor one to one."""
    src = teacher.model.state_dict()
    mapped = {}
    for key in student.model.state_dict():
        name = key
        if key.startswith(prefix + "."):
            j, rest = key[len(prefix) + 1 :].split(".", 1)
            name = f"{prefix}.{keep[int(j)]}.{rest}"
        if name not in src:
            raise BackboneError(
                f"the student's tensor {key!r} has no counterpart {name!r} in the teacher",
                where=teacher.spec,
            )
        mapped[key] = src[name].detach().clone()
    student.model.load_state_dict(mapped, strict=True)


def student_from_teacher(
    teacher_backbone: Backbone, keep_every: int = 2, *, layers: Sequence[int] | None = None
) -> HFBackbone:
    """A shallower copy of a Hugging Face transformer backbone (see the module docstring).

    Args:
        teacher_backbone: an ``hf:`` / ``packaged:minilm-l6`` backbone.
        keep_every: keep every k-th encoder layer (``1`` keeps all).
        layers: explicit 0-based teacher layers to keep (overrides ``keep_every``).

    Returns:
        A new :class:`HFBackbone` in training mode whose kept layers and embeddings are
        bit-equal copies of the teacher's.
    """
    if not isinstance(teacher_backbone, HFBackbone):
        raise BackboneError(
            f"student_from_teacher copies layers of Hugging Face transformers; "
            f"{teacher_backbone.spec} is a {type(teacher_backbone).__name__}",
            where="student_from_teacher(teacher_backbone)",
            fix="use an hf: or packaged:minilm-l6 teacher, or build a smaller student "
            "with create_backbone(...)",
        )
    prefix, n = layer_list(teacher_backbone.model)
    if n == 0:
        raise BackboneError("the teacher has no encoder layer list", where=teacher_backbone.spec)
    keep = kept_layers(n, keep_every, layers)
    cfg = copy.deepcopy(teacher_backbone.model.config)
    cfg.num_hidden_layers = len(keep)
    kwargs = {**teacher_backbone.init_kwargs, "config": cfg}
    torch_state = torch.random.get_rng_state()
    try:  # the random init is overwritten; do not consume the caller's random stream
        student = create_backbone(teacher_backbone.spec, pretrained=False, **kwargs)
    finally:
        torch.random.set_rng_state(torch_state)
    if not isinstance(student, HFBackbone):  # pragma: no cover - factory invariant
        raise BackboneError("the student is not a transformers backbone", where=student.spec)
    _copy_weights(teacher_backbone, student, keep, prefix)
    if student.modality == "text":
        student.preprocess.tokenizer = teacher_backbone.preprocess.tokenizer
        student.preprocess.max_length = teacher_backbone.preprocess.max_length
    student.train()
    return student
