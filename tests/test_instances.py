"""Tests of tutorseg.evaluation.instances on real ISBI 2012 masks: the cells (not membrane) are many objects."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

import tutorseg
from tutorseg.data.imageio import read_image
from tutorseg.evaluation.instances import (
    BORDER,
    INTERIOR,
    aggregate_instance_scores,
    border_classes,
    instance_scores,
    instances_from_border_classes,
    label_instances,
    match_instances,
    rand_f_score,
)
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


def test_rand_f_score_by_hand_and_on_real_cells(cells):
    reference = np.array([1, 1, 0, 2, 2])  # two objects, a boundary voxel between them (not scored)
    merged = rand_f_score(np.array([5, 5, 5, 5, 5]), reference)
    # n = [[2, 2]]: sum n^2 = 8; a = [4]: 16; b = [2, 2]: 8 -> precision 0.5, recall 1
    assert (merged["rand_precision"], merged["rand_recall"]) == (0.5, 1.0)
    assert merged["rand_f_score"] == pytest.approx(2 / 3)
    split = rand_f_score(np.array([1, 2, 0, 3, 3]), reference)
    # n = [1, 1, 2]: 6; a = [1, 1, 2]: 6; b = [2, 2]: 8 -> precision 1, recall 0.75
    assert (split["rand_precision"], split["rand_recall"]) == (1.0, 0.75)
    assert split["rand_f_score"] == pytest.approx(2 * 0.75 / 1.75)
    assert rand_f_score(np.array([7, 7, 1, 9, 9]), reference)["rand_f_score"] == 1.0  # ids and boundary free

    instances, _ = label_instances(cells)
    assert rand_f_score(instances, instances)["rand_f_score"] == 1.0
    merged_cells, _ = label_instances(ndimage.binary_dilation(cells, iterations=3))
    worse = rand_f_score(merged_cells, instances)
    assert worse["rand_recall"] > 0.99 and worse["rand_precision"] < 0.9  # merges, no splits
    assert np.isnan(rand_f_score(instances, np.zeros_like(instances))["rand_f_score"])


def test_evaluate_reports_instances(cells):
    reference, n = label_instances(cells)
    summary = evaluate({"c": cells}, {"c": cells}, labels={"cell": 1}, instance_reference={"c": reference})
    assert summary.instances["f1"] == 1.0 and summary.instances["tp"] == n
    assert summary.case("c").instances["pq"] == 1.0
    assert "F1@0.5" in repr(summary) and "Rand F-score 1.0000" in repr(summary)
    total = aggregate_instance_scores([{"tp": 3, "fp": 1, "fn": 0, "sum_iou": 2.4}, None])
    assert total["f1"] == pytest.approx(6 / 7) and total["sq"] == pytest.approx(0.8)

    # the Rand F-score of several images pools their voxel pairs: the same as one stack with ids kept apart
    grown = ndimage.binary_dilation(cells, iterations=2).astype(np.uint8)  # merges some neighbours
    two = evaluate({"a": cells, "b": grown}, {"a": cells, "b": cells}, labels={"cell": 1},
                   instance_reference={"a": reference, "b": reference})
    predicted_b = label_instances(grown)[0]
    assert two.case("b").instances["rand_f_score"] == pytest.approx(rand_f_score(predicted_b, reference)["rand_f_score"])
    offset = int(reference.max()) + 1
    stacked = rand_f_score(np.stack([reference, np.where(predicted_b > 0, predicted_b + offset, 0)]),
                           np.stack([reference, np.where(reference > 0, reference + offset, 0)]))
    assert two.instances["rand_f_score"] == pytest.approx(stacked["rand_f_score"])
    assert two.case("b").instances["rand_f_score"] < two.instances["rand_f_score"] < 1.0


# --------------------------------------------------------------------------------------------------- border class


def _touching(cells):
    """The real cells grown across the membranes until neighbours touch (every pixel belongs to a cell)."""
    reference, _ = label_instances(cells)
    _, nearest = ndimage.distance_transform_edt(reference == 0, return_indices=True)
    return reference[tuple(nearest)]


def test_border_class_separates_touching_cells_that_components_merge(cells):
    touching = _touching(cells)
    n = int(touching.max())
    classes = border_classes(touching)
    assert set(np.unique(classes)) == {INTERIOR, BORDER}  # no background left: the cells touch everywhere
    # without the border class every cell merges into one object; with it each comes back
    assert instance_scores((touching > 0).astype(np.uint8), touching).tp <= 1
    restored, found = instances_from_border_classes(classes)
    scores = match_instances(restored, touching)
    assert scores.f1 > 0.95 and found >= 0.95 * n
    # the cells come back nearly pixel for pixel (border pixels at a contact join the nearest interior)
    assert scores.sum_iou / scores.tp > 0.9
    assert instance_scores(classes, touching, border_label=BORDER).f1 == scores.f1


def test_convert_instance_masks_then_evaluate_with_and_without_the_border(cells, isbi_dir, tmp_path):
    """tutorseg convert --instances on instance masks made from real ISBI cells; evaluate reports both ways."""
    from PIL import Image

    from tutorseg.cli import main

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    touching = {}
    for k in range(3):
        image = isbi_dir / "imagesTr" / f"isbi2012_{k:03d}_0000.png"
        (images / f"cell{k}.png").write_bytes(image.read_bytes())
        membrane = read_image(isbi_dir / "labelsTr" / f"isbi2012_{k:03d}.png").array[0]
        cell_ids = _touching((membrane == 0).astype(np.uint8))
        touching[k] = np.where(cell_ids > 0, cell_ids + 1000, 0)  # any integers: here 16-bit ones
        Image.fromarray(touching[k].astype(np.uint16)).save(masks / f"cell{k}.png")
    assert main(["convert", str(images), str(masks), "-o", str(tmp_path), "--name", "Dataset911_Cells",
                 "--instances"]) == 0
    dataset_dir = tmp_path / "Dataset911_Cells"
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "interior": 1, "border": 2} and meta["instances"]["border_label"] == 2
    kept = read_image(dataset_dir / "instancesTr" / "cell0.png").array[0]
    assert np.array_equal(kept, touching[0])
    assert not tutorseg.inspect_dataset(dataset_dir, progress=False).errors

    # the labels themselves as predictions: with the border step every cell is found, without it they merge
    predictions = tmp_path / "pred"
    predictions.mkdir()
    for k in range(3):
        (predictions / f"cell{k}.png").write_bytes((dataset_dir / "labelsTr" / f"cell{k}.png").read_bytes())
    assert main(["evaluate", str(predictions), str(dataset_dir), "-o", str(tmp_path / "summary.json")]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["instances"]["method"] == "border" and summary["instances"]["f1"] > 0.95
    assert summary["instances"]["without_border"]["f1"] < 0.05
