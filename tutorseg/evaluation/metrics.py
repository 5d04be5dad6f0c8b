"""Evaluate segmentations: Dice, IoU, HD95, surface Dice and volumes per case and class, and their summary.

The numbers are MONAI's metric functions (``compute_dice``, ``compute_iou``, ``compute_hausdorff_distance`` with
``percentile=95``, ``compute_surface_dice``) applied to one-hot label maps, with the voxel spacing read from the
files, so that distances are in millimetres. Notebook ``04_predict_and_evaluate.ipynb`` shows them on a trained fold.

Conventions for empty masks (a class absent from the reference, the prediction, or both)
----------------------------------------------------------------------------------------
=====================  ==========  =====  ============================  ============
reference / predicted  Dice, IoU   HD95   surface Dice                  volumes
=====================  ==========  =====  ============================  ============
both empty             NaN         NaN    NaN                           0, 0
only one empty         0           worst  0                             as counted
both present           MONAI       MONAI  MONAI                         as counted
=====================  ==========  =====  ============================  ============

- Dice and IoU follow nnU-Net (``nnunetv2/evaluation/evaluate_predictions.py``): when a class is in neither mask
  the score is undefined (NaN) and means ignore it (``nanmean``), so a correctly empty prediction neither rewards
  nor punishes.
- HD95 is undefined when a mask has no surface. For "both empty" tutorseg reports NaN (nothing to measure); for
  "only one empty" it reports the worst possible distance, the length of the image's diagonal in mm, so that a
  missed or hallucinated structure counts as the worst error instead of silently vanishing from the mean (the
  convention of the BraTS challenges). The value used is listed as ``hd95_worst_mm`` per case.
- Surface Dice (normalised surface distance, Nikolov et al. 2021) uses a tolerance of ``surface_tolerance_mm``
  (1 mm by default) for every class.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tutorseg.data.artefacts import read_artefact, to_json_types, write_artefact
from tutorseg.data.files import write_text_atomic
from tutorseg.data.imageio import SUPPORTED_ENDINGS, image_files_by_stem, read_image
from tutorseg.data.jobs import with_progress
from tutorseg.data.label_maps import target_mask
from tutorseg.data.problems import TutorsegError

METRICS = ("dice", "iou", "hd95_mm", "surface_dice", "volume_reference_mm3", "volume_prediction_mm3")
"""The per-class metrics, in the order of the CSV columns."""


class EvaluationError(TutorsegError):
    """Predictions and references cannot be compared (missing case, shape mismatch, unreadable label)."""


# --------------------------------------------------------------------------------------------------- artefacts


@dataclass(frozen=True)
class CaseMetrics:
    """The metrics of one case.

    Attributes:
        case_id: the case.
        metrics: class name -> metric name -> value (see :data:`METRICS`); NaN where undefined.
        spacing: voxel spacing used for distances and volumes (tutorseg axis order, mm).
        hd95_worst_mm: the HD95 reported when exactly one of the two masks is empty (the image diagonal).
        instances: instance metrics (see :mod:`tutorseg.evaluation.instances`) when instance references were given.
    """

    case_id: str
    metrics: dict[str, dict[str, float]]
    spacing: tuple[float, ...]
    hd95_worst_mm: float
    instances: dict | None = None

    def to_dict(self) -> dict:
        return {"case_id": self.case_id, "metrics": to_json_types(self.metrics), "spacing": list(self.spacing),
                "hd95_worst_mm": self.hd95_worst_mm, "instances": self.instances}

    @classmethod
    def from_dict(cls, data: dict) -> "CaseMetrics":
        return cls(data["case_id"], _none_to_nan(data["metrics"]), tuple(data["spacing"]), data["hd95_worst_mm"],
                   data.get("instances"))


@dataclass(frozen=True)
class EvaluationSummary:
    """Per-case metrics and their summary: what ``evaluate`` returns and saves.

    Attributes:
        labels: class name -> value for the classes evaluated (background excluded), or region name -> its label
            values for region-based labels.
        cases: one :class:`CaseMetrics` per case, sorted by case id.
        mean: class name -> metric -> mean over cases (NaNs ignored, as nnU-Net).
        std: class name -> metric -> standard deviation over cases (NaNs ignored).
        foreground_mean: metric -> the mean over classes of ``mean`` (nnU-Net's ``foreground_mean``).
        surface_tolerance_mm: the tolerance of the surface Dice.
        instances: dataset-wide instance metrics (matched F1, panoptic quality), or ``None``.
    """

    labels: dict[str, int | tuple[int, ...]]
    cases: tuple[CaseMetrics, ...]
    mean: dict[str, dict[str, float]]
    std: dict[str, dict[str, float]]
    foreground_mean: dict[str, float]
    surface_tolerance_mm: float = 1.0
    instances: dict | None = None
    conventions: str = field(default=(
        "Dice/IoU: NaN when the class is absent from both masks (ignored in means, as nnU-Net); "
        "HD95: NaN when both empty, the image diagonal in mm when only one is empty; "
        "surface Dice: NaN when both empty, 0 when only one is empty."), repr=False)

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(c.case_id for c in self.cases)

    @property
    def mean_dice(self) -> float:
        """The mean Dice over classes (nnU-Net's headline number, ``foreground_mean['Dice']``)."""
        return self.foreground_mean["dice"]

    def case(self, case_id: str) -> CaseMetrics:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise KeyError(f"no case {case_id!r} in this evaluation")

    def per_case_dice(self) -> dict[str, float]:
        """Case id -> mean Dice over the classes defined in that case (for finding best and worst cases)."""
        return {c.case_id: _nanmean([m["dice"] for m in c.metrics.values()]) for c in self.cases}

    def rows(self) -> list[dict]:
        """One row per case and class (the CSV's body), then ``mean`` and ``std`` rows per class."""
        rows = [{"case_id": c.case_id, "class": name, **values} for c in self.cases for name, values in c.metrics.items()]
        for statistic, table in (("mean", self.mean), ("std", self.std)):
            rows += [{"case_id": statistic, "class": name, **values} for name, values in table.items()]
        return rows

    def to_dict(self) -> dict:
        return {"labels": self.labels, "surface_tolerance_mm": self.surface_tolerance_mm,
                "conventions": self.conventions, "foreground_mean": to_json_types(self.foreground_mean),
                "mean": to_json_types(self.mean), "std": to_json_types(self.std), "instances": self.instances,
                "cases": [c.to_dict() for c in self.cases]}

    @classmethod
    def from_dict(cls, data: dict) -> "EvaluationSummary":
        return cls(labels={k: _target(v) for k, v in data["labels"].items()}, cases=tuple(CaseMetrics.from_dict(c) for c in data["cases"]),
                   mean=_none_to_nan(data["mean"]), std=_none_to_nan(data["std"]),
                   foreground_mean=_none_to_nan(data["foreground_mean"]),
                   surface_tolerance_mm=data["surface_tolerance_mm"], instances=data.get("instances"),
                   conventions=data.get("conventions", cls.conventions))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the summary as JSON (NaN as ``null``) and, beside it, the same numbers as CSV (``.csv``)."""
        path = Path(path)
        write_artefact(path, self.to_dict())
        write_text_atomic(path.with_suffix(".csv"), self.to_csv())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EvaluationSummary":
        return read_artefact(path, cls.from_dict, what="tutorseg evaluation summary",
                             how_to_make="`tutorseg evaluate PREDICTIONS REFERENCES -o summary.json`")

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["case_id", "class", *METRICS], lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
        return buffer.getvalue()

    def __repr__(self) -> str:
        lines = [f"EvaluationSummary({len(self.cases)} cases, mean Dice {self.mean_dice:.4f})"]
        lines.append(f"  {'class':14s} {'Dice':>7s} {'IoU':>7s} {'HD95 mm':>8s} {'surfDice':>8s}")
        for name, values in self.mean.items():
            lines.append(f"  {name[:14]:14s} {values['dice']:7.4f} {values['iou']:7.4f} "
                         f"{values['hd95_mm']:8.2f} {values['surface_dice']:8.4f}")
        if self.instances:
            lines.append(f"  instances ({self.instances.get('method', 'connected components')}): "
                         f"F1@0.5 {self.instances['f1']:.4f}, PQ {self.instances['pq']:.4f}"
                         + _rand_text(self.instances))
            plain = self.instances.get("without_border")
            if plain:
                lines.append(f"  instances without the border step (connected components): F1@0.5 "
                             f"{plain['f1']:.4f}, PQ {plain['pq']:.4f}" + _rand_text(plain))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("class", "Dice", "IoU", "HD95 (mm)", "surface Dice"))
        body = "".join(
            f"<tr><td>{name}</td><td>{v['dice']:.4f} ± {self.std[name]['dice']:.4f}</td><td>{v['iou']:.4f}</td>"
            f"<td>{v['hd95_mm']:.2f}</td><td>{v['surface_dice']:.4f}</td></tr>" for name, v in self.mean.items())
        extra = ""
        if self.instances:
            extra = (f"<p>Instances ({self.instances.get('method', 'connected components')}): matched F1 at IoU "
                     f"0.5 = {self.instances['f1']:.4f}, panoptic quality = {self.instances['pq']:.4f}"
                     f"{_rand_text(self.instances)}</p>")
            plain = self.instances.get("without_border")
            if plain:
                extra += (f"<p>Without the border step (connected components of all foreground): F1 = "
                          f"{plain['f1']:.4f}, PQ = {plain['pq']:.4f}{_rand_text(plain)}</p>")
        return (f"<p><b>Evaluation</b> of {len(self.cases)} cases, mean Dice {self.mean_dice:.4f} "
                f"(mean ± std over cases)</p><table><tr>{head}</tr>{body}</table>{extra}")


# --------------------------------------------------------------------------------------------------- metrics of one case


def one_hot(label_map: np.ndarray, values: Sequence[int | Sequence[int]]):
    """A label map ``(*spatial)`` -> a one-hot torch tensor ``(1, 1 + len(values), *spatial)``, background first.

    A value may be a region (a sequence of label values): its channel is the union of their voxels, and channels of
    overlapping regions overlap (every channel is scored on its own).
    """
    import torch

    channels = [target_mask(label_map, v) for v in values]
    background = ~np.logical_or.reduce(channels) if channels else np.ones(label_map.shape, dtype=bool)
    return torch.from_numpy(np.stack([background, *channels])[None].astype(np.float32))


def image_diagonal_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    """The largest distance inside an image, in mm: the worst possible HD95."""
    return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def _surface_distances(predicted: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]):
    """The distances (mm) from each edge voxel of one mask to the other's edge, both ways (MONAI's edge functions).

    One call per class on two boolean masks, cropped by MONAI to their bounding box: memory follows the structure's
    size, not the number of classes.
    """
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    _, distances, _ = get_edge_surface_distance(
        torch.from_numpy(predicted), torch.from_numpy(reference), distance_metric="euclidean", spacing=spacing,
        symmetric=True)
    return distances[0], distances[-1]  # symmetric: prediction -> reference, reference -> prediction


def case_metrics(prediction: np.ndarray, reference: np.ndarray, labels: Mapping[str, int | Sequence[int]], *,
                 spacing: tuple[float, ...] | None = None, surface_tolerance_mm: float = 1.0) -> dict[str, dict]:
    """Dice, IoU, HD95, surface Dice and volumes of each class for one case, with the documented conventions.

    Each class is scored on its own two boolean masks: Dice and IoU by counting voxels, HD95 and surface Dice from
    one computation of edge distances (MONAI's ``get_edge_surface_distance``, what its ``compute_hausdorff_distance``
    and ``compute_surface_dice`` call per class). The numbers equal those functions' on one-hot maps
    (``tests/test_evaluation.py``); the memory no longer grows with the number of classes (bench/evaluate.md).

    Args:
        prediction: ``(*spatial)`` integer label map.
        reference: ``(*spatial)`` integer label map of the same shape.
        labels: class name -> value, background excluded; or region name -> its label values (nnU-Net's
            region-based labels: each region scored on the mask of its values).
        spacing: voxel size per axis in mm (1.0 per axis when ``None``).
        surface_tolerance_mm: tolerance of the surface Dice.

    Returns:
        class name -> {"dice", "iou", "hd95_mm", "surface_dice", "volume_reference_mm3", "volume_prediction_mm3"}.
    """
    import torch

    spacing = tuple(float(s) for s in (spacing or (1.0,) * reference.ndim))
    voxel_mm3 = float(np.prod(spacing))
    worst = image_diagonal_mm(reference.shape, spacing)
    result = {}
    for name, value in labels.items():
        predicted, truth = target_mask(prediction, value), target_mask(reference, value)
        n_pred, n_ref = int(np.count_nonzero(predicted)), int(np.count_nonzero(truth))
        row = {"volume_reference_mm3": n_ref * voxel_mm3, "volume_prediction_mm3": n_pred * voxel_mm3}
        if n_ref == 0 and n_pred == 0:
            row.update(dice=math.nan, iou=math.nan, hd95_mm=math.nan, surface_dice=math.nan)
        elif n_ref == 0 or n_pred == 0:
            row.update(dice=0.0, iou=0.0, hd95_mm=worst, surface_dice=0.0)
        else:
            overlap = int(np.count_nonzero(predicted & truth))
            with warnings.catch_warnings():  # MONAI warns about empty edges; the conventions above handle them
                warnings.simplefilter("ignore")
                to_reference, to_prediction = _surface_distances(predicted, truth, spacing)
            both = torch.cat([to_reference, to_prediction])
            row.update(dice=2 * overlap / (n_pred + n_ref), iou=overlap / (n_pred + n_ref - overlap),
                       # MONAI's HD95: the 95th percentile of each direction's distances, the larger of the two
                       hd95_mm=float(max(torch.quantile(d.float(), 0.95) for d in (to_reference, to_prediction))),
                       surface_dice=float((both <= surface_tolerance_mm).sum()) / len(both))
        result[name] = {metric: row[metric] for metric in METRICS}
    return result


# --------------------------------------------------------------------------------------------------- inputs


def _reference_source(ground_truth) -> tuple[dict, Mapping[str, int | tuple[int, ...]] | None]:
    """Case id -> label file or array, and the dataset's labels when known."""
    from tutorseg.data.dataset import Dataset, load_dataset

    if isinstance(ground_truth, Mapping):
        return dict(ground_truth), None
    if isinstance(ground_truth, (str, os.PathLike)) and (Path(ground_truth) / "dataset.json").is_file():
        ground_truth = load_dataset(ground_truth)
    if isinstance(ground_truth, Dataset):
        labels: dict = ground_truth.foreground_labels
        if ground_truth.regions:  # region-based labels: the regions (and the ignore label, if any)
            ignore = ground_truth.labels.get("ignore")
            labels = {**ground_truth.regions, **({"ignore": ignore} if ignore is not None else {})}
        return {c.case_id: c.label_file for c in ground_truth.training}, labels
    folder = Path(ground_truth)
    if not folder.is_dir():
        raise EvaluationError(f"reference {folder} is neither a folder of label files nor a dataset folder; "
                              "pass labelsTr/ (CASE.nii.gz or CASE.png per case) or the dataset folder")
    return image_files_by_stem(folder), None


def _prediction_source(predictions) -> tuple[dict, dict[str, int] | None]:
    """Case id -> prediction file or array, and the labels of an nnU-Net/tutorseg prediction folder's dataset.json."""
    if isinstance(predictions, Mapping):
        return dict(predictions), None
    folder = Path(predictions)
    if not folder.is_dir():
        raise EvaluationError(f"predictions {folder} is not a folder; pass the folder of CASE.nii.gz / CASE.png "
                              "files that tutorseg predict or nnUNetv2_predict wrote")
    labels = None
    meta = folder / "dataset.json"  # nnUNetv2_predict copies the dataset.json into its output folder
    if meta.is_file():
        raw = json.loads(meta.read_text(encoding="utf-8")).get("labels", {})
        if raw and all(isinstance(v, int) for v in raw.values()):
            labels = {k: v for k, v in raw.items() if v != 0}
    return image_files_by_stem(folder), labels


def _load_labels(item, case_id: str, what: str) -> tuple[np.ndarray, tuple[float, ...] | None, tuple | None]:
    """A label map ``(*spatial)`` int, its spacing and shape from a file (or an array: spacing ``None``)."""
    if isinstance(item, np.ndarray):
        return item, None, item.shape
    if item is None:
        raise EvaluationError(f"case {case_id}: no {what} file")
    image = read_image(item)
    if image.array.shape[0] != 1:
        raise EvaluationError(f"case {case_id}: the {what} {Path(item).name} has {image.array.shape[0]} channels; "
                              "a label map is a single-channel image of integer class values")
    array = image.array[0]
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise EvaluationError(f"case {case_id}: the {what} {Path(item).name} holds non-integer values; "
                              "evaluate label maps (class indices), not probabilities")
    # integer labels are kept in their stored type (uint8 for most): a CT-sized int32 copy would cost 300 MB each
    integer = array if array.dtype.kind in "iu" else array.astype(np.int32)
    return integer, tuple(image.geometry.spacing), image.geometry.shape


# --------------------------------------------------------------------------------------------------- evaluate


def evaluate(predictions, ground_truth, *, labels: Mapping[str, int | Sequence[int]] | None = None,
             output: str | os.PathLike | None = None, spacing: tuple[float, ...] | None = None,
             surface_tolerance_mm: float = 1.0, instance_reference=None, border_label: int | None = None,
             progress: bool = False) -> EvaluationSummary:
    """Compare predicted label maps with references, per case and class, and summarise.

    Args:
        predictions: a folder of ``CASE.nii.gz`` / ``CASE.png`` files (tutorseg's or ``nnUNetv2_predict``'s
            output), or a mapping case id -> ``(*spatial)`` label array.
        ground_truth: a folder of reference label files, a dataset folder or :class:`~tutorseg.Dataset` (its
            ``labelsTr``), or a mapping case id -> array. Every predicted case must have a reference; references
            without a prediction (other folds) are skipped.
        labels: class name -> value to evaluate (background excluded), or region name -> label values (a
            dataset of region-based labels is evaluated per region by default). Default: the dataset's labels, else the
            ``dataset.json`` of the prediction folder, else every non-zero value found. A label named ``ignore``
            (nnU-Net's ignore label) is not a class: the reference voxels it marks are left out, as nnU-Net's
            ``compute_metrics`` leaves them out (here by counting them as background in both maps: exact for Dice
            and IoU; the surface metrics, which nnU-Net does not report, see them as background).
        output: where to save the summary JSON (and the CSV beside it), or ``None``.
        spacing: voxel size for arrays given directly (files carry their own spacing).
        surface_tolerance_mm: tolerance of the surface Dice.
        instance_reference: instance label maps (folder or mapping case id -> array; each object its own
            integer) to also score instances from connected components (:mod:`tutorseg.evaluation.instances`).
            Default for a dataset converted from instance masks (``tutorseg convert --instances``): its
            ``instancesTr``.
        border_label: the border class of predictions made with a border class: instances are then the interior's
            components grown into the border, and ``instances["without_border"]`` holds the scores of plain
            connected components of the same predictions, for comparison. Default: the dataset's, when converted
            from instance masks.
        progress: show a progress bar.

    Returns:
        The :class:`EvaluationSummary`.

    Raises:
        EvaluationError: no predictions, a prediction without reference, shapes that differ.
    """
    from tutorseg.data.dataset import load_dataset
    from tutorseg.evaluation.instances import aggregate_instance_scores, instance_scores

    if isinstance(ground_truth, (str, os.PathLike)) and (Path(ground_truth) / "dataset.json").is_file():
        ground_truth = load_dataset(ground_truth)  # read once: its labels and its instance maps
    predicted, predicted_labels = _prediction_source(predictions)
    references, dataset_labels = _reference_source(ground_truth)
    if instance_reference is None:
        instance_reference, dataset_border = _instances_of_dataset(ground_truth)
        border_label = dataset_border if border_label is None else border_label
    instance_refs = _reference_source(instance_reference)[0] if instance_reference is not None else None
    if not predicted:
        raise EvaluationError(f"no predictions found in {predictions}: expected files such as CASE"
                              f"{SUPPORTED_ENDINGS[0]} or CASE.png")
    missing = sorted(set(predicted) - set(references))
    if missing:
        raise EvaluationError(f"{len(missing)} predicted case(s) have no reference: {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}; check that both folders hold the same cases")

    loaded = {}
    for case_id in with_progress(sorted(predicted), enabled=progress, description="reading"):
        pred, pred_spacing, _ = _load_labels(predicted[case_id], case_id, "prediction")
        ref, ref_spacing, _ = _load_labels(references[case_id], case_id, "reference")
        if pred.shape != ref.shape:
            raise EvaluationError(f"case {case_id}: prediction shape {pred.shape} differs from reference shape "
                                  f"{ref.shape}; predictions must be on the reference's grid (tutorseg predict "
                                  "writes them so)")
        loaded[case_id] = (pred, ref, ref_spacing or pred_spacing or spacing)
    if labels is None:
        labels = dataset_labels or predicted_labels or _labels_found(loaded.values())
    ignore = labels.get("ignore")
    targets = {name: _target(value) for name, value in labels.items() if _target(value) not in (0, (0,))
               and name != "ignore"}
    if ignore is not None:
        for case_id, (pred, ref, case_spacing) in loaded.items():
            annotated = ref != int(ignore)  # type: ignore[arg-type]  # the ignore label is one value
            loaded[case_id] = (np.where(annotated, pred, 0), np.where(annotated, ref, 0), case_spacing)

    cases = []
    for case_id, (pred, ref, case_spacing) in with_progress(list(loaded.items()), enabled=progress,
                                                            description="evaluating"):
        case_spacing = tuple(case_spacing or (1.0,) * ref.ndim)
        metrics = case_metrics(pred, ref, targets, spacing=case_spacing, surface_tolerance_mm=surface_tolerance_mm)
        inst = None
        if instance_refs is not None:
            inst_ref = _load_labels(instance_refs.get(case_id), case_id, "instance reference")[0]
            foreground = sorted({v for value in targets.values() for v in np.atleast_1d(value).tolist()})
            inst = instance_scores(pred, inst_ref, foreground=foreground, border_label=border_label).to_dict()
            if border_label is not None:  # the same predictions without the border step: touching objects merge
                inst["without_border"] = instance_scores(pred, inst_ref, foreground=foreground).to_dict()
        cases.append(CaseMetrics(case_id, metrics, case_spacing, image_diagonal_mm(ref.shape, case_spacing), inst))

    instances = None
    if instance_refs:
        instances = aggregate_instance_scores([c.instances for c in cases])
        instances["method"] = "border" if border_label is not None else "connected components"
        if border_label is not None:
            instances["without_border"] = aggregate_instance_scores([(c.instances or {}).get("without_border")
                                                                     for c in cases])
    summary = summarise(cases, targets, surface_tolerance_mm=surface_tolerance_mm, instances=instances)
    if output is not None:
        summary.save(output)
    return summary


def summarise(cases: list[CaseMetrics], labels: Mapping[str, int | tuple[int, ...]], *,
              surface_tolerance_mm: float = 1.0,
              instances: dict | None = None) -> EvaluationSummary:
    """Mean and standard deviation over cases of every class and metric (NaNs ignored), and the foreground mean."""
    mean = {name: {m: _nanmean([c.metrics[name][m] for c in cases]) for m in METRICS} for name in labels}
    std = {name: {m: _nanstd([c.metrics[name][m] for c in cases]) for m in METRICS} for name in labels}
    foreground = {m: _nanmean([mean[name][m] for name in labels]) for m in METRICS}
    return EvaluationSummary(dict(labels), tuple(sorted(cases, key=lambda c: c.case_id)), mean, std, foreground,
                             surface_tolerance_mm, instances)


# --------------------------------------------------------------------------------------------------- helpers


def _instances_of_dataset(ground_truth) -> tuple[Path | None, int | None]:
    """A dataset converted from instance masks: its ``instancesTr`` folder and border class, else ``(None, None)``."""
    from tutorseg.data.dataset import Dataset

    if not isinstance(ground_truth, Dataset):
        return None, None
    meta = ground_truth.metadata.get("instances")
    if not isinstance(meta, dict) or not (ground_truth.root / str(meta.get("folder", ""))).is_dir():
        return None, None
    return ground_truth.root / str(meta["folder"]), int(meta["border_label"])


def _rand_text(instances: dict) -> str:
    """", Rand F-score 0.7198" (the ISBI 2012 challenge's measure), or nothing for summaries saved before it."""
    score = instances.get("rand_f_score")
    return "" if score is None else f", Rand F-score {score:.4f}"


def _target(value) -> int | tuple[int, ...]:
    """A class's label value, or a region's label values (a list in JSON) as a tuple."""
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else int(value)


def _labels_found(pairs) -> dict[str, int]:
    values = sorted({int(v) for pred, ref, _ in pairs for v in np.unique(ref)} - {0})
    return {f"label_{v}": v for v in values}


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _nanstd(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.std(values)) if values else math.nan


def _none_to_nan(value):
    if isinstance(value, dict):
        return {k: _none_to_nan(v) for k, v in value.items()}
    return math.nan if value is None else value


