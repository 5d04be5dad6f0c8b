"""From semantic masks to instances, and instance metrics (matched F1 at IoU 0.5, panoptic quality, Rand F-score).

A semantic segmentation says *which class* each voxel belongs to; an instance segmentation also says *which
object*. For datasets of many small separate objects (nuclei, cells) the simplest bridge is connected components:
every connected blob of foreground becomes one object. Touching objects then merge, which is exactly the
difference between the two tasks that a learner should see in the numbers.

The usual remedy, taught here, is a **border class** (e.g. the three-class U-Nets of nucleus segmentation, Caicedo
et al., "Evaluation of deep learning strategies for nucleus segmentation in fluorescence images", Cytometry A 2019):
from instance masks, each object's outermost voxels become a class of their own (:func:`border_classes`), so that
two touching objects are separated by border voxels in the training labels. A network trained on
background / interior / border predicts the separation; the instances are then the connected components of the
*interior*, grown back into the border voxels around them (:func:`instances_from_border_classes`).

Matching follows Kirillov et al., "Panoptic Segmentation" (CVPR 2019): a predicted and a reference object match
when their IoU is above 0.5; at that threshold every object has at most one partner, so no assignment problem has
to be solved. Then

- F1 = 2 TP / (2 TP + FP + FN)   (matched F1, as in the cell-tracking and nucleus challenges),
- SQ = mean IoU of the matched pairs, RQ = F1, PQ = SQ x RQ.

For membrane (boundary) segmentations, where the objects are what the boundaries enclose, the ISBI 2012 EM
challenge ranks by the foreground-restricted **Rand F-score** (Arganda-Carreras et al., "Crowdsourcing the creation
of image segmentation algorithms for connectomics", Front. Neuroanat. 2015): :func:`rand_f_score`.
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
        rand_sums: ``(sum n^2, sum a^2, sum b^2)`` of :func:`rand_f_score` over the reference's objects, kept so
            that the Rand F-score of several images pools their voxel pairs (:func:`aggregate_instance_scores`).
    """

    n_reference: int
    n_predicted: int
    tp: int
    fp: int
    fn: int
    sum_iou: float
    iou_threshold: float = 0.5
    rand_sums: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def f1(self) -> float:
        return _f1(self.tp, self.fp, self.fn)

    @property
    def pq(self) -> float:
        return _pq(self.sum_iou, self.tp, self.fp, self.fn)

    @property
    def rand_f_score(self) -> float:
        return _rand_f(*self.rand_sums)

    def to_dict(self) -> dict:
        return {**asdict(self), "rand_sums": list(self.rand_sums), "f1": self.f1, "pq": self.pq,
                "rand_f_score": self.rand_f_score}


