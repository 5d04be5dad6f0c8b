"""Training one fold: ``train_fold`` sets a run folder up, ``resume`` continues one; both run the same epochs.

One epoch (nnU-Net's ``run_training``):

1. ``iterations_per_epoch`` training steps: sample a batch from the cases in memory (one third forced to contain
   foreground), augment it on the training device, forward under autocast, Dice + CE on every deep-supervision
   output, backward, clip the gradient norm at 12, SGD step. The learning rate follows the poly schedule, over epochs
   or over the wall-clock budget.
2. ``val_iterations`` batches of validation patches (no augmentation): validation loss and pseudo-Dice per class.
3. Save checkpoint_epoch_NNNN.pt (and checkpoint_best.pt when the EMA pseudo-Dice improved), history.json, progress.png,
   all atomically. A process killed at any point loses at most the epoch it was in.

At the end: checkpoint_final.pt and the full-case validation of the fold (``validation/summary.json``).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tutorseg.data.artefacts import to_json_types
from tutorseg.data.copies import copy_dataset
from tutorseg.data.dataset import Dataset, as_dataset
from tutorseg.data.jobs import progress_bar
from tutorseg.planning import ConfigurationPlan, Plan
from tutorseg.training.batches.augmentation import AugmentationConfig
from tutorseg.training.batches.prefetch import BatchPrefetcher
from tutorseg.training.budget.planner import estimated_steps
from tutorseg.training.budget.schedule import (
    GRAD_CLIP,
    INITIAL_LR,
    choose_momentum,
    format_seconds,
    make_optimizer,
    set_lr,
    warmup_poly_lr,
)
from tutorseg.training.cascade import relative_previous_stage, with_previous_stage
from tutorseg.training.hardware import distributed
from tutorseg.training.hardware.device import (
    DeviceSetup,
    TrainingOutOfMemoryError,
    choose_device,
    configure_backends,
    cpu_threads,
    first_line,
    is_out_of_memory,
    out_of_memory_error,
    release_gpu_memory,
)
from tutorseg.training.model.loss import DeepSupervisionLoss
from tutorseg.training.model.network import build_network, count_parameters, load_weights
from tutorseg.training.runs import checkpoint as ckpt
from tutorseg.training.runs.config import DEFAULT_SEED, TrainingConfig, TrainingError, resolve_config
from tutorseg.training.runs.folder import RunFolderWriter
from tutorseg.training.runs.history import (
    confusion_counts,
    dice_from_counts,
    nan_mean,
    new_history,
    one_class_phase,
    one_class_phase_news,
    update_ema,
)
from tutorseg.training.runs.lock import run_lock
from tutorseg.training.runs.progress import LivePlot
from tutorseg.training.runs.record import TrainingRecord
from tutorseg.training.transfer import load_pretrained, weights_file

if TYPE_CHECKING:
    from tutorseg.preprocessing.preprocessor import PreprocessedCase
    from tutorseg.training.batches.patch_sampling import PatchSampler
    from tutorseg.training.runs.tracking import Tracker

LOSS_SHOWN_EVERY = 10  # steps between loss updates of the progress bar

# --------------------------------------------------------------------------------------------------- the run state


@dataclass
class Run:
    """Everything one training run holds while it trains (plain container; the steps are functions below)."""

    run_dir: Path
    config: TrainingConfig
    plan: Plan
    configuration: ConfigurationPlan
    dataset: Dataset
    setup: DeviceSetup
    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss: DeepSupervisionLoss
    train_sampler: PatchSampler
    val_sampler: PatchSampler
    val_cases: list[PreprocessedCase]
    augmentation: AugmentationConfig
    numpy_rng: np.random.Generator
    torch_generator: torch.Generator  # the augmentation's per-sample decisions, on the CPU (read without a GPU wait)
    history: dict
    live_plot: LivePlot
    writer: RunFolderWriter  # the run folder's files, with a local fallback while the folder (Drive) is away
    epoch: int = 0
    iterations: int = 0
    elapsed: float = 0.0
    best_ema: float | None = None
    best_epoch: int | None = None
    tracker: Tracker | None = None
    field_generator: torch.Generator | None = None  # on a GPU: the augmentation's noise fields, drawn there
    prefetcher: BatchPrefetcher | None = None  # while the loop runs, on a GPU (or when asked for)
    n_train_cases: int = 0
    data_access: str = ""  # why the cases are held in memory or read from disk
    dist: distributed.Distributed | None = None  # one of several processes training this fold (torchrun), or None
    ddp_network: torch.nn.Module | None = None  # the network in DistributedDataParallel, when dist is set

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder (the only one without DDP; rank 0 with it)."""
        return self.dist is None or self.dist.is_main

    @property
    def n_classes(self) -> int:
        """The network's outputs: the classes, background included, the ignore label not; or one per region."""
        return self.plan.n_outputs

    @property
    def n_inputs(self) -> int:
        """The network's input channels: the image's, plus one per foreground class in a cascade's second stage."""
        return int(self.train_sampler.n_channels) + (len(self.foreground) if self.configuration.previous_stage else 0)

    @property
    def foreground(self) -> list[int]:
        """The foreground label values, ascending (a cascade's one-hot channels come in this order)."""
        return sorted(v for v in self.plan.class_labels.values() if v != 0)

    def log(self, message: str, *, echo: bool = True) -> None:
        """Append a time-stamped line to log.txt (and print it); while the run folder is away, to its local copy."""
        if not self.is_main:
            return
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        self.writer.append("log.txt", f"{stamp}  {message}\n")
        if echo and self.config.verbose:
            print(message, flush=True)

    def announce(self, message: str) -> None:
        """A sentence the learner must see even under a progress bar (the run folder went away, came back)."""
        self.log(message, echo=False)
        print(f"tutorseg: {message}", flush=True)


