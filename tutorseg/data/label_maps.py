"""Comparing two label maps, class by class: the Dice that training's validation and post-processing both use.

(The full set of metrics, from MONAI, is :func:`tutorseg.evaluate`; this is the one number the earlier steps need,
with no dependency beyond numpy.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def target_mask(label_map: np.ndarray, values: int | Sequence[int]) -> np.ndarray:
    """The voxels of a class (one label value) or of a region (any of its label values)."""
    if isinstance(values, (int, np.integer)):
        return label_map == values
    return np.isin(label_map, list(values))


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, labels: Mapping[str, int | Sequence[int]], *,
                   ignore: int | None = None) -> dict[str, float]:
    """Dice of each foreground class (or region): ``2 |P & R| / (|P| + |R|)``.

    A class absent from both maps gets NaN, and is left out of means (nnU-Net's convention, as in
    :func:`tutorseg.evaluate`). Background (value 0) and the ignore label are skipped.

    Args:
        prediction: ``(*spatial)`` integer label map.
        reference: ``(*spatial)`` integer label map of the same shape.
        labels: class name -> label value, or region name -> the label values it covers (nnU-Net's region-based
            labels: the region's Dice is that of the masks of those values, as nnU-Net evaluates regions).
        ignore: the ignore label's value: voxels the reference leaves unannotated count for nothing (nnU-Net's
            ``compute_metrics`` with an ignore label).

    >>> prediction = np.array([0, 1, 1, 2, 0])
    >>> reference = np.array([0, 1, 0, 2, 2])
    >>> dice_per_class(prediction, reference, {"background": 0, "Anterior": 1, "Posterior": 2, "Tail": 3})
    {'Anterior': 0.6666666666666666, 'Posterior': 0.6666666666666666, 'Tail': nan}
    >>> dice_per_class(prediction, reference, {"whole": (1, 2), "inner": (2,)})
    {'whole': 0.6666666666666666, 'inner': 0.6666666666666666}
    """
    result = {}
    annotated = None if ignore is None else reference != ignore
    for name, value in labels.items():
        if value == 0 or value == ignore or (not isinstance(value, (int, np.integer)) and tuple(value) == (0,)):
            continue
        predicted, expected = target_mask(prediction, value), target_mask(reference, value)
        if annotated is not None:
            predicted = predicted & annotated
        total = int(predicted.sum()) + int(expected.sum())
        result[name] = 2 * int((predicted & expected).sum()) / total if total else math.nan
    return result
