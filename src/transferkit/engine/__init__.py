"""Training engine: the :class:`Trainer` (Hugging Face Accelerate based), its config,
callbacks, checkpoints with exact resume, and prediction helpers.

The engine knows nothing about algorithms; it drives any
:class:`~transferkit.methods.base.Method` through ``training_step``, ``param_groups`` and
``predict``.
"""

from transferkit.engine.callbacks import Callback, CallbackList, EarlyStopping
from transferkit.engine.checkpoint import CheckpointStore
from transferkit.engine.config import TrainConfig
from transferkit.engine.data import EpochPermutationSampler, epoch_seed
from transferkit.engine.evaluate import evaluate_predictions
from transferkit.engine.loggers import JsonlLogger, ProgressBar, TensorBoardLogger
from transferkit.engine.optim import build_optimizer, split_weight_decay
from transferkit.engine.schedules import ScheduleFactor, build_scheduler, schedule_factor
from transferkit.engine.state import TrainResult
from transferkit.engine.trainer import Trainer

__all__ = [
    "Callback",
    "CallbackList",
    "CheckpointStore",
    "EarlyStopping",
    "EpochPermutationSampler",
    "JsonlLogger",
    "ProgressBar",
    "ScheduleFactor",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "epoch_seed",
    "evaluate_predictions",
    "schedule_factor",
    "split_weight_decay",
]
