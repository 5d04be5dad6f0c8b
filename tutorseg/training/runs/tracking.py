"""Weights & Biases logging, at the edge: the only module that imports wandb.

``WANDB_MODE=offline`` writes the run under ``<run_dir>/wandb/`` without a network (``wandb sync`` uploads it later).
A resumed training continues the same wandb run (its id is kept in ``<run_dir>/wandb_id.txt``).
"""

from __future__ import annotations

import math
import secrets
from pathlib import Path

from tutorseg.data.problems import TutorsegError

DEFAULT_PROJECT = "tutorseg"


class Tracker:
    """Logs per-epoch metrics to one wandb run. Call :meth:`log` after each epoch and :meth:`finish` at the end."""

    def __init__(self, run):
        self.run = run

    def log(self, metrics: dict, *, step: int) -> None:
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not
                 (isinstance(v, float) and math.isnan(v))}
        self.run.log(clean, step=step)

    def summary(self, values: dict) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def finish(self) -> None:
        self.run.finish()


def start_tracking(run_dir: Path, config: dict, *, project: str | None = None, name: str | None = None) -> Tracker:
    """Start (or resume) the wandb run of a training run folder.

    Raises:
        TutorsegError: wandb is not installed.
    """
    try:
        import wandb
    except ImportError:
        raise TutorsegError("wandb=True needs the wandb package: pip install wandb (then wandb login, or set "
                            "WANDB_MODE=offline to log to the run folder only)") from None
    run_dir = Path(run_dir)
    id_file = run_dir / "wandb_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)  # wandb run id
    id_file.write_text(run_id + "\n")
    run = wandb.init(project=project or DEFAULT_PROJECT, name=name or run_dir.name, id=run_id, resume="allow",
                     dir=str(run_dir), config=config, reinit="finish_previous")
    return Tracker(run)
