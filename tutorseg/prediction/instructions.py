"""Inference instructions: what :func:`tutorseg.find_best_configuration` chose, and prediction that follows them.

nnU-Net's ``nnUNetv2_find_best_configuration`` ends with ``inference_instructions.txt``: the commands that predict
with the winner (one configuration's five folds, or two configurations whose probabilities are averaged) and apply
the post-processing chosen for it. tutorseg writes the same as JSON (:class:`InferenceInstructions`), which
``tutorseg predict --best best.json -i IN -o OUT`` (:func:`predict_best`) carries out, and as the text commands.

Paths in the file are relative to the file's folder, so the run folder can move (to Drive and back) with it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tutorseg.data.artefacts import read_artefact, write_artefact
from tutorseg.data.problems import TutorsegError

FORMAT = "tutorseg inference instructions 1"


@dataclass(frozen=True)
class InferenceInstructions:
    """How to predict with the best of the trained configurations.

    Attributes:
        configurations: the winner's configurations: one, or two for an ensemble (probabilities averaged).
        run_dirs: configuration -> its fold run folders (absolute once loaded).
        postprocessing: the ``postprocessing.json`` decided on the winner's cross-validation predictions, or None.
        mean_dice: the winner's cross-validation mean foreground Dice.
        dice_per_class: its cross-validation Dice per class.
        folds: the folds the choice was made on.
    """

    configurations: tuple[str, ...]
    run_dirs: dict[str, tuple[Path, ...]]
    postprocessing: Path | None
    mean_dice: float
    dice_per_class: dict[str, float]
    folds: tuple[int, ...]

    @property
    def name(self) -> str:
        """``"3d_fullres"``, or ``"ensemble 2d + 3d_fullres"``."""
        return self.configurations[0] if len(self.configurations) == 1 else \
            "ensemble " + " + ".join(self.configurations)

    def command(self, instructions_file: str | os.PathLike = "best.json", inputs: str = "INPUT_FOLDER",
                output: str = "OUTPUT_FOLDER") -> str:
        """The one ``tutorseg predict`` line that follows these instructions."""
        return f"tutorseg predict --best {instructions_file} -i {inputs} -o {output}"

    def commands_by_hand(self, inputs: str = "INPUT_FOLDER", output: str = "OUTPUT_FOLDER") -> list[str]:
        """The same as separate steps (what ``predict --best`` does), nnU-Net's ``inference_instructions.txt``."""
        post = f" (then apply {self.postprocessing})" if self.postprocessing else ""
        if len(self.configurations) == 1:
            runs = " ".join(str(d) for d in self.run_dirs[self.configurations[0]])
            no_post = "" if self.postprocessing else " --no-postprocessing"
            return [f"tutorseg predict {runs} -i {inputs} -o {output}{no_post}"
                    + (f"  # post-processing: {self.postprocessing}" if self.postprocessing else "")]
        lines = [f"tutorseg predict {' '.join(str(d) for d in self.run_dirs[c])} -i {inputs} -o {output}_{c} "
                 "--save-probabilities --no-postprocessing" for c in self.configurations]
        lines.append(f"# average the .npz probabilities of {' and '.join(f'{output}_{c}' for c in self.configurations)}"
                     f" per case, take the largest{post}")
        return lines

    def to_dict(self, relative_to: Path) -> dict:
        def rel(path: Path) -> str:
            return os.path.relpath(path, relative_to)

        return {"format": FORMAT, "configurations": list(self.configurations),
                "run_dirs": {c: [rel(d) for d in dirs] for c, dirs in self.run_dirs.items()},
                "postprocessing": rel(self.postprocessing) if self.postprocessing else None,
                "mean_dice": self.mean_dice, "dice_per_class": self.dice_per_class, "folds": list(self.folds)}

    @classmethod
    def from_dict(cls, data: dict, relative_to: Path) -> InferenceInstructions:
        if data.get("format") != FORMAT:
            raise TutorsegError(f"not tutorseg inference instructions (format {data.get('format')!r}); make them "
                                "with tutorseg find-best RUN_ROOT -o best.json")
        return cls(tuple(data["configurations"]),
                   {c: tuple((relative_to / d).resolve() for d in dirs) for c, dirs in data["run_dirs"].items()},
                   (relative_to / data["postprocessing"]).resolve() if data.get("postprocessing") else None,
                   float(data["mean_dice"]), dict(data["dice_per_class"]), tuple(data["folds"]))

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path).expanduser().resolve()
        return write_artefact(path, self.to_dict(path.parent))

    @classmethod
    def load(cls, path: str | os.PathLike) -> InferenceInstructions:
        path = Path(path).expanduser().resolve()
        return read_artefact(path, lambda data: cls.from_dict(data, path.parent), what="inference instructions",
                             how_to_make="tutorseg find-best RUN_ROOT -o best.json "
                                         "(tutorseg.find_best_configuration)")


