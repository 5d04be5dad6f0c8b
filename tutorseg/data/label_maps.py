"""Comparing two label maps, class by class: the Dice that training's validation and post-processing both use.

(The full set of metrics, from MONAI, is :func:`tutorseg.evaluate`; this is the one number the earlier steps need,
with no dependency beyond numpy.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, labels: Mapping[str, int], *,
                   ignore: int | None = None) -> dict[str, float]:
    """Dice of each foreground class: ``2 |P & R| / (|P| + |R|)``.

    A class absent from both maps gets NaN, and is left out of means (nnU-Net's convention, as in
    :func:`tutorseg.evaluate`). Background (value 0) and the ignore label are skipped.

    Args:
        prediction: ``(*spatial)`` integer label map.
        reference: ``(*spatial)`` integer label map of the same shape.
        labels: class name -> label value.
        ignore: the ignore label's value: voxels the reference leaves unannotated count for nothing (nnU-Net's
            ``compute_metrics`` with an ignore label).

    >>> prediction = np.array([0, 1, 1, 2, 0])
    >>> reference = np.array([0, 1, 0, 2, 2])
    >>> dice_per_class(prediction, reference, {"background": 0, "Anterior": 1, "Posterior": 2, "Tail": 3})
    {'Anterior': 0.6666666666666666, 'Posterior': 0.6666666666666666, 'Tail': nan}
    """
    result = {}
    annotated = None if ignore is None else reference != ignore
    for name, value in labels.items():
        if value == 0 or value == ignore:
            continue
        predicted, expected = prediction == value, reference == value
        if annotated is not None:
            predicted = predicted & annotated
        total = int(predicted.sum()) + int(expected.sum())
        result[name] = 2 * int((predicted & expected).sum()) / total if total else math.nan
    return result
