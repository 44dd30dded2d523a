"""Experiments: YAML config -> data, backbone, method -> train -> baselines -> verdict."""

from __future__ import annotations

from typing import Any

from transferkit.experiment.config import ExperimentConfig, dump_config, load_config

__all__ = ["ExperimentConfig", "Result", "dump_config", "load_config", "resume", "run"]


def __getattr__(name: str) -> Any:
    """Import the runner lazily: loading a config should not import torch models."""
    if name in {"Result", "resume", "run"}:
        from transferkit.experiment import runner

        return getattr(runner, name)
    raise AttributeError(name)
