"""How one fold is trained: every setting of a run, resolved, saved as the run folder's ``config.json``.

:func:`tutorseg.train_fold` turns its arguments (and a named schedule, and the device) into a
:class:`TrainingConfig`; :func:`tutorseg.resume` reads it back from ``config.json``, so a resumed run trains with
exactly the settings it started with.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from tutorseg.data.artefacts import read_artefact, write_artefact
from tutorseg.data.copies import copied_from
from tutorseg.data.problems import TutorsegError
from tutorseg.training.batches.augmentation import AugmentationConfig
from tutorseg.training.budget.schedule import (
    INITIAL_LR,
    MOMENTUM,
    NNUNET_ITERATIONS_PER_EPOCH,
    NNUNET_VAL_ITERATIONS,
    format_seconds,
    get_schedule,
    parse_budget,
)

DEFAULT_SEED = 12345  # nnU-Net's seed for its cross-validation splits; tutorseg uses it for training too
CPU_ITERATIONS_PER_EPOCH = 50  # on a CPU an nnU-Net epoch (250 steps) would take many minutes between checkpoints
CPU_VAL_ITERATIONS = 10


class TrainingError(TutorsegError):
    """A run folder or a training setting is not usable (the message says what to do)."""


@dataclass(frozen=True)
class TrainingConfig:
    """Every setting of one training run. Saved as ``config.json``; :func:`tutorseg.resume` trains on with it."""

    dataset_dir: str  # the raw dataset folder (resume opens it again)
    dataset_name: str
    configuration: str  # which of the plan's configurations: "3d_fullres", "2d", "3d_lowres"
    fold: int | str  # 0-4 of nnU-Net's five folds, or "all" (every case trains, none validates)
    budget_seconds: float | None  # wall-clock training time; the poly learning rate is stretched over it
    epochs: int | None  # or a number of epochs (nnU-Net: 1000); exactly one of the two is set
    iterations_per_epoch: int  # steps between validations and checkpoints (nnU-Net 250; on a CPU 50)
    val_iterations: int  # validation batches per epoch for the pseudo-Dice (nnU-Net 50; on a CPU 10)
    preprocessed_dir: str  # where the preprocessed cases are kept (shareable across folds)
    augmentation: AugmentationConfig  # nnU-Net's augmentation set unless changed
    seed: int = DEFAULT_SEED  # sampling, augmentation and initialisation
    device: str | None = None  # None: the GPU if there is one, else the CPU
    precision: str = "auto"  # fp16 on CUDA, bf16 on CPUs that have it natively, else fp32
    num_threads: int | None = None  # CPU threads; None: the cores the machine's load leaves idle
    prefetch: bool | None = None  # cut the next batches in a thread while the network computes; None: on a GPU
    cases_in_memory: bool | None = None  # hold the cases in RAM, or read patches from disk; None: by their size
    validate: bool = True  # full-case validation of the fold at the end
    validation_tta: bool = True  # mirroring test-time augmentation in that validation (nnU-Net: on)
    save_probabilities: bool = False  # that validation also writes CASE.npz probabilities (nnU-Net's --npz)
    previous_stage_dir: str | None = None  # a cascade's 3d_lowres fold folders, relative to the run folder
    init_from: str | None = None  # the checkpoint the weights started from (fine-tuning), or None: random
    initial_lr: float = INITIAL_LR  # the poly schedule's start (nnU-Net: 1e-2)
    warmup: float = 0.0  # share of the training over which the learning rate ramps up linearly first (fine-tuning)
    momentum: float = MOMENTUM  # SGD's (nnU-Net: 0.99; train_fold chooses 0.9 for short runs: choose_momentum)
    momentum_reason: str = ""  # why, for the log
    wandb: bool = False  # log to Weights & Biases
    verbose: bool = True  # print what happens (it is written to log.txt either way)
    epoch_size_from_device: bool = False  # the two sizes above are the device's defaults: a resume elsewhere resets
    budget: str | float | None = None  # the budget as given ("20min"), for the log
    schedule: str | None = None  # the named schedule that filled the rest, if any
    dataset_source: str | None = None  # the folder dataset_dir was copied from (Colab: on Drive); resume recopies it
    tutorseg_version: str = ""  # what the run was started with
    torch_version: str = ""
    created: str = ""  # UTC, ISO 8601

    def __post_init__(self) -> None:
        if (self.budget_seconds is None) == (self.epochs is None):
            raise TrainingError("a training configuration needs exactly one of budget_seconds and epochs")
        if not 0 <= self.warmup < 1:
            raise TrainingError(f"warmup is the share of the training spent ramping the learning rate up, from 0 to "
                                f"below 1 (e.g. 0.05); got {self.warmup}")
        if not 0 <= self.momentum < 1:
            raise TrainingError(f"momentum must be from 0 to below 1 (nnU-Net: 0.99; short runs: 0.9), not "
                                f"{self.momentum}")
        if not self.initial_lr > 0:
            raise TrainingError(f"initial_lr must be positive (nnU-Net: 1e-2; fine-tuning: e.g. 1e-3), not "
                                f"{self.initial_lr}")

    @property
    def stops_by_budget(self) -> bool:
        return self.budget_seconds is not None

    def for_device(self, device: str | None, on_cpu: bool) -> TrainingConfig:
        """This configuration, continued on another device.

        A device that is gone is forgotten (``device=None``: the GPU if there is one, else the CPU), float16 that
        the device cannot do becomes "auto", and epoch sizes that were the old device's defaults become the new
        one's (250 steps between checkpoints on a CPU would mean a quarter of an hour).
        """
        changes: dict = {"device": device}
        if on_cpu and self.precision == "fp16":
            changes["precision"] = "auto"
        if self.epoch_size_from_device:
            changes["iterations_per_epoch"], changes["val_iterations"] = default_epoch_size(on_cpu)
        return self.replace(**changes)

    def fraction_done(self, elapsed_seconds: float, epochs_done: int) -> float:
        """How far the training is, 0 to 1: time used of the budget, or epochs done of the epochs.

        This is the x of the poly learning-rate schedule.
        """
        if self.budget_seconds is not None:
            return elapsed_seconds / self.budget_seconds
        assert self.epochs is not None  # __post_init__: one of the two is set
        return epochs_done / self.epochs

    def length_text(self) -> str:
        """``"budget 5 min"`` or ``"20 epochs"``, for the log."""
        return f"budget {format_seconds(self.budget_seconds)}" if self.budget_seconds is not None \
            else f"{self.epochs} epochs"

    def progress_text(self, elapsed_seconds: float, epochs_done: int) -> str:
        """``"3 min of 5 min"`` or ``"4 of 20 done"``, for the log."""
        if self.budget_seconds is not None:
            return f"{format_seconds(elapsed_seconds)} of {format_seconds(self.budget_seconds)}"
        return f"{epochs_done} of {self.epochs} done"

    def replace(self, **changes) -> TrainingConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["augmentation"] = self.augmentation.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["augmentation"] = AugmentationConfig.from_dict(data["augmentation"])
        return cls(**values)

    def save(self, path: str | os.PathLike) -> Path:
        return write_artefact(path, self.to_dict(), durable=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainingConfig:
        """Read a run's ``config.json`` (a folder is taken as the run folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return read_artefact(path, cls.from_dict, what="training configuration",
                             how_to_make="tutorseg.train_fold(...) (it writes config.json into the run folder)")


