"""From semantic masks to instances, and instance metrics (matched F1 at IoU 0.5, panoptic quality).

A semantic segmentation says *which class* each voxel belongs to; an instance segmentation also says *which
object*. For datasets of many small separate objects (nuclei, cells) the simplest bridge is connected components:
every connected blob of foreground becomes one object. Touching objects then merge, which is exactly the
difference between the two tasks that a learner should see in the numbers.

Matching follows Kirillov et al., "Panoptic Segmentation" (CVPR 2019): a predicted and a reference object match
when their IoU is above 0.5; at that threshold every object has at most one partner, so no assignment problem has
to be solved. Then

- F1 = 2 TP / (2 TP + FP + FN)   (matched F1, as in the cell-tracking and nucleus challenges),
- SQ = mean IoU of the matched pairs, RQ = F1, PQ = SQ x RQ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class InstanceScores:
    """How well predicted objects match reference objects in one image.

    Attributes:
        n_reference: number of reference objects.
        n_predicted: number of predicted objects.
        tp: matched pairs (IoU > ``iou_threshold``); fp: unmatched predictions; fn: unmatched references.
        sum_iou: sum of the matched pairs' IoU (for panoptic quality over several images).
        iou_threshold: the matching threshold (0.5).
    """

    n_reference: int
    n_predicted: int
    tp: int
    fp: int
    fn: int
    sum_iou: float
    iou_threshold: float = 0.5

    @property
    def f1(self) -> float:
        return _f1(self.tp, self.fp, self.fn)

    @property
    def pq(self) -> float:
        return _pq(self.sum_iou, self.tp, self.fp, self.fn)

    def to_dict(self) -> dict:
        return {**asdict(self), "f1": self.f1, "pq": self.pq}


def _f1(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else float("nan")


def _pq(sum_iou: float, tp: int, fp: int, fn: int) -> float:
    denominator = tp + 0.5 * fp + 0.5 * fn
    return sum_iou / denominator if denominator else float("nan")


def label_instances(mask: np.ndarray, *, min_size: int = 0, full_connectivity: bool = False) -> tuple[np.ndarray, int]:
    """Connected components of a binary mask: each object gets its own integer 1..N.

    Args:
        mask: ``(*spatial)`` boolean (or 0/non-zero) mask, 2D or 3D.
        min_size: components smaller than this many voxels are dropped (speckle).
        full_connectivity: also connect diagonal neighbours (8-/26-connectivity); default face neighbours only
            (4-/6-connectivity, scipy's default).

    Returns:
        ``(instances, n)``: ``(*spatial)`` int32 map (0 = background) and the number of objects.
    """
    mask = np.asarray(mask) != 0
    structure = np.ones((3,) * mask.ndim, bool) if full_connectivity else None
    instances, n = ndimage.label(mask, structure=structure)
    if min_size > 0 and n:
        sizes = np.bincount(instances.ravel())
        keep = sizes >= min_size
        keep[0] = False
        relabel = np.zeros(n + 1, np.int32)
        relabel[keep] = np.arange(1, int(keep.sum()) + 1)
        instances, n = relabel[instances], int(keep.sum())
    return instances.astype(np.int32), int(n)


def match_instances(predicted: np.ndarray, reference: np.ndarray, *, iou_threshold: float = 0.5) -> InstanceScores:
    """Match two instance maps (0 = background, each object its own integer) and count TP, FP, FN.

    Args:
        predicted: ``(*spatial)`` integer instance map.
        reference: ``(*spatial)`` integer instance map, same shape.
        iou_threshold: a pair matches when its IoU is above this (0.5 makes the matching unique).
    """
    pred_ids, pred_index = np.unique(predicted, return_inverse=True)
    ref_ids, ref_index = np.unique(reference, return_inverse=True)
    # contingency table: overlap[i, j] = voxels of predicted object i inside reference object j
    overlap = np.zeros((len(pred_ids), len(ref_ids)), np.int64)
    np.add.at(overlap, (pred_index.ravel(), ref_index.ravel()), 1)
    pred_fg, ref_fg = pred_ids != 0, ref_ids != 0
    overlap = overlap[np.ix_(pred_fg, ref_fg)]
    pred_sizes = np.bincount(pred_index.ravel(), minlength=len(pred_ids))[pred_fg]
    ref_sizes = np.bincount(ref_index.ravel(), minlength=len(ref_ids))[ref_fg]
    union = pred_sizes[:, None] + ref_sizes[None, :] - overlap
    iou = np.where(union > 0, overlap / np.maximum(union, 1), 0.0)
    matched = iou > iou_threshold
    tp = int(matched.sum())
    return InstanceScores(n_reference=int(ref_fg.sum()), n_predicted=int(pred_fg.sum()), tp=tp,
                          fp=int(pred_fg.sum()) - tp, fn=int(ref_fg.sum()) - tp, sum_iou=float(iou[matched].sum()),
                          iou_threshold=iou_threshold)


def instance_scores(semantic_prediction: np.ndarray, reference_instances: np.ndarray, *,
                    foreground: list[int] | None = None, iou_threshold: float = 0.5) -> InstanceScores:
    """Turn a semantic prediction into instances (connected components) and match them with reference instances.

    Args:
        semantic_prediction: ``(*spatial)`` label map.
        reference_instances: ``(*spatial)`` instance map (0 = background).
        foreground: the label values that form objects (default: every non-zero value).
        iou_threshold: the overlap at which a predicted and a reference object count as a match (0.5).
    """
    mask = semantic_prediction != 0 if foreground is None else np.isin(semantic_prediction, foreground)
    predicted, _ = label_instances(mask)
    return match_instances(predicted, reference_instances, iou_threshold=iou_threshold)


def aggregate_instance_scores(per_case: list[dict | None]) -> dict:
    """Dataset-wide instance metrics from per-case ``InstanceScores.to_dict()``: counts summed, then F1 and PQ."""
    rows = [row for row in per_case if row]
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    sum_iou = sum(r["sum_iou"] for r in rows)
    return {"tp": tp, "fp": fp, "fn": fn, "f1": _f1(tp, fp, fn), "pq": _pq(sum_iou, tp, fp, fn),
            "sq": sum_iou / tp if tp else float("nan"), "n_cases": len(rows)}
