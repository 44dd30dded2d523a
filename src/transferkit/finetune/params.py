"""Configuration of the regularisers against forgetting that ``finetune`` composes.

Each is one key of ``method.params`` and ``None`` (off) by default; ``{}`` turns it on with
the paper's defaults. The weighted term is added to the task loss and logged under the
key's name (``l2sp``, ``delta``, ``bss``, ``lwf``) next to ``task_loss``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class L2SPParams(_Strict):
    """L2-SP (Li et al. 2018, https://arxiv.org/abs/1802.01483).

    ``alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_head||^2`` with ``w_S^0`` the backbone's
    weights when the method is built (the pretrained ones). Weight decay of the optimizer is
    switched off for the backbone and head groups, which this term replaces.
    """

    alpha: float = Field(0.01, ge=0, description="pull of the backbone towards its start")
    beta: float = Field(0.01, ge=0, description="weight decay of the new head")


class DeltaParams(_Strict):
    """DELTA (Li et al. 2019, https://arxiv.org/abs/1901.09229) on pooled layer-group outputs.

    ``alpha * sum_j sum_i W_j^i mean_b ||FM_j^i(w) - FM_j^i(w^0)||^2`` over layer groups
    ``j`` in ``layers``; ``W`` uniform (``attention="none"``) or from channel removal on the
    frozen start model with a head fitted to ``attention_samples`` training examples
    (``attention="supervised"``, done once at the start of training).
    """

    alpha: float = Field(0.01, ge=0, description="weight of the feature-map term")
    layers: list[int] = Field(
        [-1], min_length=1, description="layer-group indices (negative: from the end)"
    )
    attention: Literal["none", "supervised"] = Field(
        "none", description='"none": uniform channel weights; "supervised": the paper\'s'
    )
    attention_samples: int = Field(
        256, ge=2, description="training examples used to fit the supervised attention"
    )
    attention_temperature: float = Field(
        1.0, gt=0, description="softmax temperature of the supervised attention"
    )


class BSSParams(_Strict):
    """Batch Spectral Shrinkage (Chen et al. 2019, NeurIPS) on the features fed to the head.

    ``eta * sum of the k smallest squared singular values`` of the batch's ``[B, D]``
    features (``k`` is capped at ``min(B, D)`` on a smaller last batch).
    """

    eta: float = Field(0.001, ge=0, description="weight of the spectral term")
    k: int = Field(1, ge=1, description="number of smallest singular values shrunk")


class LwFParams(_Strict):
    """Learning without Forgetting (Li & Hoiem 2016, https://arxiv.org/abs/1606.09282).

    ``lambda * T^2 KL(softmax(r/T) || softmax(z/T))`` between the source head's logits on the
    original network (``r``) and on the fine-tuned one (``z``); needs the source head.
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_by_name=True, serialize_by_alias=True
    )

    lambda_: float = Field(1.0, ge=0, alias="lambda", description="weight of the LwF term")
    temperature: float = Field(2.0, gt=0, description="distillation temperature T")