# --------------------------------------------------------------------------------------------------- setting up


def _load_plan(plan: Plan | str | os.PathLike) -> Plan:
    if isinstance(plan, Plan):
        return plan
    path = Path(plan)
    if not path.is_file():
        raise TrainingError(f"no plan at {path}; make one with tutorseg.plan(tutorseg.fingerprint(dataset)) and "
                            "plan.save(path), or pass the Plan object")
    return Plan.load(path)


def _prepare_data(dataset: Dataset, plan: Plan, configuration: ConfigurationPlan, config: TrainingConfig,
                  splits_path: Path, progress: bool) -> tuple[list[PreprocessedCase], list[PreprocessedCase], str]:
    """Preprocess (idempotent), make or read the splits, open the fold's cases.

    Returns:
        (training cases, validation cases, why they are held in memory or read from disk).
    """
    from tutorseg.preprocessing.preprocessor import preprocess
    from tutorseg.training.batches.splits import fold_cases, load_splits, make_splits, save_splits

    preprocessed = preprocess(dataset, plan, configuration.name, config.preprocessed_dir, progress=progress,
                              verbose=config.verbose)
    case_ids = list(preprocessed.case_ids)
    if splits_path.is_file():
        splits = load_splits(splits_path, case_ids)
    else:
        splits = make_splits(case_ids) if config.fold != "all" or len(case_ids) >= 5 else [
            {"train": case_ids, "val": []}]
        save_splits(splits, splits_path)
    train_ids, val_ids = fold_cases(splits, config.fold, case_ids)
    cases = preprocessed.load_cases([*train_ids, *val_ids], in_memory=config.cases_in_memory)  # None: by size
    if configuration.previous_stage:
        cases = _with_previous_stage(cases, dataset, plan, configuration, config, splits_path.parent)
    train_cases, val_cases = cases[:len(train_ids)], cases[len(train_ids):]
    return train_cases, val_cases, preprocessed.last_memory_decision


def _with_previous_stage(cases: list[PreprocessedCase], dataset: Dataset, plan: Plan, configuration,
                         config: TrainingConfig, run_dir: Path) -> list[PreprocessedCase]:
    """The cases with the cascade's first-stage segmentation (out of fold) on their grid (``case.previous``)."""
    from tutorseg.data.imageio import read_image
    from tutorseg.preprocessing.preprocessor import label_on_grid
    from tutorseg.training.cascade import out_of_fold_segmentations, previous_stage_root

    root = previous_stage_root(run_dir, config.previous_stage_dir)
    files = out_of_fold_segmentations(root, [c.case_id for c in cases])
    return [replace(case, previous=label_on_grid(read_image(files[case.case_id]).array[0],
                                                             case.properties, plan, configuration))
            for case in cases]


def _samplers(configuration, train_cases, val_cases, augmentation, seed: int, dist=None):
    from tutorseg.training.batches.augmentation import sampling_patch_size
    from tutorseg.training.batches.patch_sampling import PatchSampler

    patch = tuple(configuration.patch_size)
    slice_axis = configuration.slice_axis if len(patch) == 2 and train_cases[0].label.ndim == 3 else None
    share = distributed.batch_share(configuration.batch_size, dist)  # all of each batch, or this process's part
    train = PatchSampler(train_cases, patch_size=patch, batch_size=configuration.batch_size,
                         sample_size=sampling_patch_size(patch, augmentation), slice_axis=slice_axis, seed=seed,
                         share=share, keep_outside=True)
    # nnU-Net validates on patches drawn like training patches (same oversampling), without augmentation;
    # with fold "all" there is no validation set and the training cases stand in (as nnU-Net does).
    val = PatchSampler(val_cases or train_cases, patch_size=patch, batch_size=configuration.batch_size,
                       slice_axis=slice_axis, seed=seed + 1, share=share)
    return train, val


def _build_run(run_dir: Path, config: TrainingConfig, plan: Plan, dataset: Dataset, *, progress: bool,
               dist: distributed.Distributed | None = None) -> Run:
    configuration = plan[config.configuration]
    setup = choose_device(config.device, config.precision)
    configure_backends(setup)
    if setup.torch_device.type == "cpu":
        threads = config.num_threads or cpu_threads()
        torch.set_num_threads(distributed.cpu_threads_per_process(dist, threads) if dist else threads)
    augmentation = config.augmentation
    with distributed.main_first(dist):  # rank 0 preprocesses and writes the splits; the others then read them
        train_cases, val_cases, data_access = _prepare_data(dataset, plan, configuration, config,
                                                            run_dir / "splits_final.json", progress)
    torch.manual_seed(config.seed)
    n_outputs = plan.n_outputs  # a class each (the ignore label is none), or a region each
    n_previous = len(plan.class_labels) - 1 if configuration.previous_stage else 0  # a cascade's one-hot input
    network = build_network(configuration, train_cases[0].data.shape[0] + n_previous, n_outputs).to(setup.torch_device)
    if setup.torch_device.type == "cpu":
        # channels-last memory layout: on 2 CPU cores it made a step of nnU-Net's default Hippocampus plan ~10 %
        # faster (bench/train.md). Not on CUDA: InstanceNorm returns the standard layout there, so every block
        # would convert back and forth (+24 % CUDA time measured on an nnU-Net network, pytorch/pytorch#59168);
        # bench/gpu.py measures both on a GPU.
        layout = torch.channels_last_3d if configuration.network_dims == 3 else torch.channels_last
        network = network.to(memory_format=layout)  # type: ignore[call-overload]
    train_sampler, val_sampler = _samplers(configuration, train_cases, val_cases, augmentation, config.seed, dist)
    rank = dist.rank if dist else 0
    # the augmentation's draws differ between processes (their samples are different ones); sampling does not
    generator = torch.Generator().manual_seed(config.seed + 1009 * rank)
    field_generator = (torch.Generator(device=setup.torch_device).manual_seed(config.seed + 1)
                       if setup.torch_device.type == "cuda" else None)
    names = list(plan.targets)  # the pseudo-Dice's classes (or regions)
    writer = RunFolderWriter(run_dir, announce=lambda message: run.announce(message))
    ddp_network = distributed.wrap(network, setup.torch_device) if dist else None
    run = Run(run_dir=run_dir, config=config, plan=plan, configuration=configuration, dataset=dataset, setup=setup,
              network=network, optimizer=make_optimizer(network, momentum=config.momentum),
              scaler=setup.grad_scaler(),
              loss=DeepSupervisionLoss(network.n_outputs, batch_dice=configuration.batch_dice,
                                        distributed=dist is not None, ignore_label=plan.ignore_label,
                                        regions=list(plan.regions.values()) or None),
              train_sampler=train_sampler, val_sampler=val_sampler, val_cases=val_cases, augmentation=augmentation,
              numpy_rng=np.random.default_rng(config.seed), torch_generator=generator, field_generator=field_generator,
              history=new_history(names),
              live_plot=LivePlot(show=progress), writer=writer, n_train_cases=len(train_cases),
              data_access=data_access, dist=dist, ddp_network=ddp_network)
    return run


