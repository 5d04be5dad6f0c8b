"""A training run on disk: its settings, folder and lock, checkpoints, history, curves, record, and its model back.

- ``config``: :class:`TrainingConfig`, every setting of a run (``config.json``), and :class:`TrainingError`.
- ``folder``: writing the run's files, and training on while a Google Drive folder is away.
- ``lock``: one writer per run folder.
- ``checkpoint``: atomic checkpoints that load with ``weights_only=True``; random states.
- ``history``: the per-epoch history and nnU-Net's pseudo-Dice with its moving average.
- ``curves`` and ``progress``: the training curves, drawn live in the notebook and as ``progress.png``.
- ``record``: :class:`TrainingRecord`, what ``train_fold`` and ``resume`` return.
- ``tracking``: optional Weights & Biases logging (the only module that imports wandb).
- ``model_io``: :func:`load_model`, a trained network loaded back from its run folder.
"""
