"""Reconstruction-based domain adaptation: DRCN and DSN.

Both add a decoder that rebuilds *inputs* from codes, so they need inputs with a fixed shape:
images ``[B, C, H, W]`` or feature vectors ``[B, F]``. The shape comes from the backbone at
construction (``preprocess.input_size`` for images, ``init_kwargs["in_features"]`` for
vectors) so the decoder's parameters exist when the trainer builds the optimizer; the
``input_shape`` parameter overrides it (needed e.g. for ``tk:smallcnn`` without
``input_size``). Text backbones are refused: extract frozen features and adapt those with a
vector backbone. The decoder reads the backbone's *pooled* features ``[B, D]`` (the Backbone
contract exposes no spatial map), see :func:`transferkit.losses.reconstruction.make_decoder`.

* **DRCN** (Ghifary et al. 2016): shared encoder ``g`` (the backbone), classifier ``h`` on
  source, decoder ``r`` reconstructing the *target* inputs,
  ``L = lambda CE(h(g(x_s)), y_s) + (1 - lambda) * trade_off * MSE(r(g(x_t~)), x_t)``, with
  ``recon_weight = 1 - lambda`` (the paper's ``lambda = 0.7`` gives ``recon_weight = 0.3``)
  and ``x_t~ = x_t + noise_std * N(0, 1)`` (denoising; 0 = off). The paper alternates
  classification and reconstruction steps; here both terms share each step.
* **DSN** (Bousmalis et al. 2016): shared encoder ``E_c`` (the backbone), private encoders
  ``E_p^s``, ``E_p^t``, a shared decoder ``D`` on ``E_c(x) + E_p(x)`` (``combine="sum"``,
  the paper) or on their concatenation (``"concat"``). With ``h = E_c(x)``, ``p = E_p(x)``:

  .. math::

      L = \\mathrm{CE}_s + \\mathrm{trade\\_off}\\,(\\alpha \\sum_{d \\in \\{s, t\\}}
          L_{si\\_mse}(D(h_d, p_d), x_d) + \\beta \\sum_d L_{diff}(h_d, p_d)
          + \\gamma L_{sim}(h_s, h_t))

  with ``L_sim`` either DANN (gradient reversal + domain discriminator, lambda ramped by
  :class:`~transferkit.methods.da_adversarial.GRLSchedule`) or multi-kernel MMD. Defaults
  ``alpha = 0.01, beta = 0.075, gamma = 0.25`` are the MNIST -> MNIST-M values (``gamma``
  as in the authors' released run command); the paper tunes them per task on a small
  labelled target validation set. ``L_diff`` uses ``difference_reduction="batch"`` by
  default: the paper's ``||S^T P||_F^2`` divided by ``B^2``, so ``beta`` means the same for
  any batch size and code width. The raw ``"sum"`` grows up to ``B^2`` (thousands for
  ``B = 96``) and swamped the task loss in our tests; ``"mean"`` (the released code, divided
  by ``D_s D_p``) all but switches the term off for 2048-wide backbones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from transferkit.backbones.base import Backbone
from transferkit.engine.callbacks import Callback
from transferkit.errors import ConfigError, DataError
from transferkit.losses.adversarial import DomainDiscriminator, GradientReversal, dann_loss
from transferkit.losses.mmd import mmd2
from transferkit.losses.reconstruction import (
    difference_loss,
    make_decoder,
    scale_invariant_mse,
)
from transferkit.methods.base import MethodParams, register_method
from transferkit.methods.da_adversarial import GRLSchedule
from transferkit.methods.domain_adaptation import DAParams, DomainAdaptationMethod, _concat
from transferkit.methods.supervised import TaskKind

__all__ = ["DRCN", "DSN", "DRCNParams", "DSNParams", "make_private_encoder", "resolve_input_shape"]

_TEXT_FIX = (
    "extract frozen features with the text backbone first and adapt them with a vector "
    "backbone (tk:mlp), or use a method without reconstruction (dann, dan, mcc)"
)


def resolve_input_shape(backbone: Backbone, override: tuple[int, ...] | None) -> tuple[int, ...]:
    """The shape of one prepared input: ``(C, H, W)`` for images, ``(F,)`` for vectors.

    Raises:
        DataError: a text backbone (token ids cannot be reconstructed).
        ConfigError: the shape cannot be read from the backbone and ``override`` is None.
    """
    modality = getattr(backbone, "modality", None)
    if modality == "text":
        raise DataError(
            f"reconstruction-based methods cannot rebuild text inputs ({backbone.spec})",
            where="method (backbone modality 'text')",
            fix=_TEXT_FIX,
        )
    if override is not None:
        return _checked_override(tuple(override), modality)
    size = getattr(getattr(backbone, "preprocess", None), "input_size", None)
    if modality == "image" and size is not None and len(size) == 3 and min(size) > 0:
        return tuple(int(v) for v in size)
    if modality == "vector":
        kwargs = getattr(backbone, "init_kwargs", None) or {}
        feats = kwargs.get("in_features", backbone.preprocess.extra.get("in_features"))
        if isinstance(feats, int) and not isinstance(feats, bool) and feats > 0:
            return (feats,)
    raise ConfigError(
        f"cannot tell the input shape of backbone {getattr(backbone, 'spec', '?')!r} "
        f"(modality {modality!r}), which the decoder must reproduce",
        where="method.params.input_shape",
        fix="set input_shape: [C, H, W] for images or [F] for vectors, or create the "
        "backbone with a fixed input_size",
    )


def _checked_override(shape: tuple[int, ...], modality: str | None) -> tuple[int, ...]:
    rank = {"image": 3, "vector": 1}.get(modality or "", len(shape))
    if len(shape) != rank or len(shape) not in (1, 3) or not all(v >= 1 for v in shape):
        want = {3: "[C, H, W]", 1: "[F]"}.get(rank, "[C, H, W] or [F]")
        raise ConfigError(
            f"input_shape {list(shape)} does not fit a {modality or 'this'} backbone",
            where="method.params.input_shape",
            fix=f"give the shape of one prepared input as {want} of positive integers",
        )
    return shape


def make_private_encoder(input_shape: tuple[int, ...], out_dim: int, width: int) -> nn.Module:
    """DSN's cheap private encoder ``[B, *input_shape] -> [B, out_dim]``.

    Vectors: ``Linear(F, width) -> ReLU -> Linear(width, out_dim)``. Images: two stride-2
    3x3 convs (``width // 2``, ``width`` channels, ReLU) -> global average pool ->
    ``Linear(width, out_dim)``.
    """
    if len(input_shape) == 1:
        return nn.Sequential(nn.Linear(input_shape[0], width), nn.ReLU(), nn.Linear(width, out_dim))
    half = max(1, width // 2)
    return nn.Sequential(
        nn.Conv2d(input_shape[0], half, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(half, width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(width, out_dim),
    )


class ReconstructionParams(DAParams):
    input_shape: tuple[int, ...] | None = Field(  # validated against the backbone's modality
        None, description="shape of one input, [C, H, W] or [F] (default: from the backbone)"
    )
    decoder_width: int = Field(64, ge=1, description="channels of the decoder's seed map")


class _ReconstructionDA(DomainAdaptationMethod):
    """Resolves the input shape and checks that batches match it."""

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: MethodParams
    ) -> None:
        super().__init__(backbone, head, task, params)
        self.input_shape = resolve_input_shape(backbone, params.input_shape)

    def _checked(self, batch: Mapping[str, Any], key: str) -> Tensor:
        if key not in batch:
            domain = "target (unlabelled)" if key == "x_t" else "source (labelled)"
            raise DataError(
                f"{self.name} needs {domain} inputs but the batch has no {key!r}",
                where="batch",
                fix=f"give the run a {domain} dataset for domain adaptation",
            )
        x = batch[key]
        if not isinstance(x, Tensor) or tuple(x.shape[1:]) != self.input_shape:
            got = tuple(x.shape[1:]) if isinstance(x, Tensor) else type(x).__name__
            raise DataError(
                f"{self.name} reconstructs inputs of shape {self.input_shape}, got {got}",
                where=f'batch["{key}"]',
                fix="resize every input to one shape (backbone input_size) and set the "
                "method's input_shape to it; text inputs: " + _TEXT_FIX,
            )
        return x

    def _with_mcc(self, loss: Tensor, f_t: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Add ``mcc_weight * MCC(head(f_t))`` when ``mcc_weight > 0`` (a combination)."""
        if self.hparams.mcc_weight <= 0:
            return loss, {}
        return self.add_mcc(loss, self.head(f_t))

    def _shared(self, x_s: Tensor, x_t: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone features of both domains from ONE forward: ``[B_s, D], [B_t, D]``."""
        f = self.backbone(_concat(x_s, x_t))
        return f[: x_s.shape[0]], f[x_s.shape[0] :]


class DRCNParams(ReconstructionParams):
    recon_weight: float = Field(
        0.3, ge=0, lt=1, description="1 - lambda: weight of target reconstruction (paper 0.3)"
    )
    noise_std: float = Field(0.0, ge=0, description="Gaussian noise on encoded target inputs")


@register_method
class DRCN(_ReconstructionDA):
    """Classify source, reconstruct target, through one shared encoder."""

    name: ClassVar[str] = "drcn"
    paper: ClassVar[str] = (
        "Ghifary et al. 2016, Deep Reconstruction-Classification Networks for Unsupervised "
        "Domain Adaptation, ECCV, https://arxiv.org/abs/1607.03516"
    )
    Params: ClassVar[type[MethodParams]] = DRCNParams

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: DRCNParams
    ) -> None:
        super().__init__(backbone, head, task, params)
        self.decoder = make_decoder(
            backbone.num_features, self.input_shape, width=params.decoder_width
        )

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss", "cls_loss", "transfer_loss" (= "recon_loss", the target MSE)}``, plus
        ``"mcc_loss"`` when ``mcc_weight > 0`` (MCC on the target logits is added)."""
        p = self.hparams
        x_s, x_t = self._checked(batch, "x"), self._checked(batch, "x_t")
        noisy = x_t + p.noise_std * torch.randn_like(x_t) if p.noise_std > 0 else x_t
        f_s, f_t = self._shared(x_s, noisy)
        cls = F.cross_entropy(self.head(f_s), batch["y"].long())
        recon = F.mse_loss(self.decoder(f_t), x_t)
        loss = (1 - p.recon_weight) * cls + p.recon_weight * p.trade_off * recon
        loss, more = self._with_mcc(loss, f_t)
        return {
            "loss": loss,
            "cls_loss": cls.detach(),
            "transfer_loss": recon.detach(),
            "recon_loss": recon.detach(),
            **more,
        }

    def extra_groups(self) -> list[tuple[str, nn.Module]]:
        return [("decoder", self.decoder)]


class DSNParams(ReconstructionParams):
    recon_weight: float = Field(0.01, ge=0, description="alpha: SI-MSE reconstruction weight")
    difference_weight: float = Field(0.075, ge=0, description="beta: difference loss weight")
    similarity_weight: float = Field(0.25, ge=0, description="gamma: similarity loss weight")
    difference_reduction: Literal["sum", "mean", "batch"] = Field(
        "batch", description="difference loss scale: / B^2 (batch), raw (sum), / D_s D_p (mean)"
    )
    similarity: Literal["dann", "mmd"] = Field("dann", description="shared-code alignment")
    private_encoder: Literal["copy", "small"] = Field(
        "copy", description="copy: two deep copies of the backbone; small: a cheap MLP/CNN"
    )
    private_width: int = Field(64, ge=1, description="width of the 'small' private encoders")
    combine: Literal["sum", "concat"] = Field("sum", description="decoder input: h + p or [h; p]")
    hidden: int = Field(100, ge=1, description="discriminator width (dann similarity)")
    dropout: float = Field(0.0, ge=0, lt=1, description="discriminator dropout")
    gamma: float = Field(10.0, gt=0, description="steepness of the GRL ramp")
    max_lambda: float = Field(1.0, gt=0, description="final GRL coefficient")


@register_method
class DSN(_ReconstructionDA):
    """Domain Separation Networks: shared + private encoders, a shared decoder.

    ``private_encoder="copy"`` (the paper's same-architecture encoders, initialised from the
    backbone's weights) triples the backbone's memory and forward/backward cost; ``"small"``
    adds two tiny networks (:func:`make_private_encoder`). Copies train at the backbone's
    rate, small encoders at ``base_lr``. Only the shared path is used by :meth:`predict`.
    """

    name: ClassVar[str] = "dsn"
    paper: ClassVar[str] = (
        "Bousmalis et al. 2016, Domain Separation Networks, NeurIPS, "
        "https://arxiv.org/abs/1608.06019"
    )
    Params: ClassVar[type[MethodParams]] = DSNParams

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: DSNParams
    ) -> None:
        super().__init__(backbone, head, task, params)
        d = backbone.num_features
        if params.private_encoder == "copy":
            self.private_source: nn.Module = copy.deepcopy(backbone)
            self.private_target: nn.Module = copy.deepcopy(backbone)
        else:
            self.private_source = make_private_encoder(self.input_shape, d, params.private_width)
            self.private_target = make_private_encoder(self.input_shape, d, params.private_width)
        code = 2 * d if params.combine == "concat" else d
        self.decoder = make_decoder(code, self.input_shape, width=params.decoder_width)
        self.grl: GradientReversal | None = None
        self.discriminator: nn.Module | None = None
        if params.similarity == "dann":
            self.grl = GradientReversal(0.0)
            self.discriminator = DomainDiscriminator(d, params.hidden, params.dropout)

    def _decode(self, shared: Tensor, private: Tensor) -> Tensor:
        if self.hparams.combine == "sum":
            return self.decoder(shared + private)
        return self.decoder(torch.cat([shared, private], dim=1))

    def _similarity(self, h_s: Tensor, h_t: Tensor) -> Tensor:
        if self.discriminator is not None:
            return dann_loss(self.discriminator, h_s, h_t, self.grl)
        return mmd2(h_s, h_t)

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss": CE + trade_off * transfer, "cls_loss", "transfer_loss", "recon_loss",
        "diff_loss", "sim_loss"}`` (``transfer = alpha recon + beta diff + gamma sim``); with
        ``mcc_weight > 0`` also ``"mcc_loss"``, added to ``loss``."""
        p = self.hparams
        x_s, x_t = self._checked(batch, "x"), self._checked(batch, "x_t")
        h_s, h_t = self._shared(x_s, x_t)
        p_s, p_t = self.private_source(x_s), self.private_target(x_t)
        cls = F.cross_entropy(self.head(h_s), batch["y"].long())
        recon = scale_invariant_mse(self._decode(h_s, p_s), x_s) + scale_invariant_mse(
            self._decode(h_t, p_t), x_t
        )
        red = p.difference_reduction
        diff = difference_loss(h_s, p_s, reduction=red) + difference_loss(h_t, p_t, reduction=red)
        sim = self._similarity(h_s, h_t)
        transfer = p.recon_weight * recon + p.difference_weight * diff + p.similarity_weight * sim
        loss, more = self._with_mcc(cls + p.trade_off * transfer, h_t)
        out = {
            "loss": loss,
            **more,
            "cls_loss": cls.detach(),
            "transfer_loss": transfer.detach(),
            "recon_loss": recon.detach(),
            "diff_loss": diff.detach(),
            "sim_loss": sim.detach(),
        }
        if self.grl is not None:
            out["grl_lambda"] = torch.tensor(self.grl.lambda_)
        return out

    def training_callbacks(self) -> list[Callback]:
        """The GRL ramp (:class:`GRLSchedule`) when ``similarity="dann"``."""
        if self.grl is None:
            return []
        return [GRLSchedule(self.grl, self.hparams.gamma, self.hparams.max_lambda)]

    def extra_groups(self) -> list[tuple[str, nn.Module]]:
        groups: list[tuple[str, nn.Module]] = [
            ("private", nn.ModuleList([self.private_source, self.private_target])),
            ("decoder", self.decoder),
        ]
        if self.discriminator is not None:
            groups.append(("domain", self.discriminator))
        return groups

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """As :class:`DomainAdaptationMethod`, but copied private encoders train at the
        backbone's rate ``base_lr * backbone_lr_mult``."""
        groups = super().param_groups(base_lr)
        if self.hparams.private_encoder == "copy":
            for g in groups:
                if g["name"] == "private":
                    g["lr"] = base_lr * self.hparams.backbone_lr_mult
        return groups