# --------------------------------------------------------------------------------------------------- one epoch


def learning_rate(run: Run, epoch_start_elapsed: float, epoch_clock: float) -> tuple[float, float]:
    """(lr, progress) now: poly over epochs (set once per epoch, as nnU-Net) or over the budget (every step)."""
    progress = run.config.fraction_done(epoch_start_elapsed + time.perf_counter() - epoch_clock, run.epoch)
    progress = distributed.from_main(run.dist, progress)  # every process steps with rank 0's clock
    return warmup_poly_lr(progress, initial_lr=run.config.initial_lr, warmup=run.config.warmup), progress


def next_training_batch(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample on the CPU (slicing arrays in memory), move to the device, augment there as one batched operation.

    With a prefetcher (on a GPU) the batch was cut and copied while the previous step ran.
    """
    from tutorseg.training.batches.augmentation import augment_batch

    if run.prefetcher is not None:
        images, labels = run.prefetcher.next_batch()
    else:
        images, labels = run.train_sampler.next_batch()
        images, labels = images.to(run.setup.torch_device), labels.to(run.setup.torch_device)
    masked = [c for c, masked in enumerate(run.configuration.use_mask_for_norm) if masked]
    images, labels = augment_batch(images, labels, patch_size=run.configuration.patch_size, config=run.augmentation,
                                   generator=run.torch_generator, field_generator=run.field_generator,
                                   mask_channels=masked)
    if run.configuration.previous_stage:  # the cascade: the first stage's segmentation becomes input channels
        images, labels = with_previous_stage(images, labels, run.foreground, rng=run.numpy_rng)
    return images, labels


def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One SGD step; returns the loss, detached, where it was computed (reading it would wait for the GPU).

    Mixed precision on CUDA with a GradScaler; gradient norm clipped at 12.
    """
    run.optimizer.zero_grad(set_to_none=True)
    with run.setup.autocast():
        outputs = (run.ddp_network or run.network)(images)  # DDP averages the gradients over the processes
    loss = run.loss(outputs, labels)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.network.parameters(), GRAD_CLIP)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss.detach()


