"""Token-level text augmentations of prepared (tokenised) batches.

Inputs are tokenizer dicts ``{"input_ids", "attention_mask", ...}`` of ``[B, L]`` tensors.
Every operation keeps shapes, dtypes and devices, never modifies its input, changes only
*eligible* tokens (:func:`eligible_tokens`: attended and not special, so [CLS]/[SEP],
<s>/</s> and padding stay put) and draws its random numbers from ``generator`` (or from the
global RNG of the ids' device when it is ``None``):

* :func:`token_dropout`: ``attention_mask -> 0`` with probability ``p_drop`` (and optional
  replacement by a mask token);
* :func:`replace_tokens`: BERT-style masking, ``id -> token_id`` with probability ``p``;
* :func:`swap_adjacent`: swaps of neighbouring tokens (EDA's random swap, restricted to
  neighbours, Wei & Zou 2019, https://arxiv.org/abs/1901.11196);
* :func:`delete_span` / :func:`delete_positions`: one contiguous span removed, the rest
  shifted left and right-padded.

The weak/strong recipes of :mod:`transferkit.augment` and the configurable policies of
:mod:`transferkit.augment_policy` are built from these (both re-export them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "delete_positions",
    "delete_span",
    "eligible_tokens",
    "replace_tokens",
    "swap_adjacent",
    "token_dropout",
    "uniform_like",
]


def uniform_like(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``U[0, 1)`` of ``shape`` from ``generator`` (or ``like``'s device RNG when ``None``),
    returned on ``like``'s device."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device).to(like.device)


def eligible_tokens(
    ids: Tensor, mask: Tensor | None, special_ids: Sequence[int] | None = None
) -> Tensor:
    """``[B, L]`` bool: the tokens text augmentation may change.

    Attended (``mask != 0``) tokens whose id is not in ``special_ids``; without
    ``special_ids``, every attended token except the first and the last attended one of
    each row (the [CLS]/[SEP] or <s>/</s> of an encoder), with right or left padding alike.
    """
    attended = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask != 0
    if special_ids is not None:
        special = torch.tensor(sorted(set(special_ids)), dtype=ids.dtype, device=ids.device)
        return attended & ~torch.isin(ids, special)
    pos = torch.arange(ids.shape[1], device=ids.device)[None, :]
    first = torch.where(attended, pos, ids.shape[1]).amin(1, keepdim=True)
    last = torch.where(attended, pos, -1).amax(1, keepdim=True)
    return attended & (pos != first) & (pos != last)


def token_dropout(
    x: Mapping[str, Tensor],
    p_drop: float,
    p_replace: float = 0.0,
    mask_token_id: int | None = None,
    generator: torch.Generator | None = None,
    *,
    eligible: Tensor | None = None,
) -> dict[str, Tensor]:
    """Drop (``attention_mask = 0``) each eligible token with probability ``p_drop`` and,
    when ``mask_token_id`` is given, replace another ``p_replace`` of them by it.

    Eligible tokens are ``eligible`` when given, else :func:`eligible_tokens` without
    special ids (attended tokens but the first and last of each row), so padding and
    specials are never changed. One uniform ``u`` per token decides: ``u < p_drop`` drops,
    ``p_drop <= u < p_drop + p_replace`` replaces. Other keys are passed through; a missing
    ``attention_mask`` is taken as all ones (and added).
    """
    ids = x["input_ids"]
    mask = x.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    if eligible is None:
        eligible = eligible_tokens(ids, mask)
    u = uniform_like(tuple(ids.shape), generator, ids)
    drop = eligible & (u < p_drop)
    out = dict(x)
    out["attention_mask"] = mask.masked_fill(drop, 0)
    if mask_token_id is not None and p_replace > 0:
        replace = eligible & (u >= p_drop) & (u < p_drop + p_replace)
        out["input_ids"] = ids.masked_fill(replace, int(mask_token_id))
    return out


def replace_tokens(
    x: Mapping[str, Tensor],
    p: float,
    token_id: int,
    eligible: Tensor,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Replace each ``eligible`` token's id by ``token_id`` (e.g. [MASK]) with probability
    ``p``; the attention mask is kept (BERT's masking, Devlin et al. 2019)."""
    ids = x["input_ids"]
    hit = eligible & (uniform_like(tuple(ids.shape), generator, ids) < p)
    return {**x, "input_ids": ids.masked_fill(hit, int(token_id))}


