"""DELTA's supervised channel attention: how much the source loss grows when a channel goes.

Li et al. 2019, "DELTA: DEep Learning Transfer using Feature Map with Attention for
Convolutional Networks", https://arxiv.org/abs/1901.09229, section 3.3:

.. math::

    W_j^i = \\operatorname{softmax}_i\\big( (L(z(x, w^{0 \\setminus i}), y)
            - L(z(x, w^0), y)) / \\tau \\big)

where ``w^{0 \\setminus i}`` is the source model with channel ``i`` of layer ``j`` removed and
``L`` the mean loss of the source model plus a head on a labelled batch. The paper removes a
channel by zeroing its filter; here its *output* is zeroed with a forward hook, which is the
same for a bias-free filter whose output feeds the next layer directly, and works for any
module (convolutions, blocks, transformer layers).

Vectorised: the hook replicates the layer's output ``m`` times along the batch, zeroing a
different channel in each copy, so the layers above run once on ``m * B`` examples instead of
``m`` times. The first chunk is checked against one-channel passes; models whose later layers
take batch-shaped side inputs (e.g. attention masks) fail that check or raise, and then fall
back to one channel per pass with the same result.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError

__all__ = ["OutputCapture", "channel_attention", "group_module_names"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def _first(output: Any, name: str) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ConfigError(
        f"module {name!r} returns {type(output).__name__}, not a tensor (or a tuple whose "
        "first item is one)",
        where=f"DELTA layer {name!r}",
        fix="choose a module whose output is the feature map",
    )


def _replace_first(output: Any, new: Tensor) -> Any:
    if isinstance(output, Tensor):
        return new
    return type(output)([new, *output[1:]])


def _modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    table = dict(model.named_modules())
    for name in names:
        if name not in table:
            close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.5)
            raise ConfigError(
                f"{type(model).__name__} has no sub-module named {name!r}",
                where="DELTA layers",
                fix=(f"did you mean {', '.join(close)}? " if close else "")
                + "use names from dict(model.named_modules())",
            )
    return [table[name] for name in names]


class OutputCapture:
    """Context manager recording the (first) output tensor of named sub-modules.

    ``with OutputCapture(model, ["layer1", "layer2"]) as store: model(x)`` leaves
    ``store["layer1"]`` etc. (with their autograd graph); hooks are removed on exit.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.outputs: dict[str, Tensor] = {}
        self._handles = [
            module.register_forward_hook(self._hook(name))
            for name, module in zip(names, _modules(model, names), strict=True)
        ]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self.outputs[name] = _first(output, name)

        return hook

    def __enter__(self) -> dict[str, Tensor]:
        return self.outputs

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def group_module_names(backbone: Any, indices: Sequence[int]) -> list[str]:
    """The outermost sub-module holding only the parameters of each layer group ``indices``.

    Starts from the longest common module path of the group's parameter names and widens
    it while the wider module holds no other group's parameters (so ``block.0`` -> ``block``
    for a ``Linear`` + ``ReLU`` block). Raises :class:`ConfigError` when even the common
    path holds other groups' parameters (e.g. a stem of ``conv1`` and ``bn1`` at the root).
    """
    groups = backbone.layer_groups()
    out = []
    for index in indices:
        if not -len(groups) <= index < len(groups):
            raise ConfigError(
                f"layer-group index {index} is out of range for {len(groups)} groups",
                where="DELTA(indices=...)",
            )
        group = groups[index]
        prefix = _common_path([name.split(".")[:-1] for name in group.param_names])
        others = [p for g in groups if g is not group for p in g.param_names]

        def owns_only_group(path: list[str], others: list[str] = others) -> bool:
            return bool(path) and not any(p.startswith(".".join(path) + ".") for p in others)

        if not owns_only_group(prefix):
            raise ConfigError(
                f"layer group {group.name!r} is not one sub-module, so its output cannot be "
                "hooked for attention",
                where=f"DELTA(indices=[{index}])",
                fix="pass group_modules=[module names] or use layers=[...] instead",
            )
        while owns_only_group(prefix[:-1]):
            prefix = prefix[:-1]
        out.append(".".join(prefix))
    return out


def _common_path(paths: list[list[str]]) -> list[str]:
    prefix = paths[0] if paths else []
    for path in paths[1:]:
        k = 0
        while k < min(len(prefix), len(path)) and prefix[k] == path[k]:
            k += 1
        prefix = prefix[:k]
    return prefix


