"""Tests of tutorseg.evaluation.metrics on real Hippocampus and ISBI labels, against MONAI's metric functions."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tutorseg.data.imageio import read_image
from tutorseg.evaluation.metrics import (
    EvaluationError,
    EvaluationSummary,
    case_metrics,
    evaluate,
    image_diagonal_mm,
    one_hot,
)

LABELS = {"Anterior": 1, "Posterior": 2}


@pytest.fixture(scope="module")
def hippo_label(hippocampus_dir):
    path = hippocampus_dir / "labelsTr" / "hippocampus_001.nii.gz"
    return path, read_image(path).array[0].astype(np.int32)


def _write_like(reference_path, array, out_path, zooms=None):
    ref = nib.load(str(reference_path))
    header = ref.header.copy()
    affine = ref.affine.copy()
    if zooms is not None:
        header.set_zooms(zooms)
        affine[:3, :3] = np.diag(zooms)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine, header), str(out_path))


def test_dice_and_hd95_agree_with_monai(hippo_label):
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

    _, ref = hippo_label
    pred = np.roll(ref, 2, axis=0)
    ours = case_metrics(pred, ref, LABELS, spacing=(1.0, 1.0, 1.0))
    p, r = one_hot(pred, [1, 2]), one_hot(ref, [1, 2])
    monai_dice = compute_dice(p, r, include_background=False)[0]
    monai_iou = compute_iou(p, r, include_background=False)[0]
    monai_hd95 = compute_hausdorff_distance(p, r, percentile=95)[0]
    for index, name in enumerate(LABELS):
        assert ours[name]["dice"] == pytest.approx(float(monai_dice[index]))
        assert ours[name]["iou"] == pytest.approx(float(monai_iou[index]))
        assert ours[name]["hd95_mm"] == pytest.approx(float(monai_hd95[index]))
        # and with the textbook formula
        a, b = ref == LABELS[name], pred == LABELS[name]
        assert ours[name]["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
        assert 0 < ours[name]["dice"] < 1
        assert ours[name]["hd95_mm"] >= 1.0


@pytest.mark.parametrize("case_id,spacing", [("hippocampus_001", (1.0, 1.0, 1.0)),
                                             ("hippocampus_004", (3.0, 1.0, 0.5)),
                                             ("hippocampus_017", (0.8, 0.8, 2.5))])
def test_every_metric_equals_monais_one_hot_functions(hippocampus_dir, case_id, spacing):
    """One edge-distance computation per class on boolean masks gives MONAI's one-hot numbers (issue #36)."""
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou, compute_surface_dice
    from scipy import ndimage

    ref = read_image(hippocampus_dir / "labelsTr" / f"{case_id}.nii.gz").array[0].astype(np.int32)
    # a prediction with the mistakes real ones make: shifted, one class eroded, a stray blob
    pred = np.roll(ref, 1, axis=1)
    pred[ndimage.binary_erosion(pred == 2) ^ (pred == 2)] = 0
    pred[:3, :3, :3] = 1
    ours = case_metrics(pred, ref, LABELS, spacing=spacing, surface_tolerance_mm=1.5)
    p, r = one_hot(pred, [1, 2]), one_hot(ref, [1, 2])
    monai = {"dice": compute_dice(p, r, include_background=False)[0],
             "iou": compute_iou(p, r, include_background=False)[0],
             "hd95_mm": compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)[0],
             "surface_dice": compute_surface_dice(p, r, [1.5, 1.5], spacing=spacing)[0]}
    for index, name in enumerate(LABELS):
        for metric, values in monai.items():
            assert ours[name][metric] == pytest.approx(float(values[index]), rel=1e-6), (name, metric)


def test_identical_masks_score_perfectly(hippo_label):
    _, ref = hippo_label
    result = case_metrics(ref, ref, LABELS)
    for row in result.values():
        assert (row["dice"], row["iou"], row["hd95_mm"], row["surface_dice"]) == (1.0, 1.0, 0.0, 1.0)
        assert row["volume_reference_mm3"] == row["volume_prediction_mm3"] > 0


def test_empty_conventions(hippo_label):
    _, ref = hippo_label
    ref_no_posterior = np.where(ref == 2, 0, ref)
    both_empty = case_metrics(ref_no_posterior, ref_no_posterior, LABELS)["Posterior"]
    assert all(math.isnan(both_empty[m]) for m in ("dice", "iou", "hd95_mm", "surface_dice"))
    assert both_empty["volume_reference_mm3"] == 0
    missed = case_metrics(ref_no_posterior, ref, LABELS)["Posterior"]  # structure present, nothing predicted
    hallucinated = case_metrics(ref, ref_no_posterior, LABELS)["Posterior"]
    worst = image_diagonal_mm(ref.shape, (1.0, 1.0, 1.0))
    for row in (missed, hallucinated):
        assert (row["dice"], row["iou"], row["surface_dice"], row["hd95_mm"]) == (0.0, 0.0, 0.0, worst)


def test_means_ignore_nan_as_nnunet():
    ref = np.zeros((10, 10, 10), np.int32)
    ref[2:5, 2:5, 2:5] = 1
    full = {"a": ref, "b": ref}
    empty_class_two = {"a": ref, "b": ref}
    summary = evaluate(full, empty_class_two, labels={"one": 1, "two": 2})
    assert math.isnan(summary.mean["two"]["dice"])
    assert summary.mean["one"]["dice"] == 1.0
    assert summary.mean_dice == 1.0  # NaN class ignored in the foreground mean


