"""Metric pitfalls, built on a real case: what Dice, HD95 and surface Dice say about errors a learner can picture.

Each pitfall is a prediction made from the case's own reference by one small, known change, scored with
:func:`tutorseg.evaluation.metrics.case_metrics` (the numbers ``tutorseg evaluate`` reports):

- ``"tiny stray blob"``: the reference plus a 7-voxel sphere of the class far from the structure. Dice barely moves,
  and HD95 does not move at all: it is the 95th percentile of the boundary distances, and 7 voxels are less than
  5 % of the boundary. (The plain Hausdorff distance, the maximum, would jump.)
- ``"stray blob"``: the smallest sphere whose boundary is more than 5 % of the prediction's. Dice still barely
  moves, HD95 jumps to about the blob's distance: past 5 % of the boundary, one false positive anywhere decides
  a distance metric, while an overlap metric only counts its voxels.
- ``"stray blob, largest component kept"``: nnU-Net's post-processing (:func:`keep_largest_component`) removes it:
  the metrics are back to perfect.
- ``"shifted by one voxel"``: the reference moved by one voxel along the first axis. On a small structure Dice drops
  a lot, although every boundary is only one voxel off; the surface Dice, with a tolerance of one voxel's size,
  stays 1.
- ``"empty reference"``: a case without the structure, and a prediction with one small blob. Dice is 0 and HD95 is
  the worst possible (the image diagonal): one false blob on an empty case counts as a complete failure. Were the
  prediction empty too, every metric would be NaN (nothing to score; left out of the mean), as nnU-Net does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tutorseg.data.problems import TutorsegError
from tutorseg.evaluation.metrics import case_metrics
from tutorseg.prediction.postprocessing import keep_largest_component

TINY_BLOB_RADIUS_VOX = 1  # a sphere of radius 1 voxel: 7 voxels in 3D (the centre and its 6 face neighbours), 5 in 2D
HD_PERCENTILE = 95  # HD95 ignores the worst 5 % of the boundary distances


@dataclass(frozen=True)
class Pitfall:
    """One constructed prediction of a real case and its scores.

    Attributes:
        name: which pitfall (see the module's docstring).
        what: the change, in words, with its numbers (where the blob is, how far).
        reference: ``(*spatial)`` the reference label map it is scored against.
        prediction: ``(*spatial)`` the constructed prediction.
        metrics: class name -> {"dice", "iou", "hd95_mm", "surface_dice", ...}, as ``tutorseg evaluate`` reports.
    """

    name: str
    what: str
    reference: np.ndarray
    prediction: np.ndarray
    metrics: dict[str, dict[str, float]]


def _sphere(shape: tuple[int, ...], centre: tuple[int, ...], radius: int) -> np.ndarray:
    grid = np.indices(shape)
    distance2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return distance2 <= radius ** 2


def boundary_voxels(mask: np.ndarray) -> int:
    """Voxels of ``mask`` with a face neighbour outside it: what surface metrics measure distances from."""
    from scipy import ndimage

    return int(np.count_nonzero(mask & ~ndimage.binary_erosion(mask)))


def farthest_background_voxel(reference: np.ndarray, margin: int = TINY_BLOB_RADIUS_VOX + 1, *,
                              distance: np.ndarray | None = None) -> tuple[int, ...]:
    """The background voxel farthest from every foreground voxel, at least ``margin`` voxels inside the image.

    ``distance``: the distance transform of ``reference == 0``, when the caller already has it.
    """
    from scipy import ndimage

    if distance is None:
        distance = ndimage.distance_transform_edt(reference == 0)
    inner = np.zeros(reference.shape, dtype=bool)
    inner[tuple(slice(margin, n - margin) for n in reference.shape)] = True
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(np.where(inner, distance, -1))), reference.shape))


def metric_pitfalls(reference: np.ndarray, labels: Mapping[str, int], *, spacing: tuple[float, ...] | None = None,
                    label_value: int | None = None, surface_tolerance_mm: float | None = None) -> list[Pitfall]:
    """The pitfalls of the module's docstring, built from one real reference label map.

    Args:
        reference: ``(*spatial)`` integer label map of a real case.
        labels: class name -> value, background excluded (the dataset's ``foreground_labels``).
        spacing: voxel size per axis in mm (1 per axis when ``None``).
        label_value: the class the blob and the empty reference are made of (default: the first in ``labels``).
        surface_tolerance_mm: the surface Dice's tolerance (default: the largest voxel size, one voxel's error).

    Returns:
        The pitfalls, in the module docstring's order; the first is the perfect prediction itself.

    Raises:
        TutorsegError: the reference holds none of ``label_value``.
    """
    spacing = tuple(float(s) for s in (spacing or (1.0,) * reference.ndim))
    value = int(label_value if label_value is not None else next(iter(labels.values())))
    if not np.any(reference == value):
        raise TutorsegError(f"the reference has no voxel of label {value}; pick a case that has it "
                            f"(labels: {dict(labels)})")
    tolerance = float(surface_tolerance_mm if surface_tolerance_mm is not None else max(spacing))
    reference = reference.astype(np.int32)

    def scored(name: str, what: str, prediction: np.ndarray, ref: np.ndarray = reference) -> Pitfall:
        return Pitfall(name, what, ref, prediction,
                       case_metrics(prediction, ref, labels, spacing=spacing, surface_tolerance_mm=tolerance))

    from scipy import ndimage

    structure = reference == value
    foreground = np.argwhere(structure)
    distance = ndimage.distance_transform_edt(reference == 0)  # once: every blob goes where it is largest

    def blob_of(radius: int) -> tuple[np.ndarray, str, np.ndarray]:
        centre = farthest_background_voxel(reference, margin=radius + 1, distance=distance)
        blob = _sphere(reference.shape, centre, radius)
        prediction = reference.copy()
        prediction[blob] = value
        gap_mm = float(np.min(np.sqrt((((foreground - np.array(centre)) * np.array(spacing)) ** 2).sum(axis=1))))
        return blob, (f"{int(blob.sum())} voxels of label {value} (a sphere of radius {radius}) added at voxel "
                      f"{centre}, {gap_mm:.1f} mm from the structure"), prediction

    def past_hd95(radius: int) -> bool:
        """Whether a sphere of ``radius`` holds more than HD95's 5 % of the prediction's boundary.

        With a margin of 1.2: MONAI's boundary is not exactly this count of voxels.
        """
        sphere = boundary_voxels(_sphere(reference.shape, tuple(n // 2 for n in reference.shape), radius))
        return sphere / (sphere + boundary_voxels(structure)) > (100 - HD_PERCENTILE) / 100 * 1.2

    tiny, tiny_what, with_tiny = blob_of(TINY_BLOB_RADIUS_VOX)
    radii = range(TINY_BLOB_RADIUS_VOX + 1, max(min(reference.shape) // 4, TINY_BLOB_RADIUS_VOX + 2))
    blob, what, with_blob = blob_of(next((r for r in radii if past_hd95(r)), radii[-1]))
    shifted = np.zeros_like(reference)
    shifted[1:] = reference[:-1]
    empty = np.zeros_like(reference)
    empty_prediction = np.where(tiny, value, 0).astype(np.int32)
    return [
        scored("perfect", "the reference itself", reference.copy()),
        scored("tiny stray blob", tiny_what, with_tiny),
        scored("stray blob", what, with_blob),
        scored("stray blob, largest component kept", "the stray blob's prediction after nnU-Net's post-processing "
                                                     "(largest connected component of the class)",
               keep_largest_component(with_blob, (value,))),
        scored("shifted by one voxel", f"the reference moved by one voxel ({spacing[0]:g} mm) along the first axis",
               shifted),
        scored("empty reference", f"a case without label {value}: the reference is empty, the prediction holds the "
                                  f"{int(tiny.sum())}-voxel blob", empty_prediction, empty),
    ]


def pitfall_table(pitfalls: list[Pitfall], class_name: str) -> str:
    """The pitfalls' Dice, HD95 and surface Dice of one class, as an aligned text table."""
    lines = [f"{'prediction':38s} {'Dice':>6s} {'HD95 (mm)':>10s} {'surface Dice':>13s}"]
    for p in pitfalls:
        m = p.metrics[class_name]
        lines.append(f"{p.name:38s} {m['dice']:6.3f} {m['hd95_mm']:10.2f} {m['surface_dice']:13.3f}")
    return "\n".join(lines)
