"""Checkpoints and run-folder files, written so that a process killed at any moment leaves nothing broken.

Every file is written to a temporary file in the same folder, flushed and fsync'ed, then moved over the old one with
``os.replace`` (atomic on POSIX and on Google Drive's FUSE mount): a reader sees the old file or the new one, never a
half-written one. Checkpoints hold only tensors and plain Python types, so ``torch.load(path, weights_only=True)``
(the safe loader, the default since torch 2.6) opens them.
"""

from __future__ import annotations

import errno
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tutorseg.data.files import TEMPORARY_PATTERN, atomic_path, write_json_atomic
from tutorseg.data.problems import TutorsegError

CHECKPOINT_NAMES = {"latest": "checkpoint_latest.pt", "best": "checkpoint_best.pt", "final": "checkpoint_final.pt"}

# The checkpoint of every epoch gets a new name, and the two newest are kept. Google Drive's mount on Colab uploads
# a file some time after it is closed; a file rewritten in place every epoch (checkpoint_latest.pt, as tutorseg 0.1
# wrote it) may never finish uploading before the next write, and a disconnect then finds an old or no copy on Drive.
# A file written once and left alone is uploaded whole, and while the newest uploads the one before stays complete.
EPOCH_CHECKPOINT = "checkpoint_epoch_{epoch:04d}.pt"
KEEP_EPOCH_CHECKPOINTS = 2


def write_json(path: Path, data: Any) -> None:
    """Write a run-folder JSON file atomically and durably."""
    write_json_atomic(path, data, durable=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write a run-folder file atomically and durably."""
    with atomic_path(path, durable=True) as tmp:
        tmp.write_bytes(data)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files a killed process left behind (``.NAME.*.tmp.pt`` etc.); returns what was removed."""
    stale = sorted(Path(folder).glob(TEMPORARY_PATTERN))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class CheckpointDiskFullError(TutorsegError, OSError):
    """No space left for a checkpoint (an ``OSError`` with ``ENOSPC`` too, so a full Drive can be stepped around)."""

    def __str__(self) -> str:
        return str(self.strerror)


def save_checkpoint(path: Path, state: dict) -> None:
    """Save a checkpoint atomically and durably (temp file in the same folder + fsync + ``os.replace``).

    Raises:
        TutorsegError: the disk is full; the previous checkpoint is intact, and the message says how much space
            a checkpoint needs.
    """
    try:
        with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
            torch.save(state, f)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        needed = _checkpoint_bytes(state)
        raise CheckpointDiskFullError(
            errno.ENOSPC,
            f"the disk holding {path.parent} is full: a checkpoint needs about {needed / 1e6:.0f} MB "
            f"({shutil.disk_usage(path.parent).free / 1e6:.0f} MB are free). The previous {path.name} is intact. "
            "Free some space (on Colab: files in /content, old runs on Drive) and resume the run.") from None


def _checkpoint_bytes(state: dict) -> int:
    """The tensors' bytes in a checkpoint (the network and the optimiser's momentum make up nearly all of it)."""
    total = 0
    for value in state.values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, dict):
            total += _checkpoint_bytes(value)
    return total


def prune_epoch_checkpoints(folder: Path) -> None:
    """Remove all but the newest :data:`KEEP_EPOCH_CHECKPOINTS` per-epoch checkpoints of a folder."""
    for old in epoch_checkpoints(folder)[KEEP_EPOCH_CHECKPOINTS:]:
        old.unlink(missing_ok=True)


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """The run's per-epoch checkpoints, newest first (by the epoch in the name)."""
    found = []
    for path in Path(run_dir).glob("checkpoint_epoch_*.pt"):
        number = path.stem.rsplit("_", 1)[-1]
        if number.isdigit():
            found.append((int(number), path))
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoints(run_dir: Path) -> list[Path]:
    """Where the run's latest state may be, newest first: the per-epoch checkpoints, then 0.1's checkpoint_latest.pt."""
    legacy = Path(run_dir) / CHECKPOINT_NAMES["latest"]
    return epoch_checkpoints(run_dir) + ([legacy] if legacy.is_file() else [])


def load_latest_checkpoint(run_dir: Path) -> tuple[Path, dict, list[str]] | None:
    """The newest checkpoint that loads, its state, and a note for each newer one that did not; None if none exists.

    Raises:
        TutorsegError: there are checkpoints, but none loads.
    """
    notes: list[str] = []
    candidates = latest_checkpoints(run_dir)
    for path in candidates:
        try:
            return path, load_checkpoint(path), notes
        except TutorsegError:  # a file cut short when the mount went away, or a copy still uploading
            notes.append(f"{path.name} does not load; the checkpoint before it is used")
    if candidates:
        raise TutorsegError(f"none of the checkpoints of {run_dir} loads ({', '.join(p.name for p in candidates)}); "
                            "the run cannot be resumed: start it again in a new folder")
    return None