def _per_example(loss_fn: LossFn, pred: Tensor, y: Tensor, n: int) -> Tensor:
    losses = loss_fn(pred, y)
    if losses.shape != (n,):
        raise ConfigError(
            f"loss_fn returned shape {tuple(losses.shape)}; DELTA attention needs one loss "
            f"per example ({n},)",
            where="DELTA.fit_attention(loss_fn=...)",
            fix="use reduction='none'",
        )
    return losses


@dataclass
class _Probe:
    """The frozen model, the hooked module and a labelled batch, to remove channels from."""

    model: nn.Module
    module: nn.Module
    head: nn.Module
    x: Any
    y: Tensor
    loss_fn: LossFn
    channel_dim: int

    def masked_losses(self, start: int, count: int) -> Tensor:
        """Mean loss ``[count]``: copy ``k`` has channel ``start + k`` of the output zeroed."""

        def hook(mod: nn.Module, inputs: Any, output: Any) -> Any:
            h = _first(output, type(mod).__name__)
            dim = self.channel_dim % h.ndim
            mask = torch.ones(count, h.shape[dim], dtype=h.dtype, device=h.device)
            mask[torch.arange(count), torch.arange(start, start + count)] = 0
            shape = [count] + [1] * h.ndim
            shape[1 + dim] = h.shape[dim]
            return _replace_first(output, (h.unsqueeze(0) * mask.view(shape)).flatten(0, 1))

        handle = self.module.register_forward_hook(hook)
        try:
            pred = self.head(self.model(self.x))
        finally:
            handle.remove()
        batch = self.y.shape[0]
        ys = self.y.repeat(count, *([1] * (self.y.ndim - 1)))
        return _per_example(self.loss_fn, pred, ys, count * batch).view(count, batch).mean(1)

    def removal_losses(self, channels: int, per_pass: int) -> Tensor:
        """Loss with each channel removed in turn, ``[channels]``."""
        first = None
        per_pass = min(per_pass, channels)
        if per_pass > 1:
            try:
                first = self.masked_losses(0, per_pass)
                ends = (0, per_pass - 1)
                ref = torch.stack([self.masked_losses(c, 1)[0] for c in ends])
                ok = torch.allclose(first[list(ends)], ref, rtol=1e-4, atol=1e-6)
            except RuntimeError:
                ok = False
            if not ok:
                first, per_pass = None, 1
        chunks = [first] if first is not None else []
        for start in range(per_pass if first is not None else 0, channels, per_pass):
            chunks.append(self.masked_losses(start, min(per_pass, channels - start)))
        return torch.cat(chunks)


def channel_attention(
    model: nn.Module,
    head: nn.Module,
    x: Any,
    y: Tensor,
    names: Sequence[str],
    loss_fn: LossFn | None = None,
    temperature: float = 1.0,
    channel_dim: int = 1,
    channels_per_pass: int | None = None,
) -> list[Tensor]:
    """``W_j = softmax(dL_j / temperature)`` (each ``[C_j]``) for the modules ``names``.

    Args:
        model: the frozen source model (``head(model(x))`` gives predictions).
        head: the source or a fitted head on ``model``'s output.
        x: a labelled batch of prepared inputs; ``y``: its targets ``[B]``.
        loss_fn: per-example loss ``(pred, y) -> [B]``; default cross-entropy.
        channels_per_pass: channels removed per forward pass (default ``max(1, 512 // B)``).
    """
    if not temperature > 0:
        raise ConfigError(
            f"attention temperature {temperature!r} must be positive", where="fit_attention"
        )
    loss_fn = loss_fn or (lambda p, t: F.cross_entropy(p, t, reduction="none"))
    batch = y.shape[0]
    per_pass = channels_per_pass or max(1, 512 // max(batch, 1))
    modules = _modules(model, names)
    was_training = head.training
    head.eval()
    try:
        with torch.no_grad():
            with OutputCapture(model, names) as store:
                pred = head(model(x))
            if pred.shape[0] != batch:
                raise DataError(
                    f"{pred.shape[0]} predictions for {batch} targets",
                    where="DELTA.fit_attention(x, y)",
                    fix="pass targets y for every example of x",
                )
            base = _per_example(loss_fn, pred, y, batch).mean()
            weights = []
            for name, module in zip(names, modules, strict=True):
                channels = store[name].shape[channel_dim % store[name].ndim]
                probe = _Probe(model, module, head, x, y, loss_fn, channel_dim)
                removed = probe.removal_losses(channels, per_pass)
                weights.append(torch.softmax((removed - base).double() / temperature, 0))
    finally:
        head.train(was_training)
    return [w.float() for w in weights]
