"""Feature distillation: FitNets hints and attention transfer.

Feature maps come in three layouts: conv maps ``[B, C, H, W]``, token sequences
``[B, L, D]`` and vectors ``[B, D]``.

**FitNets** — Romero, Ballas, Kahou, Chassang, Gatta & Bengio 2015, "FitNets: Hints for
Thin Deep Nets", ICLR, https://arxiv.org/abs/1412.6550. A learned regressor ``r`` maps the
student's guided layer ``v`` onto the teacher's hint layer ``u``:

.. math::

    L_{HT} = \\operatorname{mean}\\big((u - r(v))^2\\big)

(the paper's ``1/2 ||u - r(v)||^2``, normalised by the number of elements so its size does
not depend on the map's size). ``r`` is a 1x1 convolution for conv maps (channels
``C_s -> C_t``; the result is resized bilinearly to the teacher's ``H x W`` when they
differ) and a Linear layer for ``[B, L, D]`` / ``[B, D]`` (one weight serves both, see
:class:`HintRegressor`); the identity when the widths already match.

**Attention transfer (AT)** — Zagoruyko & Komodakis 2017, "Paying More Attention to
Attention", ICLR, https://arxiv.org/abs/1612.03928. The spatial attention map of a conv
map is ``Q = mean_c |A_c|^p`` (``p = 2``) flattened to ``[B, HW]``; for tokens it is the
per-token L2 norm ``Q_l = ||h_l||_2`` ``[B, L]``. With ``\\hat Q = Q / ||Q||_2``:

.. math::

    L_{AT} = \\operatorname{mean}_{b, j} (\\hat Q_{s,bj} - \\hat Q_{t,bj})^2

which is the paper's ``||\\hat Q_s - \\hat Q_t||_2^2`` divided by the number of positions;
the paper weights it by ``beta / 2`` with ``beta = 1000``. Student maps are resized to the
teacher's spatial size when they differ. Both losses are 0 for identical features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import DataError

__all__ = ["HintRegressor", "at_loss", "attention_map", "fitnets_loss", "match_spatial"]


def _layout_error(what: str, where: str) -> DataError:
    return DataError(
        what,
        where=where,
        fix="hint features must be [B, C, H, W], [B, L, D] or [B, D]; for maps of different "
        "kinds (conv vs. tokens) use pooled hints (hint_pool: true)",
    )


def match_spatial(student: Tensor, teacher: Tensor, where: str) -> Tensor:
    """Resize a conv map ``[B, C, h, w]`` bilinearly to the teacher's ``H x W``.

    Token and vector maps are returned as they are, after checking that the teacher's map
    has the same number of dimensions (and, for tokens, the same length ``L``).
    """
    if student.ndim != teacher.ndim or student.shape[0] != teacher.shape[0]:
        raise _layout_error(
            f"student map {tuple(student.shape)} and teacher map {tuple(teacher.shape)} have "
            "different layouts or batch sizes",
            where,
        )
    if student.ndim == 4 and student.shape[-2:] != teacher.shape[-2:]:
        return F.interpolate(
            student, size=tuple(teacher.shape[-2:]), mode="bilinear", align_corners=False
        )
    if student.ndim == 3 and student.shape[1] != teacher.shape[1]:
        raise _layout_error(
            f"student and teacher token maps have different lengths {student.shape[1]} and "
            f"{teacher.shape[1]}",
            where,
        )
    if student.ndim not in (2, 3, 4):
        raise _layout_error(f"unsupported feature map shape {tuple(student.shape)}", where)
    return student


class HintRegressor(nn.Module):
    """FitNets regressor: a learned linear map of the channel axis, ``c_s -> c_t``.

    On conv maps ``[B, C_s, H, W]`` it is a 1x1 convolution (weight ``[c_t, c_s, 1, 1]``),
    on tokens ``[B, L, C_s]`` and vectors ``[B, C_s]`` a Linear layer: the same weight
    ``W`` ``[c_t, c_s]`` and bias ``[c_t]`` either way (initialised like ``nn.Linear``), so
    the layout need not be known when the optimizer is built. When ``c_s == c_t`` it is
    the identity (no parameters). ``forward(v, like=u)`` returns ``r(v)`` resized to ``u``'s
    spatial size when they differ.
    """

    def __init__(self, c_s: int, c_t: int) -> None:
        super().__init__()
        self.c_s, self.c_t = int(c_s), int(c_t)
        self.proj: nn.Linear | None = None
        if self.c_s != self.c_t:
            self.proj = nn.Linear(self.c_s, self.c_t)

    def forward(self, v: Tensor, like: Tensor | None = None) -> Tensor:
        width = v.shape[1] if v.ndim == 4 else v.shape[-1]
        if width != self.c_s:
            raise DataError(
                f"the hint regressor expects features of width {self.c_s}, got {tuple(v.shape)}",
                where="HintRegressor",
                fix="hint layer indices must name the same layers at build and train time",
            )
        out = v
        if self.proj is not None and v.ndim == 4:
            out = F.conv2d(v, self.proj.weight[:, :, None, None], self.proj.bias)
        elif self.proj is not None:
            out = self.proj(v)
        return match_spatial(out, like, "fitnets hint") if like is not None else out

    def extra_repr(self) -> str:
        return f"c_s={self.c_s}, c_t={self.c_t}"


def fitnets_loss(regressed: Tensor, teacher: Tensor) -> Tensor:
    """``mean((u - r(v))^2)`` for a regressed student map shaped like the teacher's (scalar)."""
    if regressed.shape != teacher.shape:
        raise _layout_error(
            f"regressed student map {tuple(regressed.shape)} does not match the teacher's "
            f"{tuple(teacher.shape)}",
            "fitnets_loss(regressed, teacher)",
        )
    diff = _float(regressed) - _float(teacher.detach())
    return diff.pow(2).mean()


