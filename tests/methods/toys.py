"""Shared synthetic domain-shift data for the domain-adaptation method tests."""

from __future__ import annotations

import torch


def shifted_blobs(seed: int, n: int = 96) -> tuple[torch.Tensor, ...]:
    """``(x_s, y_s, x_t, y_t)``: two blobs separated along dim 0 (``[n, 6]`` inputs); the
    target is shifted by 1.2 along dim 0 (towards the boundary) and by 3 along the nuisance
    dim 1."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for shift0, shift1 in ((0.0, 0.0), (1.2, 3.0)):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 6, generator=g) * 0.5
        x[:, 0] += (2 * y - 1) * 1.5 + shift0
        x[:, 1] += shift1
        out += [x, y]
    return tuple(out)
