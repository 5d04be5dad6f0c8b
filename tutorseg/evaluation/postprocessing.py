"""Post-processing decided from cross-validation, as nnU-Net: keep only the largest connected component?

A network sometimes predicts small spurious blobs far from the structure. When the structure is a single
connected object (a hippocampus, a liver), removing every component but the largest cleans them up; when it is
not (cells, metastases), the same step deletes true objects. nnU-Net does not guess: it tries the step on the
cross-validation predictions and keeps it only if the Dice improves (``nnunetv2/postprocessing/
remove_connected_components.py``, ``determine_postprocessing``). tutorseg follows the same two stages:

1. all foreground classes together as one region: accepted when the mean foreground Dice improves *and no class
   gets worse* (nnU-Net's defensive rule);
2. then, for datasets with more than one class, each class on its own, in label order, applied on top of the
   accepted steps: accepted when that class's mean Dice improves.

For region-based labels the regions take the classes' place (nnU-Net's ``foreground_regions``): stage 2 keeps the
largest component of each region, and every Dice is a region's.

The decision and its numbers are saved as ``postprocessing.json``
(:class:`~tutorseg.prediction.postprocessing.PostprocessingDecision`); :func:`tutorseg.predict` applies it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np

from tutorseg.data.label_maps import dice_per_class
from tutorseg.evaluation.metrics import EvaluationError, _load_labels, _prediction_source, _reference_source
from tutorseg.prediction.postprocessing import PostprocessingDecision, keep_largest_component


def _mean_dice(pairs, labels: Mapping[str, int | tuple[int, ...]], ignore: int | None = None) -> dict[str, float]:
    """Class name -> mean Dice over cases (NaN ignored), plus ``"foreground_mean"``."""
    per_case = [dice_per_class(pred, ref, labels, ignore=ignore) for pred, ref in pairs]
    means = {}
    for name in labels:
        values = [case[name] for case in per_case if not math.isnan(case[name])]
        means[name] = float(np.mean(values)) if values else math.nan
    defined = [v for v in means.values() if not math.isnan(v)]
    means["foreground_mean"] = float(np.mean(defined)) if defined else math.nan
    return means


def determine_postprocessing(predictions, references, *, labels: Mapping[str, int | tuple[int, ...]] | None = None,
                             output: str | os.PathLike | None = None,
                             ignore_label: int | None = None) -> PostprocessingDecision:
    """Decide, on validation predictions, whether keeping the largest connected component improves Dice.

    Args:
        predictions: folder of validation predictions (``CASE.nii.gz``/``CASE.png``) or mapping case id -> array.
        references: their references: a folder, a dataset folder / :class:`~tutorseg.Dataset`, or a mapping.
        labels: class name -> value (background excluded), or region name -> label values; default: the
            dataset's (its regions for region-based labels), else the values found.
        output: where to save ``postprocessing.json``, or ``None``.
        ignore_label: the value of unannotated reference voxels, left out of every Dice (default: the dataset's
            label named ``ignore``, if any).

    Returns:
        The :class:`PostprocessingDecision`.
    """
    predicted, predicted_labels = _prediction_source(predictions)
    refs, dataset_labels = _reference_source(references)
    if not predicted:
        raise EvaluationError(f"no validation predictions in {predictions} to decide the post-processing on")
    missing = sorted(set(predicted) - set(refs))
    if missing:
        raise EvaluationError(f"validation case(s) without reference: {', '.join(missing[:5])}")
    pairs = [(_load_labels(predicted[c], c, "prediction")[0], _load_labels(refs[c], c, "reference")[0])
             for c in sorted(predicted)]
    if labels is None:
        labels = dataset_labels or predicted_labels or {
            f"label_{v}": int(v) for v in sorted({int(v) for _, ref in pairs for v in np.unique(ref)} - {0})}
    if ignore_label is None and "ignore" in labels:
        ignore_label = int(labels["ignore"])  # type: ignore[arg-type]  # the ignore label is one value
    targets = {name: _values(value) for name, value in labels.items() if _values(value) != (0,) and name != "ignore"}
    labels = {name: (values[0] if len(values) == 1 else values) for name, values in targets.items()}

    baseline = _mean_dice(pairs, labels, ignore_label)
    steps, trials, current, current_dice = [], [], pairs, baseline

    # stage 1: all foreground as one region
    everything = tuple(sorted({v for values in targets.values() for v in values}))
    trial_pairs = [(keep_largest_component(pred, everything), ref) for pred, ref in current]
    trial_dice = _mean_dice(trial_pairs, labels, ignore_label)
    worse = [n for n in labels if trial_dice[n] < current_dice[n]]
    improved = trial_dice["foreground_mean"] > current_dice["foreground_mean"]
    accepted = improved and not worse
    reason = (f"mean foreground Dice {current_dice['foreground_mean']:.4f} -> {trial_dice['foreground_mean']:.4f}"
              + (f"; worse for {', '.join(worse)}" if worse else ""))
    trials.append({"name": "largest component of all foreground", "labels": list(everything),
                   "dice_before": current_dice, "dice_after": trial_dice, "accepted": accepted, "reason": reason})
    if accepted:
        steps.append(everything)
        current, current_dice = trial_pairs, trial_dice

    # stage 2: each class on its own (only meaningful with several classes)
    if len(labels) > 1:
        for name, values in targets.items():
            trial_pairs = [(keep_largest_component(pred, values), ref) for pred, ref in current]
            trial_dice = _mean_dice(trial_pairs, labels, ignore_label)
            accepted = trial_dice[name] > current_dice[name]
            trials.append({"name": f"largest component of {name}", "labels": list(values),
                           "dice_before": current_dice, "dice_after": trial_dice, "accepted": accepted,
                           "reason": f"{name} Dice {current_dice[name]:.4f} -> {trial_dice[name]:.4f}"})
            if accepted:
                steps.append(values)
                current, current_dice = trial_pairs, trial_dice

    decision = PostprocessingDecision(tuple(steps), labels, baseline, current_dice, tuple(trials), len(pairs))
    if output is not None:
        decision.save(output)
    return decision


def _values(value) -> tuple[int, ...]:
    """A class's value or a region's values, as a tuple of label values."""
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
