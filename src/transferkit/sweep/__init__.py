"""Hyper-parameter sweeps with Optuna: each trial is a normal run directory.

``transferkit sweep CONFIG --space SPACE.yaml --trials N [--storage URL]``, or in Python::

    from transferkit.sweep import run_sweep
    result = run_sweep("exp.yaml", "space.yaml", trials=20, out="runs/exp-sweep")
    result.best  # {"number", "value", "params", "overrides", "run_dir"}

See :mod:`transferkit.sweep.space` (the SPACE.yaml schema), :mod:`transferkit.sweep.objective`
(what a trial is scored on: validation only, label-free for domain adaptation),
:mod:`transferkit.sweep.pruning` (median pruning on the validation curve) and
:mod:`transferkit.sweep.study` (storage, resumption, ``OUT/sweep.json``).
"""

from transferkit.sweep.objective import ObjectiveSpec, TrialObjective, objective_spec, trial_value
from transferkit.sweep.pruning import TrialReporter
from transferkit.sweep.space import ParamSpec, SearchSpace, check_space, load_space
from transferkit.sweep.study import SweepResult, run_sweep

__all__ = [
    "ObjectiveSpec",
    "ParamSpec",
    "SearchSpace",
    "SweepResult",
    "TrialObjective",
    "TrialReporter",
    "check_space",
    "load_space",
    "objective_spec",
    "run_sweep",
    "trial_value",
]