def _float(t: Tensor) -> Tensor:
    """At least float32 (float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def attention_map(f: Tensor, p: float = 2.0, mask: Tensor | None = None) -> Tensor:
    """Unit-norm attention map: ``[B, C, H, W] -> [B, H*W]`` or ``[B, L, D] -> [B, L]``.

    Conv: ``mean_c |f_c|^p``. Tokens: ``||h_l||_2``, zero at padded positions where
    ``mask`` ``[B, L]`` is 0. Each row is divided by its L2 norm.
    """
    f = _float(f)
    if f.ndim == 4:
        q = f.abs().pow(p).mean(1).flatten(1)
    elif f.ndim == 3:
        q = f.norm(dim=-1)
        if mask is not None:
            q = q * mask.to(q.dtype)
    else:
        raise _layout_error(
            f"attention transfer needs spatial [B, C, H, W] or token [B, L, D] features, got "
            f"{tuple(f.shape)}",
            "attention_map",
        )
    return F.normalize(q, dim=1)


def at_loss(student: Tensor, teacher: Tensor, p: float = 2.0, mask: Tensor | None = None) -> Tensor:
    """Attention transfer ``mean_{b,j} (Q_s/||Q_s|| - Q_t/||Q_t||)^2`` (scalar).

    Channel counts may differ; conv maps of different spatial sizes are compared after
    resizing the student's attention map bilinearly to the teacher's ``H x W``.
    """
    if student.ndim == 4 and teacher.ndim == 4 and student.shape[-2:] != teacher.shape[-2:]:
        q = _float(student).abs().pow(p).mean(1, keepdim=True)
        q = F.interpolate(q, size=tuple(teacher.shape[-2:]), mode="bilinear", align_corners=False)
        qs = F.normalize(q.flatten(1), dim=1)
    else:
        match_spatial(student, teacher, "at_loss(student, teacher)")
        qs = attention_map(student, p, mask)
    qt = attention_map(teacher.detach(), p, mask)
    return (qs - qt).pow(2).mean()