def train_epoch(run: Run, *, progress: bool) -> dict:
    """The training half of an epoch; stops early when the budget is used up."""
    run.network.train()
    epoch_clock = time.perf_counter()
    start_elapsed = run.elapsed
    losses, data_seconds, lr = [], 0.0, run.optimizer.param_groups[0]["lr"]
    bar = progress_bar(run.config.iterations_per_epoch, enabled=progress, description=f"epoch {run.epoch}",
                       unit="step", leave=False)
    for _ in range(run.config.iterations_per_epoch):
        lr, fraction = learning_rate(run, start_elapsed, epoch_clock)
        if run.config.stops_by_budget and fraction >= 1.0:
            break
        set_lr(run.optimizer, lr)
        tick = time.perf_counter()
        images, labels = next_training_batch(run)
        data_seconds += time.perf_counter() - tick
        losses.append(train_step(run, images, labels))
        run.iterations += 1
        if len(losses) % LOSS_SHOWN_EVERY == 1:  # reading the loss waits for the GPU: not at every step
            bar.set_postfix(loss=f"{float(losses[-1]):.3f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
    bar.close()
    losses_read = torch.stack(losses).float().tolist() if losses else []  # one wait for the GPU per epoch
    train_loss = nan_mean(losses_read)
    if run.dist is not None:  # the mean over the processes' shares of the batches
        train_loss = float(distributed.sum_over_processes(run.dist, torch.tensor([train_loss]))) / run.dist.world_size
    return {"train_loss": train_loss, "lr": lr, "iterations": len(losses), "data_seconds": data_seconds,
            "train_seconds": time.perf_counter() - epoch_clock}


@torch.no_grad()
def validate_epoch(run: Run) -> dict:
    """nnU-Net's online evaluation: loss and pseudo-Dice on ``val_iterations`` batches of validation patches."""
    run.network.eval()
    regions = list(run.plan.regions.values()) or None
    counts = torch.zeros(3, len(run.plan.targets), dtype=torch.float64)
    losses = []
    device = run.setup.torch_device
    for _ in range(run.config.val_iterations):
        images, labels = run.val_sampler.next_batch()
        images, labels = images.to(device), labels.to(device)
        if run.configuration.previous_stage:
            images, labels = with_previous_stage(images, labels, run.foreground)
        with run.setup.autocast():
            logits = run.network(images)
        losses.append(float(run.loss(logits, labels)))
        counts += confusion_counts(logits, labels, run.n_classes, ignore=run.plan.ignore_label, regions=regions)
    val_loss = nan_mean(losses)
    if run.dist is not None:  # every process validated its share of the batches: add them up
        counts = distributed.sum_over_processes(run.dist, counts)
        val_loss = float(distributed.sum_over_processes(run.dist, torch.tensor([val_loss]))) / run.dist.world_size
    dice = dice_from_counts(counts)
    return {"val_loss": val_loss, "pseudo_dice": dice, "mean_pseudo_dice": nan_mean(dice)}


def record_epoch(run: Run, train: dict, val: dict, epoch_seconds: float) -> bool:
    """Append the epoch to the history; True when its EMA pseudo-Dice is the best so far."""
    h = run.history
    ema = update_ema(h["ema_pseudo_dice"][-1] if h["ema_pseudo_dice"] else None, val["mean_pseudo_dice"])
    values = {"epoch": run.epoch, "train_loss": train["train_loss"], "val_loss": val["val_loss"],
              "pseudo_dice": val["pseudo_dice"], "mean_pseudo_dice": val["mean_pseudo_dice"], "ema_pseudo_dice": ema,
              "lr": train["lr"], "iterations": train["iterations"], "epoch_seconds": epoch_seconds,
              "elapsed_seconds": run.elapsed, "data_seconds": train["data_seconds"],
              "train_seconds": train["train_seconds"]}
    for key, value in values.items():
        h[key].append(value)
    improved = ema == ema and (run.best_ema is None or ema > run.best_ema)
    if improved:
        run.best_ema, run.best_epoch = ema, run.epoch
    return improved


# --------------------------------------------------------------------------------------------------- saving


def checkpoint_state(run: Run) -> dict:
    """What a checkpoint holds: only tensors and plain types (loads with ``weights_only=True``)."""
    return {
        "format": 1,
        "network": run.network.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": run.epoch,
        "iterations": run.iterations,
        "elapsed_seconds": run.elapsed,
        "best_ema_pseudo_dice": run.best_ema,
        "best_epoch": run.best_epoch,
        "history": to_json_types(run.history),
        "rng": ckpt.capture_rng(run.numpy_rng, run.torch_generator),
        **({"field_generator": run.field_generator.get_state()} if run.field_generator is not None else {}),
        # with a prefetcher, the sampler has already cut batches beyond the last one used: save the state after
        # the last one used, so that a resumed run draws the same batches
        "train_sampler": run.prefetcher.consumed_state if run.prefetcher else run.train_sampler.state_dict(),
        "val_sampler": run.val_sampler.state_dict(),
        "configuration": run.configuration.name,
        "n_channels": run.n_inputs,  # the image's channels, and a cascade's first-stage classes
        "n_classes": run.n_classes,
    }


def save_epoch(run: Run, improved: bool) -> Path:
    """checkpoint_epoch_NNNN.pt, checkpoint_best.pt when improved, then history.json and progress.png (all atomic).

    The checkpoint goes first, so history.json never shows an epoch that a resume would not find. Each epoch's
    checkpoint has its own name, the newest two are kept (why: :data:`tutorseg.training.runs.checkpoint.EPOCH_CHECKPOINT`).

    Returns:
        The epoch's checkpoint.
    """
    if not run.is_main:  # rank 0 writes the run folder
        return run.run_dir / ckpt.EPOCH_CHECKPOINT.format(epoch=run.epoch)
    state = checkpoint_state(run)
    path = run.writer.write(ckpt.EPOCH_CHECKPOINT.format(epoch=run.epoch), lambda p: ckpt.save_checkpoint(p, state))
    ckpt.prune_epoch_checkpoints(path.parent)
    if improved:
        run.writer.write(ckpt.CHECKPOINT_NAMES["best"], lambda p: ckpt.save_checkpoint(p, state))
    history = to_json_types(run.history)
    run.writer.write("history.json", lambda p: ckpt.write_json(p, history))
    png = run.live_plot.update(run.history)
    if png is not None:
        run.writer.write("progress.png", lambda p: ckpt.write_bytes(p, png))
    return path


def restore_state(run: Run, state: dict) -> list[str]:
    """Put a checkpoint's model, optimiser, scaler, counters, history and random states back into ``run``.

    ``state`` is loaded to the CPU; ``load_state_dict`` moves weights and optimiser moments to the run's device,
    so a run saved on a GPU resumes on a CPU and the other way round.

    Returns:
        Sentences for the log about what could not come back as it was (resuming on another kind of device).
    """
    notes = []
    load_weights(run.network, state["network"], source=run.run_dir)
    try:
        run.optimizer.load_state_dict(state["optimizer"])
    except ValueError as exc:  # a run started with tutorseg 0.1.0, whose network had fewer parameters
        raise TrainingError(f"{run.run_dir}: its optimiser state does not fit this version's network ({exc}); "
                            "start the run again in a new folder") from None
    if state["scaler"] and run.scaler.is_enabled():
        run.scaler.load_state_dict(state["scaler"])
    elif run.scaler.is_enabled():  # saved without float16 (a CPU run), resumed with it (a GPU)
        notes.append("the float16 loss scale starts afresh: the run was saved without mixed precision")
    run.epoch, run.iterations, run.elapsed = state["epoch"], state["iterations"], state["elapsed_seconds"]
    run.best_ema, run.best_epoch = state["best_ema_pseudo_dice"], state["best_epoch"]
    history = state["history"]
    run.history = {k: [float("nan") if v is None else v for v in vs] if k in ("train_loss", "val_loss",
                   "mean_pseudo_dice", "ema_pseudo_dice") else vs for k, vs in history.items()}
    rng_notes = ckpt.restore_rng(state["rng"], run.numpy_rng, run.torch_generator)
    if any("random generator" in note for note in rng_notes):
        run.torch_generator.manual_seed(run.config.seed + run.iterations)  # not the first epoch's draws again
    if run.field_generator is not None:  # a GPU run's noise fields: their state when saved on a GPU, else new
        if "field_generator" in state:
            run.field_generator.set_state(state["field_generator"].cpu())
        else:
            run.field_generator.manual_seed(run.config.seed + 1 + run.iterations)
    run.train_sampler.load_state_dict(state["train_sampler"])
    run.val_sampler.load_state_dict(state["val_sampler"])
    return notes + rng_notes


# --------------------------------------------------------------------------------------------------- the loop


def _finished(run: Run) -> bool:
    return distributed.from_main(run.dist, run.config.fraction_done(run.elapsed, run.epoch)) >= 1.0


def _epoch_metrics(run: Run) -> dict:
    h = run.history
    metrics = {k: h[k][-1] for k in ("train_loss", "val_loss", "mean_pseudo_dice", "ema_pseudo_dice", "lr",
                                     "epoch_seconds", "data_seconds")}
    for name, value in zip(h["class_names"], h["pseudo_dice"][-1]):
        metrics[f"pseudo_dice/{name}"] = value
    return metrics


def _describe_epoch(run: Run) -> str:
    h = run.history
    dice = ", ".join("-" if v != v else f"{v:.3f}" for v in h["pseudo_dice"][-1])
    # epochs are numbered from 0, as in history.json and the progress bar; run.epoch counts the epochs done
    done = run.config.progress_text(run.elapsed, run.epoch)
    return (f"epoch {h['epoch'][-1]} ({done}): train loss {h['train_loss'][-1]:.4f}, val loss {h['val_loss'][-1]:.4f}, "
            f"pseudo-Dice [{dice}], EMA {h['ema_pseudo_dice'][-1]:.4f}, lr {h['lr'][-1]:.2e}, "
            f"{h['epoch_seconds'][-1]:.1f} s ({h['data_seconds'][-1]:.1f} s data)")


def _say_one_class_phase(run: Run, *, echo: bool) -> None:
    """Log when the run enters the one-class phase (what it means, the first time) and when it leaves it."""
    news = one_class_phase_news(run.history)
    if news:
        run.log(news, echo=echo)


def _loop(run: Run, *, progress: bool) -> None:
    if run.config.prefetch or (run.config.prefetch is None and run.setup.torch_device.type == "cuda"):
        run.prefetcher = BatchPrefetcher(run.train_sampler, run.setup.torch_device)
    try:
        _train_until_done(run, progress=progress)
    finally:
        if run.prefetcher is not None:
            run.prefetcher.close()
            run.prefetcher = None


def _train_until_done(run: Run, *, progress: bool) -> None:
    while not _finished(run):
        clock = time.perf_counter()
        error = None
        try:
            train = train_epoch(run, progress=progress)
            val = validate_epoch(run)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            error = out_of_memory_error(run.configuration, run.setup.device, exc)
        if error is not None:  # raised here, outside the except block: the failed step's tensors are freed
            run.log(f"out of memory in epoch {run.epoch}")
            run.optimizer.zero_grad(set_to_none=True)
            release_gpu_memory()
            raise error
        seconds = time.perf_counter() - clock
        run.elapsed += seconds
        improved = record_epoch(run, train, val, seconds)
        run.epoch += 1
        saved = save_epoch(run, improved)
        run.log(_describe_epoch(run) + ("  (new best)" if improved else "") + f"; saved {saved.name}",
                echo=not progress)
        _say_one_class_phase(run, echo=not progress)
        if run.tracker is not None:
            run.tracker.log(_epoch_metrics(run), step=run.epoch)


def _finish(run: Run, *, progress: bool) -> TrainingRecord:
    from tutorseg.training.validation import validate_cases

    if not run.is_main:  # another process of a multi-GPU run: rank 0 saves and validates
        return TrainingRecord(
            run_dir=run.run_dir, dataset_name=run.dataset.name, configuration=run.configuration.name,
            fold=run.config.fold, epochs=run.epoch, iterations=run.iterations, elapsed_seconds=run.elapsed,
            stopped_by="budget" if run.config.stops_by_budget else "epochs", best_epoch=run.best_epoch,
            best_ema_pseudo_dice=run.best_ema, validation=None, device=f"{run.setup.device}/{run.setup.precision}",
            history=to_json_types(run.history))
    state = checkpoint_state(run)
    run.writer.write(ckpt.CHECKPOINT_NAMES["final"], lambda p: ckpt.save_checkpoint(p, state))
    run.writer.finish()  # everything in the run folder now, or a message saying where it is
    stopped_by = "budget" if run.config.stops_by_budget else "epochs"
    run.log(f"training done: {run.epoch} epochs, {run.iterations} iterations in {format_seconds(run.elapsed)} "
            f"(stopped by {stopped_by}); checkpoint_final.pt written")
    ended_in = one_class_phase(run.history)
    if ended_in:
        run.log(f"the run ended in the {ended_in}: the suppressed class will score ~0. Train longer (a larger "
                "budget), or see docs/training.md, 'The one-class phase'")
    summary = None
    if run.config.validate and run.val_cases:
        clock = time.perf_counter()
        error = None
        try:
            validated = validate_cases(run.network, run.val_cases, run.dataset, run.plan, run.configuration,
                                       run.run_dir / "validation", device=run.setup.torch_device,
                                       tta=run.config.validation_tta,
                                       save_probabilities=run.config.save_probabilities, progress=progress)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            error = TrainingOutOfMemoryError(
                f"the GPU ({run.setup.device}) ran out of memory in the full-case validation at the end; the trained "
                f"model is saved ({run.run_dir / ckpt.CHECKPOINT_NAMES['final']}). Validate it with less memory: "
                f"tutorseg predict {run.run_dir} -i VALIDATION_IMAGES -o OUT --no-tta (or --device cpu), or train "
                f"with validation_tta=False. ({first_line(exc)})")
        if error is not None:
            run.log("out of memory in the final validation")
            release_gpu_memory()
            raise error
        summary = validated
        per_class = ", ".join(f"{k} {v:.4f}" for k, v in summary["mean_dice"].items() if v is not None)
        run.log(f"full-case validation of {summary['n_cases']} cases in {time.perf_counter() - clock:.0f} s: "
                f"mean foreground Dice {summary['mean_foreground_dice']:.4f} ({per_class})")
        if run.tracker is not None:
            run.tracker.summary({"validation/mean_foreground_dice": summary["mean_foreground_dice"],
                                 **{f"validation/dice/{k}": v for k, v in summary["mean_dice"].items()}})
    if run.tracker is not None:
        run.tracker.finish()
    record = TrainingRecord(
        run_dir=run.run_dir, dataset_name=run.dataset.name, configuration=run.configuration.name,
        fold=run.config.fold, epochs=run.epoch, iterations=run.iterations, elapsed_seconds=run.elapsed,
        stopped_by=stopped_by, best_epoch=run.best_epoch, best_ema_pseudo_dice=run.best_ema, validation=summary,
        device=f"{run.setup.device}/{run.setup.precision}", history=to_json_types(run.history))
    run.writer.write("training_record.json", lambda p: record.save(p))
    return record


def _start(run: Run, *, resumed: bool) -> None:
    n_params = count_parameters(run.network)
    if run.setup.note:
        run.log(run.setup.note)
    c = run.configuration
    limit = run.config.length_text()
    run.log(f"{'resuming' if resumed else 'training'} {run.dataset.name} {c.name} fold {run.config.fold} "
            f"at epoch {run.epoch}: {run.n_train_cases} training / {len(run.val_cases)} validation cases, "
            f"patch {list(c.patch_size)}, batch {c.batch_size}, {c.network} of {n_params / 1e6:.1f} M parameters, "
            f"{limit}, "
            f"{run.config.iterations_per_epoch} iterations per epoch, on {run.setup.device} "
            f"({run.setup.precision})")
    if run.config.momentum_reason:  # runs started before tutorseg chose it have none: nnU-Net's 0.99
        run.log(f"optimiser: SGD, Nesterov, {run.config.momentum_reason}")
    if run.data_access:
        run.log(f"data: {run.data_access}")
    if run.dist is not None:
        run.log(f"{run.dist.world_size} processes (DistributedDataParallel): each cuts "
                f"{len(run.train_sampler.share)} of every batch of {c.batch_size}, gradients averaged")
    if run.config.wandb and run.is_main:
        from tutorseg.training.runs.tracking import start_tracking

        settings = {k: v for k, v in run.config.to_dict().items() if k != "augmentation"}
        run.tracker = start_tracking(run.run_dir, settings)


# --------------------------------------------------------------------------------------------------- public


def train_fold(dataset, plan, *, fold: int | str = 0, out_dir, configuration: str | None = None,
               budget: str | float | None = None, epochs: int | None = None, iterations_per_epoch: int | None = None,
               val_iterations: int | None = None, schedule: str | None = None, preprocessed_dir=None,
               device: str | None = None, precision: str = "auto", num_threads: int | None = None,
               prefetch: bool | None = None, cases_in_memory: bool | None = None, augmentation=None,
               wandb: bool = False,
               progress: bool = True, seed: int = DEFAULT_SEED, validate: bool = True, validation_tta: bool = True,
               save_probabilities: bool = False, previous_stage=None, init_from=None, initial_lr: float = INITIAL_LR,
               warmup: float = 0.0, momentum: float | None = None, verbose: bool = True) -> TrainingRecord:
    """Train one cross-validation fold as nnU-Net does, into a run folder that survives interruptions.

    Args:
        dataset: a :class:`tutorseg.data.dataset.Dataset` or its folder.
        plan: a :class:`tutorseg.planning.Plan` or its JSON file.
        fold: 0-4 (nnU-Net's 5-fold splits, seed 12345), or ``"all"`` (every labelled case trains, no validation).
        out_dir: the run folder (e.g. on Google Drive in Colab); must not hold a run already (use :func:`resume`).
        configuration: ``"3d_fullres"`` (default where planned), ``"2d"``, ``"3d_lowres"``, or, where the plan has a
            cascade, ``"3d_cascade_fullres"`` (after the five ``3d_lowres`` folds: :mod:`tutorseg.training.cascade`).
        budget: wall-clock training time (``"20min"``, ``"1h30m"``, ``"90s"`` or seconds); the poly learning rate
            is stretched over it, so the run ends converged.
        epochs: train a number of epochs instead (nnU-Net: 1000).
        iterations_per_epoch: steps between validations and checkpoints (nnU-Net: 250; CPU default 50).
        val_iterations: validation batches per epoch for the pseudo-Dice (nnU-Net: 50; CPU default 10).
        schedule: a named schedule from :data:`tutorseg.training.SCHEDULES` (fills what is not given).
        preprocessed_dir: where preprocessed cases are kept (default ``out_dir/preprocessed``; share it across folds).
        device: ``None`` (the GPU if there is one, else the CPU) or a torch device string.
        precision: ``"auto"`` (fp16 on CUDA, bf16 on CPUs with native bfloat16, else fp32), or explicit.
        num_threads: CPU threads for training (default: the cores the machine's current load leaves idle, at
            least 1: on a shared machine every operation otherwise waits for the thread that lost its core).
        prefetch: cut the next batches in a background thread and copy them to the GPU while it computes
            (:mod:`tutorseg.training.batches.prefetch`); default: on a GPU, not on a CPU (there the cores are busy training).
        cases_in_memory: hold the fold's preprocessed cases in memory (fastest) or read each patch from the
            compressed files on disk (any dataset size, :mod:`tutorseg.preprocessing.storage`); default: in memory
            when they take at most 30 % of the memory available, and the log says which.
        augmentation: a :class:`tutorseg.training.batches.augmentation.AugmentationConfig` (default: nnU-Net's).
        wandb: log to Weights & Biases (``tutorseg.training.runs.tracking``).
        progress: progress bar and, in a notebook, the live plot.
        seed: seed of sampling, augmentation and initialisation.
        validate: run the full-case validation of the fold at the end.
        validation_tta: mirroring test-time augmentation in that validation (nnU-Net: on).
        save_probabilities: that validation also writes each case's class probabilities (``validation/CASE.npz``,
            nnU-Net's ``--npz``): :func:`tutorseg.find_best_configuration` needs them to score ensembles.
        previous_stage: for ``3d_cascade_fullres``, the folder of the ``3d_lowres`` fold folders (default:
            ``../../3d_lowres`` from ``out_dir``, nnU-Net's results layout ``RUN_ROOT/CONFIGURATION/fold_<k>``).
        init_from: start from a trained model (a run folder or checkpoint) instead of random weights: every weight
            but the output layers' is taken over (nnU-Net's ``-pretrained_weights``; :mod:`tutorseg.training.transfer`).
        initial_lr: the learning rate the poly schedule starts from (nnU-Net: 1e-2; when fine-tuning often lower).
        warmup: share of the training over which the learning rate first ramps up from 0 (e.g. 0.05 for fine-tuning).
        momentum: SGD's momentum; default: nnU-Net's 0.99 for a run of 5,000 steps or more, 0.9 for a shorter one,
            where 0.99 leaves many runs in the one-class phase (:func:`tutorseg.training.budget.schedule.choose_momentum`;
            a budget run's steps are the budget plan's estimate).
        verbose: print what happens (also written to log.txt).

    Returns:
        The :class:`TrainingRecord` (also in ``out_dir/training_record.json``).

    Raises:
        TrainingError: bad settings, or ``out_dir`` already holds a run.
        TrainingOutOfMemoryError: the GPU ran out of memory (the message says which plan values to lower).
    """
    dist = distributed.from_environment()  # started by torchrun as one of several processes
    if dist is not None:
        device = distributed.start(dist, device)
    dataset = as_dataset(dataset)
    plan = _load_plan(plan)
    configuration = configuration or plan.default_configuration
    if configuration not in plan.trainable_configurations:
        cascade = ("" if configuration != "3d_cascade_fullres" else " (nnU-Net plans the cascade only when the "
                   "3d_fullres patch covers less than a quarter of the median image)")
        raise TrainingError(f"the plan has no configuration {configuration!r}{cascade}; it has "
                            f"{', '.join(plan.trainable_configurations)}")
    if str(fold) != "all" and not (isinstance(fold, int) or str(fold).isdigit()):
        raise TrainingError(f"fold must be 0-4 or 'all', not {fold!r}")
    fold = "all" if str(fold) == "all" else int(fold)
    run_dir = Path(out_dir).expanduser()
    if isinstance(fold, int) and not 0 <= fold < 5 and not (run_dir / "splits_final.json").is_file():
        raise TrainingError(f"fold {fold} does not exist: nnU-Net's splits have five folds, 0-4 (or 'all'); for "
                            "other splits put your splits_final.json into the run folder first")
    existing = ckpt.latest_checkpoints(run_dir)
    if existing:
        raise TrainingError(f"{run_dir} already holds a run ({existing[0].name}); continue it with "
                            "tutorseg.resume(run_dir) (tutorseg train --resume) or choose a new out_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    augmentation = (augmentation or AugmentationConfig()).replace(
        anisotropy_threshold=plan.anisotropy_threshold)  # "dummy 2D" by the plan's rule
    on_cpu = choose_device(device, precision).torch_device.type == "cpu"
    config = resolve_config(dataset, configuration=configuration, fold=fold, budget=budget, epochs=epochs,
                            iterations_per_epoch=iterations_per_epoch, val_iterations=val_iterations,
                            schedule=schedule, preprocessed_dir=preprocessed_dir or run_dir / "preprocessed",
                            augmentation=augmentation, on_cpu=on_cpu, seed=int(seed), device=device,
                            precision=precision, num_threads=num_threads, prefetch=prefetch,
                            cases_in_memory=cases_in_memory, validate=bool(validate),
                            validation_tta=bool(validation_tta), save_probabilities=bool(save_probabilities),
                            previous_stage_dir=(relative_previous_stage(run_dir, previous_stage)
                                                if previous_stage is not None and plan[configuration].previous_stage
                                                else None),
                            init_from=str(weights_file(init_from).resolve()) if init_from is not None else None,
                            initial_lr=float(initial_lr), warmup=float(warmup), wandb=bool(wandb), verbose=verbose)
    config = config.replace(**_momentum(config, plan, momentum))
    main = dist is None or dist.is_main
    with run_lock(run_dir) if main else contextlib.nullcontext():  # the other processes leave the folder to rank 0
        try:
            if main:
                plan.save(run_dir / "plan.json")
                config.save(run_dir / "config.json")
            run = _build_run(run_dir, config, plan, dataset, progress=progress and main, dist=dist)
            if main and run.writer.discard_leftovers():  # files of an earlier run here: never mixed into this one
                run.log(f"removed what an earlier run in {run_dir} had left in {run.writer.fallback}")
            if config.init_from is not None:  # every process: DDP's copies start equal
                run.log(str(load_pretrained(run.network, config.init_from)))
            _start(run, resumed=False)
            _loop(run, progress=progress and main)
            return _finish(run, progress=progress and main)
        finally:
            if dist is not None:
                distributed.stop()


def _momentum(config: TrainingConfig, plan: Plan, momentum: float | None) -> dict:
    """``momentum`` and ``momentum_reason`` for the run: as given, or by its length (:func:`choose_momentum`)."""
    if momentum is not None:
        return {"momentum": float(momentum), "momentum_reason": f"momentum {momentum:g}, as given"}
    steps = (config.epochs * config.iterations_per_epoch if config.epochs is not None
             else estimated_steps(plan, config.configuration, config.budget_seconds or 0.0))
    chosen, reason = choose_momentum(steps)
    return {"momentum": chosen, "momentum_reason": reason}


def _resume_device(config: TrainingConfig, device: str | None) -> str | None:
    """The device to go on with when it is not the recorded one (asked for, or the recorded GPU is gone), else None.

    A GPU run resumes on the CPU when the GPU is gone (a Colab session without GPU quota); the log says so.
    """
    import torch

    if device is not None:
        return device
    if config.device is not None and str(config.device).startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    return None


def resume(run_dir, *, dataset=None, progress: bool = True, device: str | None = None) -> TrainingRecord:
    """Continue a run where it stopped; the epoch that was interrupted is trained again.

    Model, optimiser, scaler, epoch, elapsed budget, history and every random state come back from
    the newest checkpoint that loads (``checkpoint_epoch_NNNN.pt``).

    After a Colab disconnect the run folder (on Drive) is there but the machine is new: the local copy of the
    dataset and the preprocessed cases are gone. The dataset is then copied again from the folder it was copied
    from (recorded in ``config.json``), and missing preprocessed cases are made again.

    Args:
        run_dir: the run folder written by :func:`train_fold`.
        dataset: the dataset folder if it moved (default: where the run found it, or a fresh copy of its source).
        progress: progress bar and live plot.
        device: train on another device than recorded (e.g. the GPU came back); default: as recorded.

    Raises:
        TrainingError: the folder is not a run folder, or its dataset is gone (the message says what to pass).
    """
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "config.json").is_file():
        raise TrainingError(f"{run_dir} is not a training run folder (no config.json); start one with "
                            "tutorseg.train_fold(...)")
    config = TrainingConfig.load(run_dir / "config.json")
    dist = distributed.from_environment()  # started by torchrun as one of several processes
    if dist is not None:
        device = distributed.start(dist, device)
    main = dist is None or dist.is_main
    with run_lock(run_dir) if main else contextlib.nullcontext():
        try:
            return _resume_locked(run_dir, config, dataset, progress=progress and main, device=device, dist=dist)
        finally:
            if dist is not None:
                distributed.stop()


