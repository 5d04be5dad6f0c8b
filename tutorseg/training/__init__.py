"""Training one fold, nnU-Net style: the loop at the top, the parts it composes in one folder per concern.

The loop and what it runs, in this folder:

- ``loop``: :func:`train_fold` and :func:`resume`: the epochs, start to end. Start here.
- ``validation``: full-case validation of the fold at the end of training.
- ``cascade``: the second stage of nnU-Net's cascade, fed the first stage's out-of-fold segmentations.
- ``transfer``: starting from a trained model (``init_from``, nnU-Net's ``-pretrained_weights``).
- ``folds``: :func:`train_folds`, several folds side by side, one process per fold.

The parts, one folder per concern (each folder's ``__init__`` says its job in one sentence):

- ``model/``: the network a plan builds (``network``, ``residual_unet``), the loss it learns from (``loss``) and
  the sliding window that applies it to a whole image (``sliding_window``).
- ``batches/``: what one training step consumes: the fold's cases (``splits``), patches cut from them with
  foreground oversampling (``patch_sampling``), nnU-Net's augmentation on the batch (``augmentation``), batches
  made ready ahead (``prefetch``).
- ``hardware/``: where the step computes: GPU or CPU and its precision (``device``), one fold on several GPUs
  (``distributed``).
- ``budget/``: how long and how fast to train: SGD and the poly schedule, budgets and named schedules
  (``schedule``), the plan a time budget can train (``planner``), the shrunken plan of smoke runs (``smoke``).
- ``runs/``: a run on disk: its settings (``config``), folder and lock (``folder``, ``lock``), checkpoints
  (``checkpoint``), history and pseudo-Dice (``history``), curves and live progress (``curves``, ``progress``),
  the returned record (``record``), optional Weights & Biases (``tracking``), the model loaded back
  (``model_io``).

The folders import each other in one direction, ``model`` -> ``batches`` -> ``hardware`` -> ``budget`` -> ``runs``
(a folder may use those before it), and only the modules at the top use them all (``tests/test_layout.py``).
Names are imported on first use, so that importing ``tutorseg.training.batches.splits`` does not load torch.
"""

from tutorseg.data.lazy import lazy_exports

_EXPORTS = {
    "train_fold": "loop", "resume": "loop", "train_folds": "folds",
    "TrainingError": "runs.config", "TrainingConfig": "runs.config",
    "load_model": "runs.model_io",
    "TrainingRecord": "runs.record", "SCHEDULES": "budget.schedule", "Schedule": "budget.schedule",
    "parse_budget": "budget.schedule",
    "make_splits": "batches.splits",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
