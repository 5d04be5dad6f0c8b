"""Training one fold, nnU-Net style, in small modules.

Read them in this order:

- ``network``: the U-Net built with MONAI's DynUNet from a configuration plan (mapping to nnU-Net's PlainConvUNet).
- ``loss``: Dice + cross-entropy with nnU-Net's deep-supervision weights.
- ``schedule``: SGD, poly learning rate, wall-clock budgets, named workshop schedules (:data:`SCHEDULES`).
- ``device``: GPU or CPU, mixed precision, and the messages for a missing GPU or an out-of-memory error.
- ``history``: per-epoch history and nnU-Net's pseudo-Dice.
- ``checkpoint``: atomic files and checkpoints that load with ``weights_only=True``; random states.
- ``config``: :class:`TrainingConfig`, every setting of a run (``config.json``).
- ``loop``: :func:`train_fold` and :func:`resume`.
- ``distributed``: one fold on several GPUs (DistributedDataParallel under ``torchrun``).
- ``folds``: :func:`train_folds`, several folds side by side, one process per fold.
- ``validation``: full-case validation of the fold at the end.
- ``budget``: the plan a time budget can train (``tutorseg.plan(fp, budget="10min")``): nnU-Net's plan and smaller
  ones, each training step measured on the device.
- ``progress``: progress bar and live plot; ``record``: :class:`TrainingRecord`; ``model_io``: :func:`load_model`.

What the loop uses, from the data side:

- ``splits``: nnU-Net's five cross-validation folds (``splits_final.json``).
- ``patch_sampling``: patches for a batch, a third of them forced to contain foreground.
- ``augmentation``: nnU-Net's augmentation set, on the batch.
- ``sliding_window``: Gaussian-weighted sliding-window inference with mirroring (validation and prediction).
- ``tracking``: optional Weights & Biases logging.

Names are imported on first use, so that importing ``tutorseg.training.splits`` does not load torch.
"""

from tutorseg.data.lazy import lazy_exports

_EXPORTS = {
    "train_fold": "loop", "resume": "loop", "train_folds": "folds",
    "TrainingError": "config", "TrainingConfig": "config",
    "load_model": "model_io",
    "TrainingRecord": "record", "SCHEDULES": "schedule", "Schedule": "schedule", "parse_budget": "schedule",
    "make_splits": "splits",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
