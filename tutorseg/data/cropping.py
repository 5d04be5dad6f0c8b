"""Crop to the non-zero region, as nnU-Net does before anything else (``nnunetv2/preprocessing/cropping``).

Scans often hold a frame of exact zeros around the body (skull-stripped MRI, padded acquisitions). nnU-Net crops
every case to the bounding box of the voxels that are non-zero in any channel: fingerprinting measures the shapes
*after* this crop (they decide the patch size), and preprocessing stores the cropped case.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def nonzero_mask(image: np.ndarray) -> np.ndarray:
    """Voxels non-zero in any channel, holes filled (nnU-Net's ``create_nonzero_mask``): (*S) bool."""
    mask = np.any(image != 0, axis=0)
    return ndimage.binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """``((start, stop), ...)`` per axis of the True voxels; the whole array when there are none.

    >>> bounding_box(np.array([[0, 0, 0], [0, 1, 1], [0, 0, 0]], bool))
    ((1, 2), (1, 3))
    """
    if not mask.any():
        return tuple((0, s) for s in mask.shape)
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def crop_to_nonzero(image: np.ndarray, label: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """Crop to the non-zero bounding box; mark background outside the non-zero region as -1.

    Args:
        image: (C, *S) image.
        label: (*S) integer label map, or ``None`` (then the returned map is 0 inside, -1 outside the mask).

    Returns:
        (C, *S') cropped image, (*S') int16 label map with -1 outside the non-zero region, and the box.
    """
    mask = nonzero_mask(image)
    box = bounding_box(mask)
    region = tuple(slice(a, b) for a, b in box)
    mask = mask[region]
    cropped = image[(slice(None), *region)]
    if label is None:
        cropped_label = np.where(mask, 0, -1).astype(np.int16)
    else:
        cropped_label = label[region].astype(np.int16, copy=True)
        cropped_label[(cropped_label == 0) & ~mask] = -1
    return cropped, cropped_label, box


def nonzero_bounding_box(image: np.ndarray) -> tuple[tuple[int, int], ...]:
    """The box :func:`crop_to_nonzero` crops to, without building the filled mask (fingerprinting's fast path).

    Filling holes never changes a bounding box, so the box of the voxels non-zero in any channel is the same.

    Args:
        image: ``(C, *spatial)``.

    Returns:
        ``((start, stop), ...)`` per spatial axis; the whole image when it is all zero.
    """
    return bounding_box(np.any(image != 0, axis=0))
