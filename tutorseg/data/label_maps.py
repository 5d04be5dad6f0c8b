"""Comparing two label maps, class by class: the Dice that training's validation and post-processing both use.

(The full set of metrics, from MONAI, is :func:`tutorseg.evaluate`; this is the one number the earlier steps need,
with no dependency beyond numpy.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, labels: Mapping[str, int]) -> dict[str, float]:
    """Dice of each foreground class: ``2 |P & R| / (|P| + |R|)``.

    A class absent from both maps gets NaN, and is left out of means (nnU-Net's convention, as in
    :func:`tutorseg.evaluate`). Background (value 0) is skipped.

    Args:
        prediction: ``(*spatial)`` integer label map.
        reference: ``(*spatial)`` integer label map of the same shape.
        labels: class name -> label value.

    >>> prediction = np.array([0, 1, 1, 2, 0])
    >>> reference = np.array([0, 1, 0, 2, 2])
    >>> dice_per_class(prediction, reference, {"background": 0, "Anterior": 1, "Posterior": 2, "Tail": 3})
    {'Anterior': 0.6666666666666666, 'Posterior': 0.6666666666666666, 'Tail': nan}
    """
    result = {}
    for name, value in labels.items():
        if value == 0:
            continue
        predicted, expected = prediction == value, reference == value
        total = int(predicted.sum()) + int(expected.sum())
        result[name] = 2 * int((predicted & expected).sum()) / total if total else math.nan
    return result