def default_epoch_size(on_cpu: bool) -> tuple[int, int]:
    """``(iterations_per_epoch, val_iterations)`` when nothing asks for others.

    nnU-Net's 250 and 50 on a GPU; 50 and 10 on a CPU, where an nnU-Net epoch would take many minutes between
    checkpoints.
    """
    return (CPU_ITERATIONS_PER_EPOCH, CPU_VAL_ITERATIONS) if on_cpu else (NNUNET_ITERATIONS_PER_EPOCH,
                                                                           NNUNET_VAL_ITERATIONS)


def resolve_config(dataset, *, configuration: str, fold: int | str, budget: str | float | None, epochs: int | None,
                   iterations_per_epoch: int | None, val_iterations: int | None, schedule: str | None,
                   preprocessed_dir: str | os.PathLike, augmentation: AugmentationConfig, on_cpu: bool,
                   **settings) -> TrainingConfig:
    """A run's :class:`TrainingConfig` from :func:`tutorseg.train_fold`'s arguments.

    The named schedule fills what is not given, and the device decides the epoch size when nothing else does.

    Raises:
        TrainingError: both or neither of ``budget`` and ``epochs``, or fewer than 1 epoch.
    """
    import torch

    from tutorseg import __version__

    if schedule is not None:
        named = get_schedule(schedule)
        budget = budget if budget is not None else named.budget
        epochs = epochs if epochs is not None else named.epochs
        iterations_per_epoch = iterations_per_epoch or named.iterations_per_epoch
        val_iterations = val_iterations or named.val_iterations
    if budget is not None and epochs is not None:
        raise TrainingError("give either budget= (wall clock, e.g. '20min') or epochs=, not both")
    if budget is None and epochs is None:
        raise TrainingError("say how long to train: budget='20min' (the schedule is stretched over it), "
                                  "epochs=N, or schedule= one of the named schedules (tutorseg.training.SCHEDULES)")
    if epochs is not None and int(epochs) < 1:
        raise TrainingError(f"epochs must be at least 1, got {epochs}")
    default_iterations, default_val = default_epoch_size(on_cpu)
    return TrainingConfig(
        dataset_dir=str(dataset.root), dataset_name=dataset.name, configuration=configuration, fold=fold,
        dataset_source=str(source) if (source := copied_from(dataset.root)) is not None else None,
        budget_seconds=parse_budget(budget) if budget is not None else None,
        epochs=int(epochs) if epochs is not None else None,
        iterations_per_epoch=iterations_per_epoch or default_iterations,
        val_iterations=val_iterations or default_val,
        preprocessed_dir=str(preprocessed_dir), augmentation=augmentation, budget=budget, schedule=schedule,
        epoch_size_from_device=iterations_per_epoch is None and val_iterations is None,
        tutorseg_version=__version__, torch_version=torch.__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), **settings)