def predict_best(instructions, inputs, out_dir: str | os.PathLike, *, tta: bool = True, progress: bool = True,
                 device: str | None = None, checkpoint: str = "final", output_format: str | None = None):
    """Predict as the inference instructions say: the winner's folds, an ensemble averaged, its post-processing.

    Args:
        instructions: :class:`InferenceInstructions` or the JSON file :func:`tutorseg.find_best_configuration` wrote.
        inputs: as :func:`tutorseg.predict`.
        out_dir: where the segmentations go.
        tta: mirroring test-time augmentation, as :func:`tutorseg.predict`.
        progress: progress bars.
        device: where to run (default: the GPU if there is one).
        checkpoint: ``"final"``, ``"best"`` or ``"latest"``.
        output_format: the segmentations' file type (default: the input's).

    Returns:
        The :class:`~tutorseg.prediction.predictor.Predictions` (for an ensemble: of its first configuration, with
        the ensemble's files).
    """
    from tutorseg.data.imageio import file_ending, write_segmentation
    from tutorseg.prediction.postprocessing import PostprocessingDecision
    from tutorseg.prediction.predictor import Predictions, predict

    if not isinstance(instructions, InferenceInstructions):
        instructions = InferenceInstructions.load(instructions)
    missing = [str(d) for dirs in instructions.run_dirs.values() for d in dirs if not d.is_dir()]
    if missing:
        raise TutorsegError(f"the inference instructions name run folders that are not there: {', '.join(missing)}. "
                            "Keep the instructions file where find-best wrote it (its paths are relative to it)")
    decision = PostprocessingDecision.load(instructions.postprocessing) if instructions.postprocessing else None
    out_dir = Path(out_dir)
    if len(instructions.configurations) == 1:
        return predict(list(instructions.run_dirs[instructions.configurations[0]]), inputs, out_dir, tta=tta,
                       progress=progress, postprocess=decision or False, checkpoint=checkpoint, device=device,
                       output_format=output_format)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = Path(tempfile.mkdtemp(prefix=".ensemble_", dir=out_dir))
    try:
        results = [predict(list(instructions.run_dirs[c]), inputs, parts / c, tta=tta, save_probabilities=True,
                           progress=progress, postprocess=False, checkpoint=checkpoint, device=device,
                           output_format=output_format) for c in instructions.configurations]
        written = []
        plan = _plan_of(results[0])  # read once, not per case
        for first_file in results[0].files:
            case_id = first_file.name[: -len(file_ending(first_file))]
            probabilities = average_probabilities([r.out_dir / f"{case_id}.npz" for r in results])
            segmentation = plan.to_label_map(probabilities)
            if decision is not None:
                segmentation = decision.apply(segmentation)
            out = out_dir / first_file.name
            write_segmentation(segmentation, out, reference=first_file)  # its geometry is the input's
            written.append(out)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    first = results[0]
    return Predictions(out_dir=out_dir, files=tuple(written), run_dirs=tuple(d for r in results for d in r.run_dirs),
                       configuration=instructions.name, tta=tta,
                       postprocessing=decision.steps if decision is not None else (), device=first.device,
                       seconds_per_case=sum(r.seconds_per_case for r in results))


def average_probabilities(files) -> np.ndarray:
    """The mean of several ``CASE.npz`` probability files of one case (nnU-Net's ensembling), float32."""
    total = None
    for file in files:
        with np.load(file) as saved:
            probabilities = saved["probabilities"].astype(np.float32)
        if total is not None and probabilities.shape != total.shape:
            raise TutorsegError(f"{file}: probabilities of shape {probabilities.shape}, the other configuration's "
                                f"have {total.shape}; ensembles need predictions of the same images")
        total = probabilities if total is None else total + probabilities
    assert total is not None
    return total / len(files)


def _plan_of(predictions):
    from tutorseg.planning import Plan

    return Plan.load(Path(predictions.run_dirs[0]) / "plan.json")