def _dataset_for_resume(run_dir: Path, config: TrainingConfig, dataset) -> Dataset:
    """The run's dataset: as given, where the run found it, or copied again from the folder it was copied from."""
    if dataset is None and Path(config.dataset_dir).is_dir():
        return as_dataset(config.dataset_dir)
    if dataset is None and config.dataset_source and Path(config.dataset_source).is_dir():
        copy, note = copy_dataset(config.dataset_source, Path(config.dataset_dir).parent)
        print(f"tutorseg: the dataset folder {config.dataset_dir} is gone (a new Colab machine?): {note}")
        return as_dataset(copy)
    if dataset is None:
        source = f" nor the folder it was copied from, {config.dataset_source}," if config.dataset_source else ""
        raise TrainingError(
            f"{run_dir} trained on {config.dataset_dir}, which is gone,{source} so the run cannot go on here. Pass "
            f"the dataset's folder: tutorseg.resume({str(run_dir)!r}, dataset='path/to/{config.dataset_name}') "
            f"(command line: tutorseg train path/to/{config.dataset_name} --resume --out {run_dir}); on Colab, "
            "download or copy it first (notebook 00).")
    found = as_dataset(dataset)
    if found.name != config.dataset_name:
        raise TrainingError(f"{run_dir} trained on the dataset {config.dataset_name!r}, not {found.name!r} "
                            f"({found.root}); pass the folder of {config.dataset_name}")
    return found


