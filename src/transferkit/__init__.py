"""transferkit: transfer learning for PyTorch that tells you honestly whether it helped.

The Python API mirrors the CLI::

    import transferkit
    result = transferkit.run("experiment.yaml")       # or a dict / ExperimentConfig
    print(result.verdict, result.transfer_gain)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "create_backbone", "load_dataset", "resume", "run"]


def run(*args: Any, **kwargs: Any) -> Any:
    """Run an experiment (see :func:`transferkit.experiment.runner.run`)."""
    from transferkit.experiment.runner import run as _run

    return _run(*args, **kwargs)


def resume(*args: Any, **kwargs: Any) -> Any:
    """Resume a run directory (see :func:`transferkit.experiment.runner.resume`)."""
    from transferkit.experiment.runner import resume as _resume

    return _resume(*args, **kwargs)


def create_backbone(*args: Any, **kwargs: Any) -> Any:
    """Create a backbone from a spec (see :func:`transferkit.backbones.create_backbone`)."""
    from transferkit.backbones import create_backbone as _create

    return _create(*args, **kwargs)


def load_dataset(*args: Any, **kwargs: Any) -> Any:
    """Load a dataset (see :func:`transferkit.data.load_dataset`)."""
    from transferkit.data import load_dataset as _load

    return _load(*args, **kwargs)
