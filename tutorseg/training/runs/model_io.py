"""Loading a trained network back from a run folder (what prediction needs)."""

from __future__ import annotations

from pathlib import Path

import torch

from tutorseg.data.problems import TutorsegError
from tutorseg.training.model.network import build_network, load_weights
from tutorseg.training.runs.checkpoint import CHECKPOINT_NAMES, latest_checkpoints, load_checkpoint
from tutorseg.training.runs.config import TrainingConfig


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path | None:
    """The file of a run's ``"final"``, ``"best"`` or ``"latest"`` checkpoint (the newest epoch's), or None."""
    if checkpoint == "latest":
        candidates = latest_checkpoints(run_dir)
        return candidates[0] if candidates else None
    path = Path(run_dir) / CHECKPOINT_NAMES[checkpoint]
    return path if path.is_file() else None


def load_model(run_dir, *, checkpoint: str = "final", device: str | torch.device | None = None):
    """The trained network of a run, in eval mode, with the plan and configuration it was trained with.

    Args:
        run_dir: a run folder written by :func:`tutorseg.train_fold`.
        checkpoint: ``"final"`` (end of training), ``"best"`` (best EMA pseudo-Dice) or ``"latest"`` (last epoch).
        device: where to put the network (default: the CPU).

    Returns:
        ``(network, plan, configuration_name, config)``: the network in eval mode (``forward`` returns full-resolution
        logits ``(B, K, *patch)``), the :class:`tutorseg.planning.Plan`, the configuration's name and the run's
        the run's :class:`~tutorseg.training.runs.config.TrainingConfig`.

    Raises:
        TutorsegError: not a run folder, unknown checkpoint name, or the checkpoint cannot be read.
    """
    from tutorseg.planning import Plan

    run_dir = Path(run_dir).expanduser()
    if checkpoint not in CHECKPOINT_NAMES:
        raise TutorsegError(f"checkpoint must be one of {sorted(CHECKPOINT_NAMES)}, not {checkpoint!r}")
    if not (run_dir / "plan.json").is_file() or not (run_dir / "config.json").is_file():
        raise TutorsegError(f"{run_dir} is not a training run folder (plan.json / config.json missing); train one "
                            "with tutorseg.train_fold(...)")
    path = checkpoint_path(run_dir, checkpoint)
    if checkpoint == "final" and path is None and latest_checkpoints(run_dir):
        raise TutorsegError(f"{run_dir} has no checkpoint_final.pt: the training did not finish. Finish it with "
                            "tutorseg.resume(run_dir), or load checkpoint='latest' or 'best'")
    if path is None:
        raise TutorsegError(f"no {checkpoint} checkpoint in {run_dir}; train first (tutorseg.train_fold) or pick "
                            f"another checkpoint ({', '.join(CHECKPOINT_NAMES)})")
    state = load_checkpoint(path)
    plan = Plan.load(run_dir / "plan.json")
    config = TrainingConfig.load(run_dir / "config.json")
    name = state["configuration"]
    network = build_network(plan[name], state["n_channels"], state["n_classes"])
    load_weights(network, state["network"], source=path)
    network.eval()
    if device is not None:
        network.to(device)
    return network, plan, name, config
