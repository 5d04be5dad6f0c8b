"""Training one fold, nnU-Net style, in small modules (read in this order):

- ``network``: the U-Net built with MONAI's DynUNet from a configuration plan (mapping to nnU-Net's PlainConvUNet).
- ``loss``: Dice + cross-entropy with nnU-Net's deep-supervision weights.
- ``schedule``: SGD, poly learning rate, wall-clock budgets, named workshop schedules (:data:`SCHEDULES`).
- ``device``: GPU or CPU, mixed precision, and the messages for a missing GPU or an out-of-memory error.
- ``history``: per-epoch history and nnU-Net's pseudo-Dice.
- ``checkpoint``: atomic files and checkpoints that load with ``weights_only=True``; random states.
- ``loop``: :func:`train_fold` and :func:`resume`.
- ``validation``: full-case validation of the fold at the end.
- ``progress``: progress bar and live plot; ``record``: :class:`TrainingRecord`; ``model_io``: :func:`load_model`.
"""

from .loop import TrainingError, resume, train_fold
from .model_io import load_model
from .record import TrainingRecord
from .schedule import SCHEDULES, Schedule, parse_budget

__all__ = ["SCHEDULES", "Schedule", "TrainingError", "TrainingRecord", "load_model", "parse_budget", "resume",
           "train_fold"]
