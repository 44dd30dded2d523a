"""Adversarial domain alignment: gradient reversal, DANN and CDAN domain losses.

* DANN: Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand & Lempitsky 2016,
  "Domain-Adversarial Training of Neural Networks", JMLR, https://arxiv.org/abs/1505.07818.
* CDAN / CDAN+E: Long, Cao, Wang & Jordan 2018, "Conditional Adversarial Domain
  Adaptation", NeurIPS, https://arxiv.org/abs/1705.10667.

The gradient reversal layer ``R_lambda`` is the identity forward and multiplies the incoming
gradient by ``-lambda`` backward, so one minimisation trains the discriminator ``D`` to tell
domains apart while the feature extractor learns to fool it. DANN's loss, with source
label 1 and target label 0 (each domain averaged separately, then the two averaged):

.. math::

    L_{dann} = \\tfrac12\\,\\mathrm{BCE}(D(R(f_s)), 1) + \\tfrac12\\,\\mathrm{BCE}(D(R(f_t)), 0),
    \\qquad \\lambda_p = \\frac{2}{1 + e^{-\\gamma p}} - 1

with training progress ``p`` in ``[0, 1]`` and ``gamma = 10``. CDAN feeds ``D`` the
multilinear map ``T(f, g) = g \\otimes f`` (flattened ``[B, C * D]``, ``g`` the softmax
predictions) or, for large ``C * D``, the randomized map
``T(f, g) = (R_f f) \\odot (R_g g) / \\sqrt{d}`` with fixed Gaussian ``R_f [d, D]``,
``R_g [d, C]``. CDAN+E weights each example by ``w = 1 + e^{-H(g)}`` (entropy ``H``,
detached), normalised to mean 1 within each domain.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError

__all__ = [
    "CDANLoss",
    "DANNLoss",
    "DomainDiscriminator",
    "GradientReversal",
    "GradientReversalFn",
    "RandomizedMultilinearMap",
    "cdan_loss",
    "dann_lambda",
    "dann_loss",
    "domain_accuracy",
    "entropy",
    "entropy_weights",
    "grad_reverse",
    "multilinear_map",
]


class GradientReversalFn(torch.autograd.Function):
    """Identity forward; backward returns ``-lambda * grad`` (no gradient for ``lambda``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * (-ctx.lambda_), None


def grad_reverse(x: Tensor, lambda_: float = 1.0) -> Tensor:
    """Apply the gradient reversal layer ``R_lambda`` to ``x`` (any shape)."""
    return GradientReversalFn.apply(x, float(lambda_))


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's ramp ``2 / (1 + exp(-gamma p)) - 1``: 0 at ``p = 0``, tends to 1.

    Raises:
        ConfigError: ``progress`` is negative or NaN, or ``gamma`` is not positive.
    """
    if not progress >= 0:
        raise ConfigError(
            f"training progress {progress!r} must be >= 0",
            where="dann_lambda(progress)",
            fix="pass step / total_steps, a number in [0, 1]",
        )
    if not gamma > 0:
        raise ConfigError(
            f"gamma={gamma!r} must be positive",
            where="dann_lambda(gamma)",
            fix="use gamma=10 (the DANN paper's value)",
        )
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class GradientReversal(nn.Module):
    """Gradient reversal layer with a settable coefficient ``lambda_`` (identity forward)."""

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)

    def set_progress(self, progress: float, gamma: float = 10.0, max_lambda: float = 1.0) -> None:
        """Set ``lambda_ = max_lambda * dann_lambda(progress, gamma)``."""
        self.lambda_ = float(max_lambda) * dann_lambda(progress, gamma)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


class DomainDiscriminator(nn.Module):
    """DANN's domain classifier ``[B, in_features] -> logits [B]`` (source = 1, target = 0).

    Two hidden ``Linear -> ReLU -> Dropout`` layers of width ``hidden`` then ``Linear(1)``
    (the paper's 1024-1024-1 network).
    """

    def __init__(self, in_features: int, hidden: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"DomainDiscriminator {name}={value!r} must be a positive integer",
                    where=f"DomainDiscriminator({name})",
                    fix="pass the feature dimension and a hidden width such as 1024",
                )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(
                f"dropout={dropout!r} must be in [0, 1)",
                where="DomainDiscriminator(dropout)",
                fix="use 0.5 (the paper) or 0 to disable",
            )
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


def _check_domains(f_s: Tensor, f_t: Tensor, where: str) -> None:
    if (
        f_s.ndim != 2
        or f_t.ndim != 2
        or f_s.shape[1] != f_t.shape[1]
        or 0
        in (
            f_s.shape[0],
            f_t.shape[0],
        )
    ):
        raise DataError(
            f"domain inputs must be non-empty [B_s, D] and [B_t, D], got {tuple(f_s.shape)} "
            f"and {tuple(f_t.shape)}",
            where=where,
            fix="pool or flatten both batches to [batch, dim] with the same dim",
        )


def _domain_bce(
    logits: Tensor, n_s: int, w_s: Tensor | None = None, w_t: Tensor | None = None
) -> Tensor:
    l_s, l_t = logits[:n_s], logits[n_s:]
    bce_s = F.binary_cross_entropy_with_logits(l_s, torch.ones_like(l_s), reduction="none")
    bce_t = F.binary_cross_entropy_with_logits(l_t, torch.zeros_like(l_t), reduction="none")
    if w_s is not None and w_t is not None:
        bce_s, bce_t = bce_s * w_s, bce_t * w_t
    return 0.5 * (bce_s.mean() + bce_t.mean())


def dann_loss(
    discriminator: nn.Module, f_s: Tensor, f_t: Tensor, grl: nn.Module | None = None
) -> Tensor:
    """DANN domain loss (scalar): BCE of ``discriminator(grl(f))``, source 1, target 0.

    ``grl`` defaults to a reversal with ``lambda = 1``; pass ``nn.Identity()`` to train the
    discriminator alone.
    """
    _check_domains(f_s, f_t, "dann_loss(f_s, f_t)")
    grl = grl if grl is not None else GradientReversal(1.0)
    logits = discriminator(grl(torch.cat([f_s, f_t])))
    return _domain_bce(logits.reshape(-1), f_s.shape[0])


@torch.no_grad()
def domain_accuracy(discriminator: nn.Module, f_s: Tensor, f_t: Tensor) -> float:
    """Balanced accuracy of ``discriminator`` telling source (logit > 0) from target."""
    _check_domains(f_s, f_t, "domain_accuracy(f_s, f_t)")
    acc_s = (discriminator(f_s).reshape(-1) > 0).float().mean()
    acc_t = (discriminator(f_t).reshape(-1) <= 0).float().mean()
    return float(0.5 * (acc_s + acc_t))


class DANNLoss(nn.Module):
    """DANN as a module holding the discriminator and the GRL: ``(f_s, f_t) -> scalar``."""

    def __init__(self, discriminator: nn.Module, grl: GradientReversal | None = None) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.grl = grl if grl is not None else GradientReversal(1.0)

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        return dann_loss(self.discriminator, f_s, f_t, self.grl)


def multilinear_map(f: Tensor, g: Tensor) -> Tensor:
    """CDAN's multilinear map: flattened outer product ``g ⊗ f``, ``[B, D], [B, C] -> [B, C*D]``.

    Entry ``c * D + d`` is ``g[:, c] * f[:, d]``.
    """
    if f.ndim != 2 or g.ndim != 2 or f.shape[0] != g.shape[0]:
        raise DataError(
            f"multilinear map needs f [B, D] and g [B, C], got {tuple(f.shape)} and "
            f"{tuple(g.shape)}",
            where="multilinear_map(f, g)",
            fix="pass pooled features and softmax predictions of the same batch",
        )
    return (g.unsqueeze(2) * f.unsqueeze(1)).reshape(f.shape[0], -1)


class RandomizedMultilinearMap(nn.Module):
    """CDAN's randomized map ``(R_f f) ⊙ (R_g g) / sqrt(d)``: ``[B, D], [B, C] -> [B, d]``.

    ``R_f [d, D]`` and ``R_g [d, C]`` are fixed standard-normal buffers drawn from ``seed``
    (saved in ``state_dict``), so ``E[<T(a), T(b)>] = <a_f, b_f> <a_g, b_g>``: inner products of
    the full multilinear map are preserved in expectation.
    """

    def __init__(
        self, in_features: int, num_classes: int, output_dim: int = 1024, seed: int = 0
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("num_classes", num_classes),
            ("output_dim", output_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"RandomizedMultilinearMap {name}={value!r} must be a positive integer",
                    where=f"RandomizedMultilinearMap({name})",
                    fix="pass the feature dim, the number of classes and e.g. output_dim=1024",
                )
        gen = torch.Generator().manual_seed(seed)
        self.output_dim = output_dim
        self.register_buffer("r_f", torch.randn(output_dim, in_features, generator=gen))
        self.register_buffer("r_g", torch.randn(output_dim, num_classes, generator=gen))

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        if (
            f.ndim != 2
            or g.ndim != 2
            or f.shape[1] != self.r_f.shape[1]
            or (g.shape[1] != self.r_g.shape[1])
        ):
            raise DataError(
                f"randomized multilinear map built for [B, {self.r_f.shape[1]}] features and "
                f"[B, {self.r_g.shape[1]}] predictions, got {tuple(f.shape)} and "
                f"{tuple(g.shape)}",
                where="RandomizedMultilinearMap.forward",
                fix="build it with the backbone's feature dim and the number of classes",
            )
        r_f, r_g = self.r_f.to(f.dtype), self.r_g.to(g.dtype)
        return (f @ r_f.T) * (g @ r_g.T) / math.sqrt(self.output_dim)


def entropy(probs: Tensor, eps: float = 1e-12) -> Tensor:
    """Shannon entropy ``-sum_c p_c log p_c`` per row of ``probs [B, C]`` -> ``[B]``."""
    return -(probs * probs.clamp_min(eps).log()).sum(-1)


def entropy_weights(probs: Tensor) -> Tensor:
    """CDAN+E weights ``1 + exp(-H(p))`` per row, detached, normalised to mean 1 -> ``[B]``."""
    w = 1.0 + torch.exp(-entropy(probs.detach()))
    return w / w.mean()


def cdan_loss(
    discriminator: nn.Module,
    f_s: Tensor,
    f_t: Tensor,
    p_s: Tensor,
    p_t: Tensor,
    grl: nn.Module | None = None,
    *,
    mapping: RandomizedMultilinearMap | None = None,
    entropy_conditioning: bool = False,
) -> Tensor:
    """CDAN (``entropy_conditioning=True``: CDAN+E) domain loss, a scalar.

    Args:
        f_s, f_t: features ``[B_s, D]``, ``[B_t, D]``.
        p_s, p_t: softmax predictions ``[B_s, C]``, ``[B_t, C]`` (detach them to stop the
            adversarial gradient reaching the classifier through ``g``).
        mapping: a :class:`RandomizedMultilinearMap`; ``None`` uses the full map
            (discriminator input ``C * D``).
    """
    _check_domains(f_s, f_t, "cdan_loss(f_s, f_t)")
    _check_domains(p_s, p_t, "cdan_loss(p_s, p_t)")
    f, p = torch.cat([f_s, f_t]), torch.cat([p_s, p_t])
    if p.shape[0] != f.shape[0] or p_s.shape[0] != f_s.shape[0]:
        raise DataError(
            f"predictions {tuple(p_s.shape)}/{tuple(p_t.shape)} do not match features "
            f"{tuple(f_s.shape)}/{tuple(f_t.shape)} in batch size",
            where="cdan_loss",
            fix="pass features and predictions of the same batches",
        )
    grl = grl if grl is not None else GradientReversal(1.0)
    h = multilinear_map(f, p) if mapping is None else mapping(f, p)
    logits = discriminator(grl(h)).reshape(-1)
    n_s = f_s.shape[0]
    if not entropy_conditioning:
        return _domain_bce(logits, n_s)
    return _domain_bce(logits, n_s, entropy_weights(p_s), entropy_weights(p_t))


class CDANLoss(nn.Module):
    """CDAN(+E) as a module: ``(f_s, f_t, p_s, p_t) -> scalar``."""

    def __init__(
        self,
        discriminator: nn.Module,
        grl: GradientReversal | None = None,
        mapping: RandomizedMultilinearMap | None = None,
        entropy_conditioning: bool = False,
    ) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.grl = grl if grl is not None else GradientReversal(1.0)
        self.mapping = mapping
        self.entropy_conditioning = entropy_conditioning

    def forward(self, f_s: Tensor, f_t: Tensor, p_s: Tensor, p_t: Tensor) -> Tensor:
        return cdan_loss(
            self.discriminator,
            f_s,
            f_t,
            p_s,
            p_t,
            self.grl,
            mapping=self.mapping,
            entropy_conditioning=self.entropy_conditioning,
        )
