"""Predict: segment new images with trained folds, so that the result lies exactly on the input's grid.

For each case (nnU-Net v2's ``nnUNetPredictor.predict_from_files`` does the same steps):

1. read the channel files and preprocess them exactly as in training (crop to non-zero, resample to the plan's
   spacing, normalise: :func:`tutorseg.preprocessing.preprocessor.preprocess_image`);
2. sliding-window inference with Gaussian weighting, 50 % overlap and mirroring test-time augmentation
   (:func:`tutorseg.training.model.sliding_window.predict_volume_logits`), once per fold;
3. average the folds' logits (the ensemble), resample them back and undo the cropping, one class at a time for the
   label map (:func:`tutorseg.preprocessing.preprocessor.restore_segmentation`) or all at once, with the softmax
   last, when the probabilities are saved (:func:`~tutorseg.preprocessing.preprocessor.restore_probabilities`);
4. apply the post-processing decided on the validation folds (``postprocessing.json``), if any;
5. write ``CASE.nii.gz`` with the input's affine and header (it opens aligned in 3D Slicer, ITK-SNAP, MITK) or
   ``CASE.png`` for 2D images, and optionally the probabilities as ``CASE.npz``.

Notebook ``04_predict_and_evaluate.ipynb`` runs it on a trained fold.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tutorseg.data.dataset import Case, Dataset, load_dataset, split_channel_suffix
from tutorseg.data.files import display_path
from tutorseg.data.imageio import (
    SUPPORTED_ENDINGS,
    file_ending,
    is_2d_format,
    read_geometry,
    write_probabilities,
    write_segmentation,
)
from tutorseg.data.jobs import with_progress
from tutorseg.data.problems import TutorsegError

if TYPE_CHECKING:
    import torch

    from tutorseg.planning import Plan

CHECKPOINTS = ("final", "best", "latest")


class PredictionError(TutorsegError):
    """Prediction cannot run: a run folder without checkpoints, inputs that do not match the plan, etc."""


@dataclass(frozen=True)
class Predictions:
    """What :func:`predict` did: the files it wrote, and how they were made.

    Attributes:
        out_dir: the output folder.
        files: the written segmentations, in case order.
        run_dirs: the trained folds whose probabilities were averaged.
        configuration: the plan's configuration the folds were trained with (``"3d_fullres"``...).
        tta: whether mirroring test-time augmentation was used.
        postprocessing: the accepted largest-component steps (label values per step); empty when none.
        device: where the networks ran.
        seconds_per_case: mean wall time per case (reading, preprocessing, inference, writing).
    """

    out_dir: Path
    files: tuple[Path, ...]
    run_dirs: tuple[Path, ...]
    configuration: str
    tta: bool
    postprocessing: tuple[tuple[int, ...], ...]
    device: str
    seconds_per_case: float

    def __repr__(self) -> str:
        steps = ", ".join("largest component of " + "+".join(map(str, s)) for s in self.postprocessing) or "none"
        return (f"Predictions({len(self.files)} case(s) in {display_path(self.out_dir)}: {len(self.run_dirs)} "
                f"fold(s) of {self.configuration}, TTA {'on' if self.tta else 'off'}, post-processing {steps}, "
                f"{self.seconds_per_case:.2f} s per case on {self.device})")

    def _repr_html_(self) -> str:
        rows = [("cases", len(self.files)), ("written to", display_path(self.out_dir)),
                ("folds", ", ".join(display_path(r) for r in self.run_dirs)), ("configuration", self.configuration),
                ("test-time mirroring", "on" if self.tta else "off"),
                ("post-processing", ", ".join("+".join(map(str, s)) for s in self.postprocessing) or "none"),
                ("device", self.device), ("seconds per case", f"{self.seconds_per_case:.2f}")]
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{html.escape(str(v))}"
                       "</td></tr>" for k, v in rows)
        return f"<b>Predictions</b><table>{body}</table>"


@dataclass(frozen=True)
class FoldModel:
    """One trained fold, loaded for prediction."""

    run_dir: Path
    network: torch.nn.Module  # in eval mode, on the device it predicts on
    plan: Plan
    configuration: str  # the plan's configuration it was trained with
    previous_stage: tuple["FoldModel", ...] = ()  # a cascade's second stage: the 3d_lowres folds that run first


# --------------------------------------------------------------------------------------------------- models


def _checkpoint_in(run_dir: Path, preferred: str) -> str:
    """The checkpoint to load: ``preferred`` if present, else the next in final > best > latest."""
    if not run_dir.is_dir():
        raise PredictionError(f"run folder {run_dir} does not exist; give the --out folder of `tutorseg train`")
    from tutorseg.training.runs.model_io import checkpoint_path

    order = [preferred] + [c for c in CHECKPOINTS if c != preferred]
    for name in order:
        if checkpoint_path(run_dir, name) is not None:
            return name
    raise PredictionError(f"run folder {run_dir} holds no checkpoint (checkpoint_final.pt, checkpoint_best.pt or "
                          "checkpoint_epoch_NNNN.pt); train it first (`tutorseg train ... --out RUN_DIR`) or resume "
                          "it (`tutorseg train --resume --out RUN_DIR`)")


def prediction_device(device: str | None = None) -> str:
    """Where to predict: the device asked for, else the GPU when there is one, else the CPU.

    Raises:
        PredictionError: a CUDA device asked for where torch sees none.
    """
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PredictionError(f"device {device!r} asked for, but torch sees no CUDA GPU; leave the device out (the "
                              "CPU is used) or, on Colab, switch the runtime to a GPU (Runtime > Change runtime type)")
    return str(device)


def load_folds(run_dirs, *, checkpoint: str = "final", device: str | None = None) -> list[FoldModel]:
    """Load each run folder's network (``torch.load(weights_only=True)`` inside ``load_model``).

    Args:
        run_dirs: one run folder or several (one per fold; their predictions are averaged).
        checkpoint: ``"final"``, ``"best"`` or ``"latest"`` (falls back in that order when missing).
        device: where the networks go (default: the GPU when there is one, see :func:`prediction_device`).

    Raises:
        PredictionError: a folder without checkpoints, or folds trained with different plans or configurations.
    """
    from tutorseg.training import load_model

    device = prediction_device(device)

    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise PredictionError("no run folder given; pass at least one folder written by `tutorseg train`")
    folds = []
    previous: tuple[FoldModel, ...] = ()
    for run_dir in map(Path, run_dirs):
        name = _checkpoint_in(run_dir, checkpoint)
        network, plan, configuration, config = load_model(run_dir, checkpoint=name, device=device)
        if plan[configuration].previous_stage and not previous:  # the cascade: its first stage's folds, once
            previous = tuple(_previous_stage_folds(run_dir, config.previous_stage_dir, checkpoint, device))
        folds.append(FoldModel(run_dir, network, plan, configuration, previous))
    first = folds[0]
    for fold in folds[1:]:
        config_a, config_b = first.plan[first.configuration], fold.plan[fold.configuration]
        if (fold.configuration != first.configuration or config_a.patch_size != config_b.patch_size
                or fold.plan.labels != first.plan.labels or config_a.spacing != config_b.spacing):
            raise PredictionError(f"{fold.run_dir} was trained with another plan or configuration than "
                                  f"{first.run_dir} ({fold.configuration} vs {first.configuration}); "
                                  "an ensemble averages folds of the same plan and configuration")
    return folds


def _previous_stage_folds(run_dir: Path, previous_stage_dir: str | None, checkpoint: str,
                          device: str) -> list[FoldModel]:
    from tutorseg.training.cascade import lowres_fold_dirs, previous_stage_root

    root = previous_stage_root(run_dir, previous_stage_dir)
    dirs = lowres_fold_dirs(root)
    if not dirs:
        raise PredictionError(f"{run_dir} is a cascade's second stage; its first stage (3d_lowres folds with "
                              f"checkpoint_final.pt) should be in {root} and is not. Keep the run folders together "
                              "as training left them (RUN_ROOT/3d_lowres next to RUN_ROOT/3d_cascade_fullres)")
    return load_folds(dirs, checkpoint=checkpoint, device=device)


# --------------------------------------------------------------------------------------------------- outputs

OUTPUT_FORMATS = {"nii.gz": ".nii.gz", "nii": ".nii", "nrrd": ".nrrd", "mha": ".mha", "png": ".png"}


def _output_ending(image_file: Path, output_format: str | None) -> str:
    """The segmentation's file ending: the input's (TIFF -> PNG), or the one asked for if it fits the input."""
    ending = file_ending(image_file)
    flat = is_2d_format(image_file)
    if output_format is None:
        return ".png" if ending in (".tif", ".tiff") and flat else ending  # a TIFF stack gives a TIFF stack
    wanted = OUTPUT_FORMATS.get(output_format.lower().lstrip("."))
    if wanted is None:
        raise PredictionError(f"output format {output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    if (wanted == ".png") != flat:
        raise PredictionError(f"{image_file.name} cannot be written as {output_format}: 2D images give png, "
                              "3D volumes nii.gz, nrrd or mha")
    return wanted


# --------------------------------------------------------------------------------------------------- inputs


def _cases_in_folder(folder: Path) -> list[Case]:
    """Cases of a folder: ``CASE_0000``... files grouped per case; files without suffix are one case each."""
    groups: dict[str, dict[int, Path]] = {}
    singles = []
    for path in sorted(folder.iterdir()):
        ending = file_ending(path)
        if not ending or not path.is_file() or path.name.startswith("."):
            continue
        suffix = split_channel_suffix(path.name[: -len(ending)])
        if suffix:
            case_id, channel = suffix
            groups.setdefault(case_id, {})[channel] = path
        else:
            singles.append(Case(path.name[: -len(ending)], (path,)))
    cases = [Case(cid, tuple(ch[i] for i in sorted(ch))) for cid, ch in sorted(groups.items())]
    return sorted(cases + singles, key=lambda c: c.case_id)


def resolve_inputs(inputs) -> list[Case]:
    """The cases to predict from what the user gave.

    Accepted: a file, a folder of ``CASE_0000``... files, a dataset folder (its ``imagesTs``), a
    :class:`~tutorseg.Dataset` (its test cases) or a list of :class:`~tutorseg.Case`.

    Raises:
        PredictionError: nothing to predict, or an unsupported file.
    """
    if isinstance(inputs, Dataset):
        cases = list(inputs.test)
    elif isinstance(inputs, (list, tuple)) and all(isinstance(c, Case) for c in inputs):
        cases = list(inputs)
    else:
        path = Path(inputs)
        if path.is_file():
            ending = file_ending(path)
            if not ending:
                raise PredictionError(f"{path.name} is not an image tutorseg reads "
                                      f"({', '.join(SUPPORTED_ENDINGS)})")
            stem = path.name[: -len(ending)]
            suffix = split_channel_suffix(stem)
            if suffix:  # CASE_0000.nii.gz: also take the case's other channel files beside it
                siblings = [c for c in _cases_in_folder(path.parent) if c.case_id == suffix[0]]
                cases = siblings
            else:
                cases = [Case(stem, (path,))]
        elif (path / "dataset.json").is_file():
            cases = list(load_dataset(path).test)
        elif path.is_dir():
            cases = _cases_in_folder(path)
        else:
            raise PredictionError(f"input {path} does not exist; give an image file, a folder of CASE_0000 files "
                                  "or a dataset folder with imagesTs/")
    if not cases:
        raise PredictionError(f"no images found in {inputs}; expected files such as CASE_0000.nii.gz or CASE_0000.png")
    return cases


# --------------------------------------------------------------------------------------------------- one case


def _averaged_logits(folds: Sequence[FoldModel], image: np.ndarray, spacing: tuple[float, ...], *,
                     tta: bool, case_id: str):
    """The folds' averaged logits on the preprocessed grid (as nnU-Net ensembles folds), and the case's properties."""
    from tutorseg.preprocessing.preprocessor import preprocess_image
    from tutorseg.training.model.sliding_window import predict_volume_logits

    plan, configuration = folds[0].plan, folds[0].configuration
    config = plan[configuration]
    if image.shape[0] != len(plan.channel_names):
        raise PredictionError(f"case {case_id}: {image.shape[0]} channel(s), but the plan was made for "
                              f"{len(plan.channel_names)} ({', '.join(plan.channel_names.values())}); give one file "
                              "per channel (CASE_0000, CASE_0001, ...) as in training")
    data, _, properties = preprocess_image(image, spacing, plan, configuration, case_id=case_id)
    if folds[0].previous_stage:  # the cascade: the first stage segments the image, its result is input too
        from tutorseg.preprocessing.preprocessor import label_on_grid
        from tutorseg.training.cascade import append_one_hot

        first = predict_case_segmentation(folds[0].previous_stage, image, spacing, tta=tta, case_id=case_id)
        foreground = sorted(v for v in plan.class_labels.values() if v != 0)
        data = append_one_hot(data, label_on_grid(first, properties, plan, configuration), foreground)
    per_fold = (predict_volume_logits(fold.network, data, patch_size=config.patch_size, tta=tta,
                                      slice_axis=config.slice_axis) for fold in folds)
    averaged = next(per_fold)  # one fold's logits in memory at a time, besides the sum
    for logits in per_fold:
        averaged += logits
    averaged /= len(folds)
    return averaged, properties


def _check_restored(restored: np.ndarray, image: np.ndarray, case_id: str) -> None:
    if restored.shape[-(image.ndim - 1):] != image.shape[1:]:
        raise PredictionError(f"case {case_id}: restored prediction has shape {restored.shape}, the input "
                              f"{image.shape[1:]}; this is a bug in undo_preprocessing, please report it")


def predict_case_probabilities(folds: Sequence[FoldModel], image: np.ndarray, spacing: tuple[float, ...], *,
                               tta: bool = True, case_id: str = "") -> np.ndarray:
    """The folds' averaged class probabilities on the input's own grid.

    Args:
        folds: loaded fold models of the same plan and configuration.
        image: ``(C, *spatial)`` float32, as read from the files.
        spacing: the image's voxel size (tutorseg axis order).
        tta: mirroring test-time augmentation.
        case_id: for error messages.

    Returns:
        ``(K, *spatial)`` float32 probabilities with the input's spatial shape.
    """
    from tutorseg.preprocessing.preprocessor import restore_probabilities

    averaged, properties = _averaged_logits(folds, image, spacing, tta=tta, case_id=case_id)
    restored = restore_probabilities(averaged, properties, folds[0].plan, folds[0].configuration)
    _check_restored(restored, image, case_id)
    return restored.astype(np.float32, copy=False)


def predict_case_segmentation(folds: Sequence[FoldModel], image: np.ndarray, spacing: tuple[float, ...], *,
                              tta: bool = True, case_id: str = "") -> np.ndarray:
    """The label map (the plan's label values) on the input's own grid, without its full-size probabilities.

    The same result as the argmax of :func:`predict_case_probabilities`, with a fraction of the memory on large
    images: the classes are resampled back one at a time (:func:`~tutorseg.preprocessing.preprocessor.
    restore_segmentation`).
    """
    from tutorseg.preprocessing.preprocessor import restore_label_map

    averaged, properties = _averaged_logits(folds, image, spacing, tta=tta, case_id=case_id)
    label_map = restore_label_map(averaged, properties, folds[0].plan, folds[0].configuration)
    del averaged
    _check_restored(label_map, image, case_id)
    return label_map


def _predict_within_memory(folds: Sequence[FoldModel], image: np.ndarray, spacing: tuple[float, ...], *, tta: bool,
                           case_id: str, probabilities: bool = True) -> np.ndarray:
    """The case's probabilities (``probabilities=False``: its label map); an out-of-memory names the case and the fix.

    Before it starts, the memory the case needs at full resolution (float32) is compared with what the machine has:
    for probabilities the folds' sum, the resampled copy and the one being added (3 maps per class); for a label map
    two maps whatever the number of classes. A volume too large is refused with the numbers instead of the
    operating system killing the process (on Colab: the runtime restarts).
    """
    from tutorseg.data.jobs import available_memory_bytes
    from tutorseg.training.hardware.device import first_line, is_out_of_memory, release_gpu_memory

    n_classes = folds[0].plan.n_outputs
    voxels = int(np.prod(image.shape[1:]))
    maps = 3 * n_classes if probabilities else 2 + n_classes  # the label path: K maps on the (smaller) model grid
    needed = 4 * (image.size + maps * voxels)
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise PredictionError(
            f"case {case_id} (shape {tuple(image.shape[1:])}, {n_classes} classes) needs about {needed / 1e9:.1f} GB "
            f"of memory for its {'class probabilities' if probabilities else 'label map'} at full resolution, and "
            f"{available / 1e9:.1f} GB are available. "
            + ("Leave out the probabilities (save_probabilities=False, CLI: no --save-probabilities): the label "
               "map alone needs far less. " if probabilities else "")
            + "Predict it on a machine with more memory (Colab Pro's high-RAM runtime), or close other notebooks.")
    error = None
    try:
        predict_case = predict_case_probabilities if probabilities else predict_case_segmentation
        return predict_case(folds, image, spacing, tta=tta, case_id=case_id)
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        device = next(folds[0].network.parameters()).device
        error = PredictionError(
            f"case {case_id} (shape {tuple(image.shape[1:])}): the {device} ran out of memory predicting it. Use "
            "less: tta=False (CLI --no-tta; 8x fewer windows in 3D), or predict on the CPU (device='cpu', CLI "
            f"--device cpu; slower, but it has the machine's RAM). ({first_line(exc)})")
    release_gpu_memory()  # outside the except block: the failed windows' tensors are gone by now
    raise error


def _postprocessing_for(run_dirs, postprocess):
    """The post-processing decision to apply: a given one, the runs' ``postprocessing.json``, or none."""
    from tutorseg.prediction.postprocessing import PostprocessingDecision

    if postprocess is False or postprocess is None:
        return None
    if isinstance(postprocess, PostprocessingDecision):
        return postprocess
    if isinstance(postprocess, (str, os.PathLike)):
        return PostprocessingDecision.load(postprocess)
    for run_dir in run_dirs:
        path = Path(run_dir) / "postprocessing.json"
        if path.is_file():
            return PostprocessingDecision.load(path)
    return None


# --------------------------------------------------------------------------------------------------- predict


def predict(run_dirs, inputs, out_dir: str | os.PathLike, *, tta: bool = True, save_probabilities: bool = False,
            progress: bool = True, postprocess=True, checkpoint: str = "final", device=None,
            folds: Sequence[FoldModel] | None = None, output_format: str | None = None) -> Predictions:
    """Segment images with one or more trained folds (their probabilities averaged).

    Args:
        run_dirs: a run folder of ``tutorseg train`` or a list of them (one per fold).
        inputs: an image file, a folder of ``CASE_0000``... files (or MSD-style ``CASE.nii.gz``), a dataset folder
            (its ``imagesTs``), a :class:`~tutorseg.Dataset` (its test cases) or a list of :class:`~tutorseg.Case`.
        out_dir: where ``CASE.nii.gz`` / ``CASE.png`` (and ``CASE.npz``) are written.
        tta: mirroring test-time augmentation (on by default as nnU-Net; off is 8x faster in 3D).
        save_probabilities: also write ``CASE.npz`` with ``probabilities (K, *spatial)`` float16 and ``classes``.
        progress: show a progress bar.
        postprocess: ``True`` applies the runs' ``postprocessing.json`` when present; ``False`` none; or a
            :class:`~tutorseg.prediction.postprocessing.PostprocessingDecision` / its JSON path.
        checkpoint: ``"final"``, ``"best"`` or ``"latest"`` (falls back in that order when missing).
        device: where to run (default: the GPU if there is one).
        folds: already loaded models (from :func:`load_folds`), to skip loading them again.
        output_format: the segmentations' file type, ``"nii.gz"``, ``"nrrd"``, ``"mha"`` (3D) or ``"png"`` (2D);
            default: the input's own (a TIFF input gives PNG). The geometry is always the input's.

    Returns:
        :class:`Predictions`: the written segmentation files (``.files``, in case order) and how they were made.

    Raises:
        PredictionError: a run folder without checkpoints, a channel count that does not match the plan, etc.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():  # said before the folds are loaded, not after
        raise PredictionError(f"the output {out_dir} is a file; give a folder for the segmentations")
    folds = list(folds) if folds is not None else load_folds(run_dirs, checkpoint=checkpoint, device=device)
    if next(folds[0].network.parameters()).device.type == "cpu":
        from tutorseg.training.hardware.device import keep_freed_memory

        keep_freed_memory()  # the large window buffers are reused instead of re-mapped: ~1/3 less time (bench/predict.md)
    decision = _postprocessing_for(run_dirs, postprocess)
    cases = resolve_inputs(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = folds[0].plan
    written = []
    clock = time.perf_counter()
    for case in with_progress(cases, enabled=progress, description="predicting"):
        geometry = read_geometry(case.image_files[0], spacing_2d=case.spacing_2d)
        image = case.load_image()
        if save_probabilities:
            probabilities = _predict_within_memory(folds, image, geometry.spacing, tta=tta, case_id=case.case_id)
            segmentation = plan.to_label_map(probabilities)
        else:  # the label map only: the classes are brought back to full resolution one at a time
            segmentation = _predict_within_memory(folds, image, geometry.spacing, tta=tta, case_id=case.case_id,
                                                  probabilities=False)
        del image
        if decision is not None:
            segmentation = decision.apply(segmentation)
        out = out_dir / f"{case.case_id}{_output_ending(case.image_files[0], output_format)}"
        write_segmentation(segmentation, out, reference=case.image_files[0])
        if save_probabilities:
            write_probabilities(out_dir / f"{case.case_id}.npz", probabilities, plan.output_names)
        written.append(out)
    return Predictions(out_dir=out_dir, files=tuple(written), run_dirs=tuple(f.run_dir for f in folds),
                       configuration=folds[0].configuration, tta=tta,
                       postprocessing=decision.steps if decision is not None else (),
                       device=str(next(folds[0].network.parameters()).device),
                       seconds_per_case=(time.perf_counter() - clock) / max(1, len(written)))