def load_checkpoint(path: Path, *, map_location="cpu") -> dict:
    """Load a checkpoint with the safe loader (``weights_only=True``).

    Load to the CPU (the default) and let ``load_state_dict`` move the weights to the network's device: the
    random states in a checkpoint are CPU byte tensors, and mapping them to a GPU breaks their restoring.

    Raises:
        TutorsegError: the file is missing or cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise TutorsegError(f"no checkpoint at {path}; train first (tutorseg.train_fold) or pick another checkpoint "
                            f"({', '.join(CHECKPOINT_NAMES)})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, which would run whatever code the file carries: not passed on
        raise TutorsegError(f"{path} is not a tutorseg checkpoint: it holds pickled Python objects beyond tensors "
                            "and plain values, which may be code. It was not loaded, and must not be loaded any "
                            "other way; ask its sender for a tutorseg model file (tutorseg export-model).") from None
    except Exception as exc:  # a truncated or foreign file: say which one
        raise TutorsegError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}); the file is damaged or "
                            "not a checkpoint. Use another checkpoint of the run (checkpoint_best.pt / "
                            "checkpoint_epoch_NNNN.pt) or train again") from None
    check_checkpoint(state, path)
    return state


def check_checkpoint(state, path: Path) -> None:
    """Refuse what is not a tutorseg checkpoint (a plain ``state_dict``, another tool's format), saying what it is.

    A tutorseg checkpoint is a dict with ``format``, ``network`` (the weights), ``configuration``, ``n_channels``
    and ``n_classes`` (:func:`tutorseg.training.loop` writes it).
    """
    from tutorseg.data.limits import MAX_CHANNELS, MAX_LABEL_VALUE

    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TutorsegError(f"{path} is a plain PyTorch state_dict (weights only, {len(state)} tensors), not a "
                            "tutorseg checkpoint: it does not say which network, channels and classes they belong "
                            "to. Load a checkpoint_final.pt of a tutorseg run, or a model file (tutorseg "
                            "import-model).")
    expected = ("format", "network", "configuration", "n_channels", "n_classes")
    missing = [key for key in expected if not isinstance(state, dict) or key not in state]
    if missing:
        found = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        if isinstance(state, dict) and "network_weights" in state:
            found = "nnU-Net's checkpoint fields"
        raise TutorsegError(f"{path} is not a tutorseg checkpoint: it lacks {', '.join(missing)} (found {found}). "
                            "tutorseg loads the checkpoint_*.pt files of its own runs and model files.")
    n_channels, n_classes = state["n_channels"], state["n_classes"]
    if not (isinstance(n_channels, int) and 1 <= n_channels <= MAX_CHANNELS + MAX_LABEL_VALUE
            and isinstance(n_classes, int) and 1 <= n_classes <= MAX_LABEL_VALUE + 1):
        raise TutorsegError(f"{path} declares {n_channels!r} input channels and {n_classes!r} classes, which no "
                            "network of this field has; the file is damaged or forged and was not used.")


# ------------------------------------------------------------------------------------------------------ RNG states


def capture_rng(numpy_generator: np.random.Generator, torch_generator: torch.Generator | None = None) -> dict:
    """All random states that decide what happens next, as tensors and plain types.

    Python's ``random`` state is ``(version, tuple_of_625_ints, gauss)``; numpy's Generator state is a dict of ints;
    torch's states are uint8 tensors. All pass ``weights_only=True``.
    """
    state = {
        "python": random.getstate(),
        "numpy_global": _numpy_global_state(),
        "numpy": numpy_generator.bit_generator.state,
        "torch": torch.get_rng_state(),
    }
    if torch_generator is not None:
        state["torch_generator"] = torch_generator.get_state()
        state["torch_generator_device"] = torch_generator.device.type  # a CUDA state does not fit a CPU generator
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, numpy_generator: np.random.Generator,
                torch_generator: torch.Generator | None = None) -> list[str]:
    """Put back the random states that :func:`capture_rng` saved.

    They are Python's, numpy's (global and the run's generator), torch's CPU state, the run's torch generator and,
    where there is a GPU, CUDA's.

    Returns:
        The sentences to log where a state could not come back: the run's torch generator when the run resumes
        on another kind of device (its draws then continue from a fresh seed), CUDA's states on a machine with
        fewer GPUs. Everything else is restored exactly.
    """
    notes = []
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    _set_numpy_global_state(state["numpy_global"])
    numpy_generator.bit_generator.state = state["numpy"]
    torch.set_rng_state(_on_cpu(state["torch"]))
    if torch_generator is not None and "torch_generator" in state:
        saved_on = state.get("torch_generator_device", "an unrecorded device")
        try:
            if saved_on not in (torch_generator.device.type, "an unrecorded device"):
                raise RuntimeError(saved_on)
            torch_generator.set_state(_on_cpu(state["torch_generator"]))
        except RuntimeError:  # another device's state (CUDA's is 16 bytes, the CPU's 5056), also in old checkpoints
            notes.append(f"the augmentation's random generator was saved on {saved_on} and cannot continue on "
                         f"{torch_generator.device.type}: its draws go on from a new seed (the run is no longer "
                         "bit-for-bit repeatable; everything else resumes exactly)")
    if "cuda" in state and torch.cuda.is_available():
        saved = [_on_cpu(s) for s in state["cuda"]]
        present = torch.cuda.device_count()
        for index, generator_state in enumerate(saved[:present]):
            torch.cuda.set_rng_state(generator_state, index)
        if len(saved) > present:
            notes.append(f"the run was saved with {len(saved)} GPUs' random states, this machine has {present}")
    return notes


def _on_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A saved random state as torch's setters need it: a CPU byte tensor (even if it was loaded to a GPU)."""
    return tensor.to("cpu", torch.uint8) if isinstance(tensor, torch.Tensor) else tensor


def _numpy_global_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]  # the legacy tuple
    assert isinstance(keys, np.ndarray)
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_numpy_global_state(state: dict) -> None:
    keys = state["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["gauss"]))