def test_spacing_from_files_is_honoured(hippo_label, tmp_path):
    path, ref = hippo_label
    pred = np.roll(ref, 1, axis=0)
    for name, zooms in (("iso", (1.0, 1.0, 1.0)), ("aniso", (3.0, 1.0, 1.0))):
        (tmp_path / name / "pred").mkdir(parents=True)
        (tmp_path / name / "ref").mkdir()
        _write_like(path, pred, tmp_path / name / "pred" / "case.nii.gz", zooms)
        _write_like(path, ref, tmp_path / name / "ref" / "case.nii.gz", zooms)
    iso = evaluate(tmp_path / "iso" / "pred", tmp_path / "iso" / "ref", labels=LABELS).case("case")
    aniso = evaluate(tmp_path / "aniso" / "pred", tmp_path / "aniso" / "ref", labels=LABELS).case("case")
    assert aniso.spacing == (3.0, 1.0, 1.0)
    for name in LABELS:
        assert aniso.metrics[name]["dice"] == pytest.approx(iso.metrics[name]["dice"])
        assert aniso.metrics[name]["volume_reference_mm3"] == pytest.approx(3 * iso.metrics[name]["volume_reference_mm3"])
        assert aniso.metrics[name]["hd95_mm"] > iso.metrics[name]["hd95_mm"]
    from monai.metrics import compute_hausdorff_distance

    monai_hd95 = compute_hausdorff_distance(one_hot(pred, [1, 2]), one_hot(ref, [1, 2]), percentile=95,
                                            spacing=(3.0, 1.0, 1.0))[0]
    assert [aniso.metrics[n]["hd95_mm"] for n in LABELS] == pytest.approx(monai_hd95.tolist())


def test_png_folders_and_nnunet_prediction_folder(isbi_dir, tmp_path):
    from scipy import ndimage

    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    expected = {}
    for case_id in ("isbi2012_000", "isbi2012_001"):
        ref = read_image(isbi_dir / "labelsTr" / f"{case_id}.png").array[0]
        pred = ndimage.binary_erosion(ref == 1).astype(np.uint8)
        Image.fromarray(ref).save(ref_dir / f"{case_id}.png")
        Image.fromarray(pred).save(pred_dir / f"{case_id}.png")
        expected[case_id] = 2 * (pred & (ref == 1)).sum() / (pred.sum() + (ref == 1).sum())
    # an nnU-Net prediction folder holds dataset.json and plans.json beside the predictions
    (pred_dir / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "membrane": 1}}))
    (pred_dir / "plans.json").write_text("{}")
    summary = evaluate(pred_dir, ref_dir, output=tmp_path / "summary.json")
    assert summary.labels == {"membrane": 1}
    for case_id, dice in expected.items():
        assert summary.case(case_id).metrics["membrane"]["dice"] == pytest.approx(dice)
    assert summary.case("isbi2012_000").spacing == (1.0, 1.0)


def test_dataset_folder_as_reference(hippocampus_dir, tmp_path):
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for case_id in ("hippocampus_001", "hippocampus_003"):
        src = hippocampus_dir / "labelsTr" / f"{case_id}.nii.gz"
        (pred_dir / f"{case_id}.nii.gz").write_bytes(src.read_bytes())
    summary = evaluate(pred_dir, hippocampus_dir)
    assert summary.case_ids == ("hippocampus_001", "hippocampus_003")
    assert set(summary.labels) == {"Anterior", "Posterior"}
    assert summary.mean_dice == 1.0


def test_save_load_json_and_csv(hippo_label, tmp_path):
    _, ref = hippo_label
    no_posterior = np.where(ref == 2, 0, ref)
    summary = evaluate({"a": np.roll(ref, 1, 0), "b": no_posterior}, {"a": ref, "b": no_posterior}, labels=LABELS,
                       output=tmp_path / "summary.json")
    loaded = EvaluationSummary.load(tmp_path / "summary.json")
    assert loaded.case_ids == summary.case_ids
    assert math.isnan(loaded.case("b").metrics["Posterior"]["dice"])
    assert loaded.mean["Anterior"]["dice"] == pytest.approx(summary.mean["Anterior"]["dice"])
    json.loads((tmp_path / "summary.json").read_text())  # strict JSON: NaN written as null
    csv_lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case_id,class,dice,iou,hd95_mm,surface_dice")
    assert len(csv_lines) == 1 + 2 * 2 + 2 * 2  # header, 2 cases x 2 classes, mean and std per class
    assert "mean Dice" in repr(summary) and "<table>" in summary._repr_html_()


def test_errors_name_the_case(hippo_label):
    _, ref = hippo_label
    with pytest.raises(EvaluationError, match="no reference: b"):
        evaluate({"a": ref, "b": ref}, {"a": ref}, labels=LABELS)
    with pytest.raises(EvaluationError, match="case a: prediction shape"):
        evaluate({"a": ref[:-1]}, {"a": ref}, labels=LABELS)
    with pytest.raises(EvaluationError, match="neither a folder"):
        evaluate({"a": ref}, "/nonexistent/labels")
