"""Post-processing as prediction applies it: keep only the largest connected component of some regions.

A network sometimes predicts small spurious blobs far from the structure. When the structure is a single
connected object (a hippocampus, a liver), removing every component but the largest cleans them up; when it is
not (cells, metastases), the same step deletes true objects. Whether to apply it is decided on cross-validation
(:func:`tutorseg.evaluation.postprocessing.determine_postprocessing`, nnU-Net's ``determine_postprocessing``); this
module holds the decision, :class:`PostprocessingDecision`, saved as ``postprocessing.json``, and applies it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from tutorseg.data.artefacts import read_artefact, write_artefact


def keep_largest_component(segmentation: np.ndarray, labels: tuple[int, ...]) -> np.ndarray:
    """Keep only the largest connected component of the region formed by ``labels``; the rest becomes background.

    As nnU-Net (``remove_all_but_largest_component``, scikit-image's ``label`` with its default full
    connectivity): voxels that touch by a face, an edge or a corner are connected (26 neighbours in 3D, 8 in 2D),
    and components that tie for the largest size are all kept.

    Args:
        segmentation: ``(*spatial)`` label map (not modified).
        labels: the label values that together form the region (one value for a single class).

    Returns:
        A new ``(*spatial)`` label map.

    >>> diagonal = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]])  # one object for nnU-Net, three face-connected ones
    >>> int(keep_largest_component(diagonal, (1,)).sum())
    3
    """
    region = np.isin(segmentation, labels)
    full_connectivity = ndimage.generate_binary_structure(segmentation.ndim, segmentation.ndim)
    components, n = ndimage.label(region, structure=full_connectivity)
    if n <= 1:
        return segmentation.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    kept = sizes == sizes.max()
    kept[0] = False
    result = segmentation.copy()
    result[region & ~kept[components]] = 0
    return result


@dataclass(frozen=True)
class PostprocessingDecision:
    """Which largest-component steps to apply, and the cross-validation numbers behind the decision.

    Attributes:
        steps: the accepted steps in order; each is the tuple of label values forming one region.
        labels: class name -> value (region name -> its label values for region-based labels).
        dice_before: mean Dice per class and ``foreground_mean`` without post-processing.
        dice_after: the same with the accepted steps applied.
        trials: every step tried: ``{"name", "labels", "dice_before", "dice_after", "accepted", "reason"}``.
        num_cases: number of validation cases the decision was made on.
    """

    steps: tuple[tuple[int, ...], ...]
    labels: dict[str, int | tuple[int, ...]]
    dice_before: dict[str, float]
    dice_after: dict[str, float]
    trials: tuple[dict, ...]
    num_cases: int

    def apply(self, segmentation: np.ndarray) -> np.ndarray:
        """Apply the accepted steps to one ``(*spatial)`` label map."""
        for labels in self.steps:
            segmentation = keep_largest_component(segmentation, labels)
        return segmentation

    @classmethod
    def none(cls, labels: Mapping[str, int | tuple[int, ...]]) -> "PostprocessingDecision":
        """No post-processing (for example when there are no validation predictions to decide on)."""
        return cls((), dict(labels), {}, {}, (), 0)

    def to_dict(self) -> dict:
        return {"steps": [list(s) for s in self.steps], "labels": self.labels, "num_cases": self.num_cases,
                "dice_before": self.dice_before, "dice_after": self.dice_after, "trials": list(self.trials)}

    @classmethod
    def from_dict(cls, data: dict) -> "PostprocessingDecision":
        return cls(tuple(tuple(s) for s in data["steps"]), data["labels"], data["dice_before"], data["dice_after"],
                   tuple(data["trials"]), data.get("num_cases", data.get("n_cases", 0)))  # "n_cases" until 0.1

    def save(self, path: str | os.PathLike) -> Path:
        return write_artefact(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PostprocessingDecision":
        return read_artefact(path, cls.from_dict, what="post-processing decision",
                             how_to_make="tutorseg.determine_postprocessing(VALIDATION_PREDICTIONS, DATASET, "
                                         "output=RUN/postprocessing.json)")

    def __repr__(self) -> str:
        lines = [f"PostprocessingDecision({len(self.steps)} step(s) accepted, decided on {self.num_cases} cases)"]
        lines += [f"  {'accepted' if t['accepted'] else 'rejected'}: {t['name']}: {t['reason']}" for t in self.trials]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{t['name']}</td><td>{'yes' if t['accepted'] else 'no'}</td><td>{t['reason']}</td></tr>"
                       for t in self.trials)
        return (f"<p><b>Post-processing</b> decided on {self.num_cases} validation cases</p>"
                f"<table><tr><th>step</th><th>accepted</th><th>why</th></tr>{rows}</table>")
