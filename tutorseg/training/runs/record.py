"""The artefact of a training run: :class:`TrainingRecord` (what ``train_fold`` and ``resume`` return)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tutorseg.data.artefacts import read_artefact, to_json_types
from tutorseg.training.runs.checkpoint import write_json


@dataclass(frozen=True)
class TrainingRecord:
    """A finished (or stopped) training run of one fold.

    Attributes:
        run_dir: the run folder (plan.json, splits_final.json, config.json, log.txt, history.json, checkpoints...).
        dataset_name: the dataset trained on.
        configuration: ``"3d_fullres"``, ``"2d"``...
        fold: 0-4 or ``"all"``.
        epochs: epochs completed.
        iterations: training iterations completed.
        elapsed_seconds: training time (epochs incl. their pseudo-Dice validation; resumed runs add up).
        stopped_by: ``"epochs"`` or ``"budget"``.
        best_epoch: epoch of the best EMA pseudo-Dice (checkpoint_best.pt), or None.
        best_ema_pseudo_dice: that value.
        validation: full-case validation summary (Dice per class), or None (fold "all", or validate=False).
        device: where it trained, and the precision (``"cpu/bf16"``, ``"cuda/fp16"``).
        history: per-epoch lists (history.json).
    """

    run_dir: Path
    dataset_name: str
    configuration: str
    fold: int | str
    epochs: int
    iterations: int
    elapsed_seconds: float
    stopped_by: str
    best_epoch: int | None
    best_ema_pseudo_dice: float | None
    validation: dict | None
    device: str
    history: dict = field(repr=False, default_factory=dict)

    @property
    def mean_foreground_dice(self) -> float | None:
        """Mean over foreground classes of the full-case validation Dice (None without validation)."""
        return None if self.validation is None else self.validation.get("mean_foreground_dice")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        return to_json_types(data)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingRecord":
        return cls(**{**data, "run_dir": Path(data["run_dir"])})

    def save(self, path: str | os.PathLike | None = None) -> Path:
        path = Path(path) if path is not None else self.run_dir / "training_record.json"
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainingRecord":
        path = Path(path)
        if path.is_dir():
            path = path / "training_record.json"
        return read_artefact(path, cls.from_dict, what="training record",
                             how_to_make="`tutorseg train` (a finished run writes training_record.json)")

    def _lines(self) -> list[tuple[str, str]]:
        dice = self.mean_foreground_dice
        per_class = ""
        if self.validation:
            per_class = ", ".join(f"{k} {v:.3f}" for k, v in self.validation["mean_dice"].items() if v is not None)
        best = "-" if self.best_ema_pseudo_dice is None or math.isnan(self.best_ema_pseudo_dice) else \
            f"{self.best_ema_pseudo_dice:.3f} (epoch {self.best_epoch})"
        return [("run", self.run_dir.name), ("dataset", self.dataset_name), ("configuration", self.configuration),
                ("fold", str(self.fold)), ("trained", f"{self.epochs} epochs, {self.iterations} iterations, "
                                                      f"{self.elapsed_seconds / 60:.1f} min on {self.device}"),
                ("stopped by", self.stopped_by), ("best EMA pseudo-Dice", best),
                ("validation Dice", "-" if dice is None else f"{dice:.3f} (mean foreground; {per_class})")]

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v}" for k, v in self._lines())
        return f"TrainingRecord({body})"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
                       for k, v in self._lines())
        return f"<b>Training run</b><table>{rows}</table>"
