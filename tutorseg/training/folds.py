"""Several folds at once: one training process per fold, spread over the devices there are.

nnU-Net's advice for a machine with several GPUs is not to split one fold over them but to train the five folds side
by side, one per GPU (``CUDA_VISIBLE_DEVICES=k nnUNetv2_train ... FOLD``): folds are independent, so this scales
perfectly, and a crash costs one fold. :func:`train_folds` does that: the cases are preprocessed once, then every
device runs one fold at a time (a fold is a ``tutorseg train`` process of its own, its console output in
``FOLD_DIR/console.txt``) and takes the next fold when it is done.

Each fold stays resumable on its own: a fold whose run folder holds checkpoints but no ``checkpoint_final.pt`` is
resumed (``--resume``), a finished one is left as it is. Calling :func:`train_folds` again after an interruption
therefore continues exactly the unfinished folds.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tutorseg.training.runs import checkpoint as ckpt
from tutorseg.training.runs.config import TrainingError


@dataclass(frozen=True)
class FoldOutcome:
    """What became of one fold in :func:`train_folds`."""

    fold: int | str
    run_dir: Path
    device: str
    status: str  # "trained", "resumed", "already finished" or "failed (exit code N)"
    seconds: float
    mean_dice: float | None  # the fold's full-case validation (training_record.json), when there is one

    def __str__(self) -> str:
        dice = f", validation Dice {self.mean_dice:.4f}" if self.mean_dice is not None else ""
        return f"fold {self.fold} on {self.device}: {self.status} in {self.seconds:.0f} s{dice} ({self.run_dir})"


def default_devices() -> list[str]:
    """Every GPU of this machine (``cuda:0``, ``cuda:1``...), or the CPU once."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


def fold_state(run_dir: Path) -> str:
    """``"finished"``, ``"started"`` (checkpoints but no final one) or ``"new"``."""
    if (run_dir / ckpt.CHECKPOINT_NAMES["final"]).is_file():
        return "finished"
    return "started" if ckpt.latest_checkpoints(run_dir) else "new"


def fold_command(dataset_dir: Path, plan_file: Path, fold: int | str, run_dir: Path, device: str, *,
                 preprocessed_dir: Path, resume: bool, train_arguments: Sequence[str] = (),
                 threads: int | None = None) -> list[str]:
    """The ``tutorseg train`` line one fold runs as."""
    if resume:
        command = ["train", str(dataset_dir), "--resume", "--out", str(run_dir), "--device", device]
    else:
        command = ["train", str(dataset_dir), "--plan", str(plan_file), "--fold", str(fold), "--out", str(run_dir),
                   "--device", device, "--preprocessed", str(preprocessed_dir), *train_arguments]
    if threads is not None and device == "cpu":
        command += ["--threads", str(threads)]
    return [sys.executable, "-m", "tutorseg", *command, "--quiet"]


def _mean_dice(run_dir: Path) -> float | None:
    record = run_dir / "training_record.json"
    if not record.is_file():
        return None
    validation = json.loads(record.read_text(encoding="utf-8")).get("validation") or {}
    return validation.get("mean_foreground_dice")


def train_folds(dataset, plan, *, folds: Sequence[int | str] = (0, 1, 2, 3, 4), out_dir,
                devices: Sequence[str] | None = None, configuration: str | None = None, preprocessed_dir=None,
                train_arguments: Sequence[str] = (), verbose: bool = True) -> list[FoldOutcome]:
    """Train several folds as independent processes, one fold per device at a time; resumable.

    Args:
        dataset: the dataset (a :class:`~tutorseg.Dataset` or its folder).
        plan: a :class:`~tutorseg.planning.Plan` or its JSON file.
        folds: the folds (nnU-Net's five by default).
        out_dir: the folder that holds one ``fold_<k>`` run folder per fold (e.g. ``runs/Hippocampus/3d_fullres``).
        devices: where the folds train, one fold per entry at a time (``["cuda:0", "cuda:1"]``; ``"cpu"`` may be
            repeated to train that many folds side by side on the CPU, each with its share of the cores); default:
            every GPU, or the CPU.
        configuration: the plan's configuration (default: its default one).
        preprocessed_dir: shared by the folds (default ``out_dir/preprocessed``); preprocessed here, once.
        train_arguments: more ``tutorseg train`` options for every fold, e.g. ``["--budget", "1h"]``.
        verbose: print a line when a fold starts and ends.

    Returns:
        One :class:`FoldOutcome` per fold, in the order of ``folds``.

    Raises:
        TrainingError: a fold failed (the others ran to their end; its ``console.txt`` says why).
    """
    from tutorseg.data.dataset import as_dataset
    from tutorseg.preprocessing.preprocessor import preprocess
    from tutorseg.training.loop import _load_plan

    dataset = as_dataset(dataset)
    plan = _load_plan(plan)
    configuration = configuration or plan.default_configuration
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    preprocessed_dir = Path(preprocessed_dir) if preprocessed_dir is not None else out_dir / "preprocessed"
    plan_file = out_dir / "plan.json"
    plan.save(plan_file)
    devices = list(devices) if devices else default_devices()
    # once, before the folds start: several processes must not preprocess the same folder at the same time
    preprocess(dataset, plan, configuration, preprocessed_dir, progress=False, verbose=verbose)
    cpu_slots = sum(1 for d in devices if d == "cpu")
    threads = max(1, (os.cpu_count() or 1) // cpu_slots) if cpu_slots else None
    arguments = [*train_arguments, "--configuration", configuration]
    todo: queue.Queue = queue.Queue()
    for fold in folds:
        todo.put(fold)
    outcomes: dict[int | str, FoldOutcome] = {}
    lock = threading.Lock()

    def say(message: str) -> None:
        if verbose:
            with lock:
                print(f"tutorseg: {message}", flush=True)

    def work(device: str) -> None:
        while True:
            try:
                fold = todo.get_nowait()
            except queue.Empty:
                return
            run_dir = out_dir / f"fold_{fold}"
            state = fold_state(run_dir)
            clock = time.perf_counter()
            if state == "finished":
                outcome = FoldOutcome(fold, run_dir, device, "already finished", 0.0, _mean_dice(run_dir))
                say(str(outcome))
                outcomes[fold] = outcome
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            command = fold_command(dataset.root, plan_file, fold, run_dir, device, preprocessed_dir=preprocessed_dir,
                                   resume=state == "started", train_arguments=arguments, threads=threads)
            say(f"fold {fold} {'resumes' if state == 'started' else 'starts'} on {device} "
                f"(output in {run_dir / 'console.txt'})")
            with open(run_dir / "console.txt", "a", encoding="utf-8") as console:
                code = subprocess.run(command, stdout=console, stderr=subprocess.STDOUT).returncode
            status = ("resumed" if state == "started" else "trained") if code == 0 else f"failed (exit code {code})"
            outcome = FoldOutcome(fold, run_dir, device, status, time.perf_counter() - clock, _mean_dice(run_dir))
            say(str(outcome))
            outcomes[fold] = outcome

    workers = [threading.Thread(target=work, args=(device,), name=f"fold-worker-{device}") for device in devices]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results = [outcomes[fold] for fold in folds]
    failed = [o for o in results if o.status.startswith("failed")]
    if failed:
        raise TrainingError("; ".join(f"fold {o.fold} {o.status}: see {o.run_dir / 'console.txt'}" for o in failed)
                            + ". The other folds are done; run the same command again to train the failed ones "
                            "(finished folds are skipped, interrupted ones resumed)")
    return results
