"""Gradient surgery: per-task gradients -> one combined gradient in ``.grad``.

:class:`GradientSurgery` runs a :class:`~transferkit.mtl.gradient_methods.GradientMethod`
after a multi-task forward pass. The task heads (and other task-specific parameters: MMoE
gates, task adapters) get their own task's gradient ``grad c_t L_t`` as usual; the shared
parameters get ``d = sum_t w_t g_t``.

``space = "params"``: one ``torch.autograd.grad`` per present task w.r.t. the shared AND
that task's parameters (``retain_graph`` until the last task), so each task costs exactly
one backward pass. Shared gradients are summed per task into a buffer ``[T, P]`` over the
micro-batches of a gradient-accumulation window (each loss scaled by ``1 / accum`` like
``accelerator.backward``); the surgery runs once per window on the window's gradients.

``space = "representation"``: ``g_t`` is the gradient w.r.t. the shared representation
(cheap: the backward stops at the heads' detached inputs); then ONE backward sends ``d``
into the encoder and ``c_t L_t`` into the heads. It runs per micro-batch.

Distributed data parallel (DDP). Per-task ``autograd.grad`` calls do not fire DDP's
reducer hooks, and several backward passes per step break its bookkeeping, so the trainer
runs the forward pass under ``accelerator.no_sync`` when a method defines
``manual_backward`` (see ``engine.trainer``) and this class synchronises by hand, with one
all-reduce per window:

* params space: the per-task gradient buffer is all-reduced (averaged over processes)
  BEFORE the surgery, so every process combines the same global per-task gradients and
  the result equals a single process running the global batch. Task-specific gradients
  are averaged alongside.
* representation space: the Gram matrix ``K`` (``T x T``) is summed over processes
  before the weights are computed (the global gradient w.r.t. the concatenated
  representation has Gram ``sum_p K_p / N^2``), so every process uses the same weights;
  the ``.grad`` of every trainable parameter is averaged at the window's end.

A parameter no process gave a gradient stays ``None`` (the optimizer skips it), like a
head whose task was absent. With an fp16 grad scaler (scale ``s``) losses are multiplied
by ``s`` before differentiation and ``K`` is divided by ``s^2``, so the weights are those
of the unscaled gradients; a non-finite ``K`` (overflow) skips the surgery and leaves the
non-finite gradients for the scaler to skip the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from transferkit.mtl import gradients as gm
from transferkit.mtl.gradient_methods import GradientMethod, combine


@dataclass
class PendingStep:
    """What a multi-task forward pass leaves for the backward: the present tasks' losses
    ``c_t L_t`` (graphs alive) and, in representation space, the shared representation
    ``rep`` and the detached leaves ``leaf`` the task-specific layers read."""

    losses: dict[str, Tensor]
    rep: tuple[Tensor, ...] | None = None
    leaf: tuple[Tensor, ...] | None = None


@dataclass
class StepContext:
    """Accumulation, synchronisation, process count, loss scale and the cross-process sum."""

    accum: int = 1
    sync: bool = True
    processes: int = 1
    scale: float = 1.0
    reduce: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, accelerator: Any | None) -> StepContext:
        """From an ``accelerate.Accelerator`` (None: one process, no accumulation)."""
        if accelerator is None:
            return cls()
        n = int(accelerator.num_processes)
        scaler = getattr(accelerator, "scaler", None)
        return cls(
            accum=int(accelerator.gradient_accumulation_steps),
            sync=bool(accelerator.sync_gradients),
            processes=n,
            scale=float(scaler.get_scale()) if scaler is not None else 1.0,
            reduce=(lambda t: accelerator.reduce(t, reduction="sum")) if n > 1 else None,
        )


def _flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    parts = [
        g.reshape(-1).float() if g is not None else p.new_zeros(p.numel(), dtype=torch.float32)
        for g, p in zip(grads, params, strict=True)
    ]
    return torch.cat(parts) if parts else torch.zeros(0)


def add_grads(params: Sequence[nn.Parameter], grads: Sequence[Tensor | None]) -> None:
    """``p.grad += g`` (``p.grad = g`` when None); ``None`` gradients are skipped."""
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        g = g.to(p.dtype).view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.add_(g)


def write_flat(params: Sequence[nn.Parameter], flat: Tensor) -> None:
    """Add the slices of ``flat`` (concatenated parameter order) to each ``p.grad``."""
    chunks = torch.split(flat, [p.numel() for p in params])
    add_grads(params, list(chunks))


def allreduce_grads(params: Sequence[nn.Parameter], ctx: StepContext) -> None:
    """Average ``.grad`` over processes in one collective; all-None stays None."""
    if ctx.reduce is None or not params:
        return
    present = [p.grad is not None for p in params]
    flags = torch.tensor(present, dtype=torch.float32, device=params[0].device)
    total = ctx.reduce(torch.cat([_flat([p.grad for p in params], params), flags]))
    sums, counts = total[: -len(params)], total[-len(params) :].tolist()
    for p, g, c in zip(params, torch.split(sums, [p.numel() for p in params]), counts, strict=True):
        p.grad = None if c == 0 else (g / ctx.processes).to(p.dtype).view_as(p).clone()


class GradientSurgery:
    """Applies ``method`` to per-task gradients (see module docstring).

    Args:
        method: the gradient method (``coefficients(K) -> w``; ``space``).
        shared: the shared trainable parameters.
        task_params: each task's own trainable parameters (head included).
    """

    def __init__(
        self,
        method: GradientMethod,
        shared: Sequence[nn.Parameter],
        task_params: dict[str, list[nn.Parameter]],
    ) -> None:
        self.method = method
        self.shared = list(shared)
        self.task_params = task_params
        self.names = list(method.task_names)
        self._buf: Tensor | None = None
        self._count = [0] * len(self.names)

    def backward(self, pending: PendingStep, accelerator: Any | None = None) -> dict[str, float]:
        """Write this micro-batch's gradients; return ``weight_*`` / ``gradcos_*`` scalars
        when the surgery ran (every micro-batch in representation space, at the window's
        end in params space)."""
        ctx = StepContext.of(accelerator)
        if self.method.space == "representation":
            return self._representation(pending, ctx)
        return self._params(pending, ctx)

    # ------------------------------------------------------------ params space
    def _params(self, pending: PendingStep, ctx: StepContext) -> dict[str, float]:
        ns, last = len(self.shared), len(pending.losses) - 1
        if self._buf is None or self._buf.device != self.shared[0].device:
            p0 = self.shared[0]
            self._buf = torch.zeros(
                len(self.names),
                sum(p.numel() for p in self.shared),
                dtype=torch.float32,
                device=p0.device,
            )
        for k, (t, loss) in enumerate(pending.losses.items()):
            own = self.task_params[t]
            grads = torch.autograd.grad(
                loss * (ctx.scale / ctx.accum),
                [*self.shared, *own],
                retain_graph=k < last,
                allow_unused=True,
            )
            i = self.names.index(t)
            self._buf[i] += _flat(grads[:ns], self.shared)
            self._count[i] += 1
            add_grads(own, grads[ns:])
        return self._finish_window(ctx) if ctx.sync else {}

    def _finish_window(self, ctx: StepContext) -> dict[str, float]:
        assert self._buf is not None
        buf, counts = self._buf, torch.tensor(self._count, dtype=torch.float32)
        if ctx.reduce is not None:
            both = ctx.reduce(torch.cat([buf.reshape(-1), counts.to(buf.device)]))
            buf = both[: buf.numel()].view_as(buf) / ctx.processes
            counts = both[buf.numel() :].cpu()
            allreduce_grads([p for ps in self.task_params.values() for p in ps], ctx)
        present = [i for i, c in enumerate(counts.tolist()) if c > 0]
        out: dict[str, float] = {}
        if present:
            grads = buf if len(present) == len(self.names) else buf[present]
            gram = gm.gram_matrix(grads) / ctx.scale**2
            w = self._weights(gram)
            write_flat(self.shared, combine(grads, w))
            out = self._scalars([self.names[i] for i in present], w, gram)
        self._buf.zero_()
        self._count = [0] * len(self.names)
        return out

    # ------------------------------------------------------------ representation space
    def _representation(self, pending: PendingStep, ctx: StepContext) -> dict[str, float]:
        out: dict[str, float] = {}
        if pending.losses:
            assert pending.rep is not None and pending.leaf is not None
            leaf, rep = pending.leaf, pending.rep
            rows = []
            for loss in pending.losses.values():
                g = torch.autograd.grad(
                    loss * ctx.scale, leaf, retain_graph=True, allow_unused=True
                )
                rows.append(_flat(g, leaf))
            grads = torch.stack(rows)
            gram = gm.gram_matrix(grads) / ctx.scale**2
            if ctx.reduce is not None:
                k = torch.as_tensor(gram, device=grads.device)
                gram = (ctx.reduce(k) / ctx.processes**2).cpu().numpy()
            w = self._weights(gram)
            d = torch.split(combine(grads, w) / ctx.accum, [r.numel() for r in rep])
            heads = torch.stack(list(pending.losses.values())).sum() * (ctx.scale / ctx.accum)
            torch.autograd.backward(
                [*rep, heads],
                [
                    *(x.view_as(r).to(r.dtype) for x, r in zip(d, rep, strict=True)),
                    torch.ones_like(heads),
                ],
            )
            out = self._scalars(list(pending.losses), w, gram)
        if ctx.sync:
            own = [p for ps in self.task_params.values() for p in ps]
            allreduce_grads([*self.shared, *own], ctx)
        return out

    # ------------------------------------------------------------ helpers
    def _weights(self, gram: np.ndarray) -> np.ndarray:
        if not np.isfinite(gram).all():
            return np.ones(len(gram))
        return np.asarray(self.method.coefficients(gram), dtype=np.float64)

    @staticmethod
    def _scalars(names: Sequence[str], w: np.ndarray, gram: np.ndarray) -> dict[str, float]:
        out = {f"weight_{t}": float(v) for t, v in zip(names, w, strict=True)}
        cos = gm.cosine_matrix(gram)
        for i, a in enumerate(names):
            for j in range(i + 1, len(names)):
                out[f"gradcos_{a}_{names[j]}"] = float(cos[i, j])
        return out