def _resume_locked(run_dir: Path, config: TrainingConfig, dataset, *, progress: bool,
                   device: str | None, dist: distributed.Distributed | None = None) -> TrainingRecord:
    main = dist is None or dist.is_main
    recovered: list[str] = []
    stale: list[Path] = []
    with distributed.main_first(dist):  # rank 0 copies the dataset back and tidies the folder; then the others
        dataset = _dataset_for_resume(run_dir, config, dataset)
        if main:
            recovered = RunFolderWriter(run_dir, announce=lambda message: None).recover()  # the last process's files
            stale = ckpt.remove_stale_temporaries(run_dir)
    moved = _resume_device(config, device)
    if moved is not None:
        config = config.for_device(moved, on_cpu=choose_device(moved).torch_device.type == "cpu")
    plan = Plan.load(run_dir / "plan.json")
    if str(dataset.root) != config.dataset_dir:
        config = replace(config, dataset_dir=str(dataset.root))
        if main:
            config.save(run_dir / "config.json")
    run = _build_run(run_dir, config, plan, dataset, progress=progress, dist=dist)
    found = ckpt.load_latest_checkpoint(run_dir)
    notes = []
    if found is not None:
        path, state, skipped = found
        notes = skipped + restore_state(run, state) + [f"continuing from {path.name}"]
    _start(run, resumed=True)
    if recovered:
        run.log(f"copied back what the last process kept locally while the run folder was away: {', '.join(recovered)}")
    for note in notes:
        run.log(f"resumed on {run.setup.device}: {note}")
    if stale:
        run.log(f"removed {len(stale)} half-written file(s) of the interrupted run: {', '.join(p.name for p in stale)}")
    _loop(run, progress=progress)
    return _finish(run, progress=progress)