def _sequence_keys(x: Mapping[str, Tensor]) -> list[str]:
    """Keys holding ``[B, L]`` tensors aligned with ``input_ids`` (moved together)."""
    shape = x["input_ids"].shape
    return [k for k, v in x.items() if isinstance(v, Tensor) and v.shape[:2] == shape]


def swap_adjacent(
    x: Mapping[str, Tensor],
    p: float,
    eligible: Tensor,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Swap neighbouring eligible tokens: pairs ``(i, i + 1)`` with ``i`` of one random
    parity per row (so pairs never overlap) and both tokens eligible are swapped with
    probability ``p``. All ``[B, L]`` tensors move together. No word list is needed (EDA's
    random swap restricted to neighbours; Wei & Zou 2019, https://arxiv.org/abs/1901.11196).
    """
    ids = x["input_ids"]
    b, n = ids.shape
    if n < 2:
        return dict(x)
    pos = torch.arange(n, device=ids.device)[None, :]
    parity = (uniform_like((b, 1), generator, ids) < 0.5).long()
    pair = torch.zeros_like(eligible)
    pair[:, :-1] = eligible[:, :-1] & eligible[:, 1:]
    start = pair & (pos % 2 == parity) & (uniform_like((b, n), generator, ids) < p)
    shifted = torch.zeros_like(start)
    shifted[:, 1:] = start[:, :-1]
    src = (pos + start.long() - shifted.long()).expand(b, n)
    return {k: (v.gather(1, src) if k in _sequence_keys(x) else v) for k, v in x.items()}


def delete_positions(x: Mapping[str, Tensor], delete: Tensor, pad_id: int) -> dict[str, Tensor]:
    """Remove the positions where ``delete [B, L]`` is true: the remaining tokens shift left
    (order kept) and each row is right-padded with as many positions as it lost
    (``input_ids = pad_id``, ``attention_mask = 0``, other ``[B, L]`` keys 0). Deterministic."""
    ids = x["input_ids"]
    order = torch.sort(delete.to(torch.uint8), dim=1, stable=True).indices
    lost = delete.sum(1, keepdim=True)
    pos = torch.arange(ids.shape[1], device=ids.device)[None, :]
    tail = pos >= ids.shape[1] - lost
    out = dict(x)
    for k in _sequence_keys(x):
        fill = pad_id if k == "input_ids" else 0
        out[k] = x[k].gather(1, order).masked_fill(tail, fill)
    if "attention_mask" not in out:
        out["attention_mask"] = (~tail).long()
    return out


def delete_span(
    x: Mapping[str, Tensor],
    fraction: float,
    eligible: Tensor,
    pad_id: int,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Delete one contiguous span of eligible tokens per row (see :func:`delete_positions`).

    With ``R`` the row's longest run of consecutive eligible tokens, the span has
    ``k = min(max(1, floor(fraction * R)), R - 1)`` tokens (so one eligible token of the run
    survives; rows with ``R < 2`` are unchanged) and starts uniformly among the positions
    where ``k`` eligible tokens follow.
    """
    ids = x["input_ids"]
    b, n = ids.shape
    pos = torch.arange(n, device=ids.device)[None, :].expand(b, n)
    bad = torch.where(eligible, n, pos)  # next non-eligible position at or after l:
    next_bad = torch.flip(torch.cummin(torch.flip(bad, [1]), dim=1).values, [1])
    run = next_bad - pos  # consecutive eligible tokens starting at l
    longest = run.amax(1, keepdim=True)
    k = (fraction * longest).floor().long().clamp_min(1).minimum(longest - 1)
    score = torch.where(run >= k, uniform_like((b, n), generator, ids), -1.0)
    start = score.argmax(1, keepdim=True)
    delete = (pos >= start) & (pos < start + k) & (k > 0)
    return delete_positions(x, delete, pad_id)
