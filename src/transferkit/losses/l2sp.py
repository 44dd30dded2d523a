"""L2-SP: pull fine-tuned weights towards the pretrained starting point.

Li, Grandvalet & Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks", ICML, https://arxiv.org/abs/1802.01483.

.. math::

    \\Omega(w) = \\frac{\\alpha}{2} \\lVert w_S - w_S^0 \\rVert_2^2
               + \\frac{\\beta}{2} \\lVert w_{\\bar S} \\rVert_2^2

where ``w_S`` are the parameters that exist in the source model (starting point ``w_S^0``)
and ``w_{\\bar S}`` the new ones (typically the new head), which get plain weight decay.
Its gradient is ``alpha * (w_S - w_S^0)`` for source parameters and ``beta * w`` for new
ones. Use it with an optimizer *without* weight decay on the same parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError

__all__ = ["L2SP", "l2sp_loss"]


def _check_coeffs(alpha: float, beta: float) -> None:
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not value >= 0:  # also rejects NaN
            raise ConfigError(
                f"L2-SP coefficient {name}={value!r} must be a non-negative number",
                where=f"l2sp {name}",
                fix="use small non-negative values, e.g. alpha=0.01, beta=0.01",
            )


def _new_tensors(new_params: Mapping[str, Tensor] | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(new_params, Mapping):
        return list(new_params.values())
    return list(new_params)


def l2sp_loss(
    model_params: Mapping[str, Tensor],
    start_params: Mapping[str, Tensor],
    alpha: float = 0.01,
    beta: float = 0.01,
    new_params: Mapping[str, Tensor] | Iterable[Tensor] = (),
) -> Tensor:
    """L2-SP penalty ``alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_new||^2`` (a scalar tensor).

    Args:
        model_params: current parameters by name (e.g. ``dict(backbone.named_parameters())``).
            Names found in ``start_params`` form ``w_S``; the others count as new.
        start_params: the starting point ``w_S^0`` by name (same shapes; detached).
        alpha: strength of the pull towards the starting point.
        beta: weight decay of the new parameters.
        new_params: further new parameters (e.g. ``head.named_parameters()``), added to
            ``w_new``.

    Raises:
        ConfigError: negative coefficients, a shape mismatch between a parameter and its
            starting point, or no parameter name in common although both sides are non-empty
            (usually a ``"backbone."`` prefix on one side only).
    """
    _check_coeffs(alpha, beta)
    shared = [n for n in model_params if n in start_params]
    if model_params and start_params and not shared:
        raise ConfigError(
            "no parameter of the model has a name found in the L2-SP starting point",
            where=f"model names like {next(iter(model_params))!r}, "
            f"start names like {next(iter(start_params))!r}",
            fix="take both from the same module (e.g. backbone.named_parameters())",
        )
    sp_terms = []
    for name in shared:
        w, w0 = model_params[name], start_params[name]
        if w.shape != w0.shape:
            raise ConfigError(
                f"parameter {name!r} has shape {tuple(w.shape)} but {tuple(w0.shape)} at the "
                "L2-SP starting point",
                where=f"l2sp start_params[{name!r}]",
                fix="snapshot the start point from the same architecture; a replaced layer "
                "belongs in new_params",
            )
        sp_terms.append((w - w0.to(device=w.device, dtype=w.dtype)).pow(2).sum())
    new = [model_params[n] for n in model_params if n not in start_params]
    new_terms = [w.pow(2).sum() for w in new + _new_tensors(new_params)]
    total = _zero_like(model_params, start_params)
    if sp_terms:
        total = total + 0.5 * alpha * torch.stack(sp_terms).sum()
    if new_terms:
        total = total + 0.5 * beta * torch.stack(new_terms).sum()
    return total


def _zero_like(*mappings: Mapping[str, Tensor]) -> Tensor:
    for m in mappings:
        for t in m.values():
            return t.new_zeros(())
    return torch.zeros(())


def _buffer_name(param_name: str) -> str:
    return "start__" + param_name.replace(".", "/")


class L2SP(nn.Module):
    """L2-SP as a module: snapshots a module's starting weights, penalises drift from them.

    The snapshot is stored as persistent buffers (detached clones, not parameters), so
    ``state_dict()`` carries it and a resumed run penalises drift from the *original* start
    point, not from the weights at resume time. Buffers follow ``.to(device)``.

    Example::

        reg = L2SP(backbone, alpha=0.01, beta=0.01)      # before any training step
        loss = task_loss + reg(backbone, new=head)        # [] scalar

    Args:
        start: the module (usually the pretrained backbone) whose current weights are the
            starting point ``w_S^0``.
        alpha: pull towards the starting point.
        beta: weight decay on parameters not in the snapshot (and on ``new``).
    """

    def __init__(self, start: nn.Module, alpha: float = 0.01, beta: float = 0.01) -> None:
        super().__init__()
        _check_coeffs(alpha, beta)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self._names: dict[str, str] = {}
        for name, p in start.named_parameters():
            key = _buffer_name(name)
            if key in self._buffers:
                raise ConfigError(
                    f"parameter names {name!r} and another collide once '.' is escaped",
                    where="L2SP snapshot",
                    fix="rename the sub-module so parameter names do not contain '/'",
                )
            self._names[name] = key
            self.register_buffer(key, p.detach().clone(), persistent=True)

    def start_params(self) -> dict[str, Tensor]:
        """The snapshot ``w_S^0`` by parameter name."""
        return {name: getattr(self, key) for name, key in self._names.items()}

    def forward(self, model: nn.Module, new: nn.Module | None = None) -> Tensor:
        """Penalty for ``model``'s current weights (parameters of ``new`` count as new)."""
        new_params = dict(new.named_parameters()) if new is not None else {}
        return l2sp_loss(
            dict(model.named_parameters()),
            self.start_params(),
            self.alpha,
            self.beta,
            new_params=new_params,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, params={len(self._names)}"
