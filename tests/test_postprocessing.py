"""Tests of post-processing on real labels with spurious blobs added, and on real many-object masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tutorseg.data.imageio import read_image
from tutorseg.data.label_maps import dice_per_class
from tutorseg.evaluation.postprocessing import determine_postprocessing
from tutorseg.prediction.postprocessing import PostprocessingDecision, keep_largest_component

LABELS = {"Anterior": 1, "Posterior": 2}
CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006")


@pytest.fixture(scope="module")
def references(hippocampus_dir):
    return {c: read_image(hippocampus_dir / "labelsTr" / f"{c}.nii.gz").array[0].astype(np.int32) for c in CASES}


def _with_blob(label: np.ndarray, value: int) -> np.ndarray:
    """A copy with a 2x2x2 blob of ``value`` in a background corner, far from the hippocampus."""
    noisy = label.copy()
    assert not noisy[:2, :2, :2].any()
    noisy[:2, :2, :2] = value
    return noisy


def test_keep_largest_component_removes_the_blob(references):
    ref = references["hippocampus_001"]
    noisy = _with_blob(ref, 1)
    cleaned = keep_largest_component(noisy, (1, 2))
    assert not cleaned[:2, :2, :2].any()
    assert ndimage.label(np.isin(cleaned, (1, 2)))[1] == 1
    assert np.array_equal(noisy, _with_blob(ref, 1))  # input untouched


def test_a_component_touching_by_a_corner_is_connected_as_in_nnunet(references):
    """nnU-Net labels with full connectivity (26 neighbours in 3D): a voxel touching the real hippocampus only at a
    corner belongs to it and stays; with face connectivity (scipy's default) it is a second component."""
    ref = references["hippocampus_001"]
    region = np.isin(ref, (1, 2))
    by_corner_only = (ndimage.binary_dilation(region, structure=np.ones((3, 3, 3)))
                      & ~ndimage.binary_dilation(region, structure=ndimage.generate_binary_structure(3, 2)))
    voxel = tuple(np.argwhere(by_corner_only)[0])
    touching = ref.copy()
    touching[voxel] = 1
    assert ndimage.label(np.isin(touching, (1, 2)))[1] == 2  # two objects by faces
    assert keep_largest_component(touching, (1, 2))[voxel] == 1  # one object for nnU-Net: kept
    diagonal = np.zeros((5, 5, 5), np.int32)
    for i in range(5):
        diagonal[i, i, i] = 1  # five voxels touching corner to corner: one object
    assert keep_largest_component(diagonal, (1,)).sum() == 5


def test_components_tying_for_largest_are_all_kept():
    two = np.zeros((6, 6), np.int32)
    two[0:2, 0:2] = 1
    two[4:6, 4:6] = 1
    two[0, 5] = 1
    kept = keep_largest_component(two, (1,))
    assert kept.sum() == 8 and kept[0, 5] == 0  # both 2x2 squares (a tie), not the single pixel


def test_blobs_make_largest_component_accepted(references, tmp_path):
    noisy = {c: _with_blob(ref, 1 + i % 2) for i, (c, ref) in enumerate(references.items())}
    decision = determine_postprocessing(noisy, references, labels=LABELS, output=tmp_path / "postprocessing.json")
    assert decision.trials[0]["accepted"] and decision.steps[0] == (1, 2)
    assert decision.dice_after["foreground_mean"] > decision.dice_before["foreground_mean"]
    assert len(decision.trials) == 3  # all foreground, then each class
    for case_id, ref in references.items():
        cleaned = decision.apply(noisy[case_id])
        assert not cleaned[:2, :2, :2].any()
        assert dice_per_class(cleaned, ref, LABELS)["Anterior"] >= dice_per_class(noisy[case_id], ref, LABELS)["Anterior"]
    loaded = PostprocessingDecision.load(tmp_path / "postprocessing.json")
    assert loaded.steps == decision.steps and loaded.num_cases == 4
    assert "accepted" in repr(decision) and "<table>" in decision._repr_html_()


def test_clean_predictions_keep_nothing_worse(references):
    decision = determine_postprocessing(references, references, labels=LABELS)
    assert decision.dice_after == decision.dice_before
    assert not any(t["accepted"] for t in decision.trials)  # nothing strictly improves a perfect prediction


def test_many_objects_reject_largest_component(isbi_dir):
    """ISBI cells: hundreds of true objects; keeping one would destroy the segmentation, so it is rejected."""
    cells = {}
    for case_id in ("isbi2012_000", "isbi2012_001"):
        membrane = read_image(isbi_dir / "labelsTr" / f"{case_id}.png").array[0]
        cells[case_id] = (membrane == 0).astype(np.int32)
    predicted = {c: ndimage.binary_erosion(m).astype(np.int32) for c, m in cells.items()}
    decision = determine_postprocessing(predicted, cells, labels={"cell": 1})
    assert decision.steps == ()
    assert len(decision.trials) == 1 and not decision.trials[0]["accepted"]
    assert decision.trials[0]["dice_after"]["cell"] < 0.5 < decision.trials[0]["dice_before"]["cell"]


def test_dice_matches_evaluate(references):
    from tutorseg.evaluation.metrics import case_metrics

    ref = references["hippocampus_003"]
    pred = np.roll(ref, 1, axis=1)
    ours = dice_per_class(pred, ref, LABELS)
    monai = case_metrics(pred, ref, LABELS)
    assert ours == pytest.approx({n: monai[n]["dice"] for n in LABELS})
