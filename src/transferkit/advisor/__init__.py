"""The transfer advisor: rank candidate backbones, and recommend how to transfer.

* :func:`rank_models` — transferability scores (LogME, H-score, GBC; LEEP/NCE with a
  source head) of several backbones on one target, ``random:<spec>`` controls included;
  ``transferkit score`` writes them as ``scores.json`` / ``scores.png``.
* :func:`advise` — LogME of a model vs random-init copies, the layer probe, the domain gap
  to a source, a decision table (:mod:`transferkit.advisor.rules`), and runnable configs
  ``recommended.yaml`` / ``runner_up.yaml``; ``transferkit advise``.
* :func:`check_advice` — run both configs and record whether the advice was right.
"""

from __future__ import annotations

from typing import Any

_WHERE = {
    "advise": "transferkit.advisor.advise",
    "check_advice": "transferkit.advisor.check",
    "rank_models": "transferkit.advisor.ranking",
    "write_scores": "transferkit.advisor.ranking",
    "RULES": "transferkit.advisor.rules",
    "Decision": "transferkit.advisor.rules",
    "decide": "transferkit.advisor.rules",
    "Evidence": "transferkit.advisor.thresholds",
    "Strategy": "transferkit.advisor.strategies",
}


def __getattr__(name: str) -> Any:
    """Import lazily: registering the CLI commands must not import torch."""
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'transferkit.advisor' has no attribute {name!r}")


__all__ = sorted(_WHERE)
