"""Tests of tutorseg.evaluation.instances on real ISBI 2012 masks: the cells (not membrane) are many objects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tutorseg.data.imageio import read_image
from tutorseg.evaluation.instances import aggregate_instance_scores, instance_scores, label_instances, match_instances
from tutorseg.evaluation.metrics import evaluate


@pytest.fixture(scope="module")
def cells(isbi_dir):
    membrane = read_image(isbi_dir / "labelsTr" / "isbi2012_000.png").array[0]
    return (membrane == 0).astype(np.uint8)  # cell interiors: many separate objects


def test_connected_components_find_many_cells(cells):
    instances, n = label_instances(cells)
    assert n > 50
    assert instances.max() == n and set(np.unique(instances)) == set(range(n + 1))
    kept, n_kept = label_instances(cells, min_size=100)
    sizes = np.bincount(instances.ravel())[1:]
    assert n_kept == int((sizes >= 100).sum()) < n


def test_perfect_prediction_and_missing_objects(cells):
    reference, n = label_instances(cells)
    perfect = instance_scores(cells, reference)
    assert (perfect.tp, perfect.fp, perfect.fn, perfect.f1, perfect.pq) == (n, 0, 0, 1.0, 1.0)
    # drop every second cell from the prediction: exactly those become false negatives
    dropped = np.isin(reference, np.arange(2, n + 1, 2))
    partial = instance_scores(np.where(dropped, 0, cells), reference)
    assert partial.tp == n - n // 2 and partial.fn == n // 2 and partial.fp == 0
    assert partial.f1 == pytest.approx(2 * partial.tp / (2 * partial.tp + partial.fn))


def test_merged_cells_are_the_semantic_instance_gap(cells):
    """Dilating cells across the thin membrane merges neighbours: semantic Dice stays high, instance F1 drops."""
    reference, n = label_instances(cells)
    grown = ndimage.binary_dilation(cells, iterations=3).astype(np.uint8)
    scores = instance_scores(grown, reference)
    assert scores.n_predicted < n
    assert scores.f1 < 0.9
    dice = 2 * (grown & cells).sum() / (grown.sum() + cells.sum())
    assert dice > 0.85


def test_matching_iou_is_exact():
    reference = np.zeros((8, 8), np.int32)
    reference[0:4, 0:4] = 1  # 16 pixels
    predicted = np.zeros((8, 8), np.int32)
    predicted[0:4, 0:3] = 7  # 12 pixels inside: IoU 0.75
    scores = match_instances(predicted, reference)
    assert (scores.tp, scores.sum_iou, scores.pq) == (1, 0.75, 0.75)
    predicted[0:4, 0:2] = 7
    predicted[0:4, 2:4] = 0  # IoU exactly 0.5: not a match
    assert match_instances(predicted, reference).tp == 0


def test_evaluate_reports_instances(cells):
    reference, n = label_instances(cells)
    summary = evaluate({"c": cells}, {"c": cells}, labels={"cell": 1}, instance_reference={"c": reference})
    assert summary.instances["f1"] == 1.0 and summary.instances["tp"] == n
    assert summary.case("c").instances["pq"] == 1.0
    assert "F1@0.5" in repr(summary)
    total = aggregate_instance_scores([{"tp": 3, "fp": 1, "fn": 0, "sum_iou": 2.4}, None])
    assert total["f1"] == pytest.approx(6 / 7) and total["sq"] == pytest.approx(0.8)