def _f1(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else float("nan")


def _pq(sum_iou: float, tp: int, fp: int, fn: int) -> float:
    denominator = tp + 0.5 * fp + 0.5 * fn
    return sum_iou / denominator if denominator else float("nan")


def _rand_sums(overlap: np.ndarray) -> tuple[float, float, float]:
    """``(sum n^2, sum a^2, sum b^2)`` of a contingency table ``n`` (rows: predicted ids; columns: reference objects)."""
    overlap = overlap.astype(np.float64)
    return (float((overlap ** 2).sum()), float((overlap.sum(axis=1) ** 2).sum()),
            float((overlap.sum(axis=0) ** 2).sum()))


def _rand_f(sum_n2: float, sum_a2: float, sum_b2: float) -> float:
    """The harmonic mean of precision ``sum_n2 / sum_a2`` and recall ``sum_n2 / sum_b2``."""
    return 2 * sum_n2 / (sum_a2 + sum_b2) if sum_n2 else float("nan")


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


# panoptic ids: class * 1000 + instance (Cityscapes' encoding, COCO panopticapi's ``label_divisor``); instance 0 = stuff
PANOPTIC_LABEL_DIVISOR = 1000


def panoptic_map(label_map: np.ndarray, things, *, min_size: int = 0) -> np.ndarray:
    """Semantic label map -> panoptic ids: a class for every pixel, and an instance for every object of a thing class.

    Semantic segmentation (what nnU-Net does) gives each voxel a class; instance segmentation tells the objects
    apart (two touching cells are two instances); panoptic segmentation (Kirillov et al. 2019) does both: *stuff*
    (uncountable: membrane, background tissue) keeps its class, and each connected object of a *thing* class
    (countable: cells, nuclei, lesions) gets its own instance number.

    Args:
        label_map: ``(*spatial)`` integer classes.
        things: the class values whose connected components are objects; every other class is stuff.
        min_size: objects smaller than this many voxels stay stuff (instance 0).

    Returns:
        ``(*spatial)`` int64: ``class * PANOPTIC_LABEL_DIVISOR + instance``, instance 1, 2, ... per object of each
        thing class (face-connected), 0 for stuff.

    >>> labels = np.array([[1, 1, 0, 1],
    ...                    [0, 0, 0, 1]])
    >>> panoptic_map(labels, things=[1])   # two separate objects of class 1; class 0 is stuff
    array([[1001, 1001,    0, 1002],
           [   0,    0,    0, 1002]])
    """
    label_map = np.asarray(label_map)
    panoptic = label_map.astype(np.int64) * PANOPTIC_LABEL_DIVISOR
    for value in things:
        instances, _ = label_instances(label_map == value, min_size=min_size)
        panoptic += instances
    return panoptic


INTERIOR, BORDER = 1, 2  # the class values of a border-class dataset (background 0)


def border_classes(instances: np.ndarray, *, width: int = 1) -> np.ndarray:
    """Background / interior / border classes (0 / 1 / 2) from an instance map, for training with a border class.

    An object voxel is *border* when a voxel of another object or of the background lies within ``width`` voxels
    (a ``2 width + 1`` cube around it), else *interior*. Objects that touch thus get border voxels on both sides of
    their contact, and the interiors of different objects never touch.

    Args:
        instances: ``(*spatial)`` integer map, 0 = background, each object its own integer (``instancesTr`` style).
        width: how many voxels deep the border reaches into each object.

    >>> two_touching = np.array([[1, 1, 1, 2, 2, 2]] * 3)
    >>> border_classes(np.pad(two_touching, 1)).tolist()[2]
    [0, 2, 1, 2, 2, 1, 2, 0]
    """
    instances = np.asarray(instances)
    size = 2 * int(width) + 1
    same = ((ndimage.maximum_filter(instances, size=size, mode="nearest") == instances)
            & (ndimage.minimum_filter(instances, size=size, mode="nearest") == instances))
    classes = np.zeros(instances.shape, np.uint8)
    classes[instances > 0] = BORDER
    classes[(instances > 0) & same] = INTERIOR
    return classes


def instances_from_border_classes(label_map: np.ndarray, *, interior: int = INTERIOR, border: int = BORDER,
                                  min_size: int = 0) -> tuple[np.ndarray, int]:
    """Instances from a background / interior / border prediction: interior components grown into the border.

    Each connected component of the interior (face connectivity) is one object; every border voxel then joins the
    object whose interior is nearest (Euclidean distance, as scikit-image's ``expand_labels``), so objects get
    their border back and touching objects stay apart. Border voxels form no object of their own.

    Args:
        label_map: ``(*spatial)`` predicted classes.
        interior: the interior class's value.
        border: the border class's value.
        min_size: interior components smaller than this many voxels are dropped first (speckle).

    Returns:
        ``(instances, n)``: ``(*spatial)`` int32 map (0 = background) and the number of objects.

    >>> prediction = np.array([[2, 1, 2, 2, 1, 2]])
    >>> instances_from_border_classes(prediction)[0].tolist()
    [[1, 1, 1, 2, 2, 2]]
    """
    seeds, n = label_instances(label_map == interior, min_size=min_size)
    if n == 0:
        return seeds, 0
    _, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    grown = seeds[tuple(nearest)]
    objects = (label_map == interior) | (label_map == border)
    return np.where(objects, grown, 0).astype(np.int32), n


def match_instances(predicted: np.ndarray, reference: np.ndarray, *, iou_threshold: float = 0.5) -> InstanceScores:
    """Match two instance maps (0 = background, each object its own integer) and count TP, FP, FN.

    Args:
        predicted: ``(*spatial)`` integer instance map.
        reference: ``(*spatial)`` integer instance map, same shape.
        iou_threshold: a pair matches when its IoU is above this (0.5 makes the matching unique).
    """
    pred_ids, ref_ids, overlap = _contingency(predicted, reference)
    pred_fg, ref_fg = pred_ids != 0, ref_ids != 0
    rand_sums = _rand_sums(overlap[:, ref_fg])  # every predicted id, 0 too, inside the reference's objects
    pred_sizes, ref_sizes = overlap.sum(axis=1)[pred_fg], overlap.sum(axis=0)[ref_fg]
    overlap = overlap[np.ix_(pred_fg, ref_fg)]
    union = pred_sizes[:, None] + ref_sizes[None, :] - overlap
    iou = np.where(union > 0, overlap / np.maximum(union, 1), 0.0)
    matched = iou > iou_threshold
    tp = int(matched.sum())
    return InstanceScores(n_reference=int(ref_fg.sum()), n_predicted=int(pred_fg.sum()), tp=tp,
                          fp=int(pred_fg.sum()) - tp, fn=int(ref_fg.sum()) - tp, sum_iou=float(iou[matched].sum()),
                          iou_threshold=iou_threshold, rand_sums=rand_sums)


def _contingency(predicted: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ids of both maps and the table ``overlap[i, j]`` = voxels of predicted id i inside reference id j."""
    pred_ids, pred_index = np.unique(predicted, return_inverse=True)
    ref_ids, ref_index = np.unique(reference, return_inverse=True)
    overlap = np.zeros((len(pred_ids), len(ref_ids)), np.int64)
    np.add.at(overlap, (pred_index.ravel(), ref_index.ravel()), 1)
    return pred_ids, ref_ids, overlap


def instance_scores(semantic_prediction: np.ndarray, reference_instances: np.ndarray, *,
                    foreground: list[int] | None = None, iou_threshold: float = 0.5,
                    border_label: int | None = None) -> InstanceScores:
    """Turn a semantic prediction into instances and match them with reference instances.

    Args:
        semantic_prediction: ``(*spatial)`` label map.
        reference_instances: ``(*spatial)`` instance map (0 = background).
        foreground: the label values that form objects (default: every non-zero value).
        iou_threshold: the overlap at which a predicted and a reference object count as a match (0.5).
        border_label: the border class of a border-class prediction: the objects are the interior's components
            grown into the border (:func:`instances_from_border_classes`; the interior is the other foreground
            value). ``None``: the connected components of the foreground.
    """
    if border_label is not None:
        values = [v for v in (foreground or np.unique(semantic_prediction).tolist()) if v not in (0, border_label)]
        interior = int(values[0]) if values else INTERIOR
        predicted, _ = instances_from_border_classes(semantic_prediction, interior=interior, border=border_label)
    else:
        mask = semantic_prediction != 0 if foreground is None else np.isin(semantic_prediction, foreground)
        predicted, _ = label_instances(mask)
    return match_instances(predicted, reference_instances, iou_threshold=iou_threshold)


def rand_f_score(predicted: np.ndarray, reference: np.ndarray) -> dict:
    """The foreground-restricted Rand F-score of two instance maps (0 = boundary), as the ISBI 2012 challenge ranks.

    Pick two voxels at random inside the reference's objects: the score asks whether the prediction puts them
    together exactly when the reference does. With ``n[i, j]`` the voxels of predicted object ``i`` inside
    reference object ``j``, ``a[i]`` and ``b[j]`` its row and column sums (voxels where the reference is 0 are left
    out, as the challenge does; predicted 0 counts as one object, as scikit-image's ``adapted_rand_error`` counts it):

    - precision (how rarely the prediction merges) = sum n^2 / sum a^2,
    - recall (how rarely it splits) = sum n^2 / sum b^2,
    - Rand F-score = their harmonic mean = 1 - the "adapted Rand error" of SNEMI3D.

    Args:
        predicted: ``(*spatial)`` integer instance map.
        reference: ``(*spatial)`` integer instance map, same shape; its 0 voxels are not scored.

    Returns:
        ``{"rand_f_score", "rand_precision", "rand_recall", "n_voxels"}`` (scores nan without reference objects).
    """
    inside = np.asarray(reference) != 0
    sum_n2, sum_a2, sum_b2 = _rand_sums(_contingency(np.asarray(predicted)[inside], np.asarray(reference)[inside])[2])
    if sum_n2 == 0:
        return {"rand_f_score": float("nan"), "rand_precision": float("nan"), "rand_recall": float("nan"),
                "n_voxels": 0}
    return {"rand_f_score": _rand_f(sum_n2, sum_a2, sum_b2), "rand_precision": sum_n2 / sum_a2,
            "rand_recall": sum_n2 / sum_b2, "n_voxels": int(inside.sum())}


def aggregate_instance_scores(per_case: list[dict | None]) -> dict:
    """Dataset-wide instance metrics from per-case ``InstanceScores.to_dict()``: sums first, then the scores.

    TP, FP, FN and the matched IoU are summed, then F1 and PQ computed; the Rand F-score's voxel-pair sums are pooled,
    which scores all cases as one stack with each case's objects kept apart (as bench/bench_budget.py scores the ISBI
    validation slices), so that a large image weighs by its voxels, not as one case.
    """
    rows = [row for row in per_case if row]
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    sum_iou = sum(r["sum_iou"] for r in rows)
    rand_sums = [sum(r.get("rand_sums", (0.0, 0.0, 0.0))[i] for r in rows) for i in range(3)]
    return {"tp": tp, "fp": fp, "fn": fn, "f1": _f1(tp, fp, fn), "pq": _pq(sum_iou, tp, fp, fn),
            "sq": sum_iou / tp if tp else float("nan"), "rand_f_score": _rand_f(*rand_sums), "n_cases": len(rows)}
