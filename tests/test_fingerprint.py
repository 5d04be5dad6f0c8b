"""tutorseg.fingerprinting: nnU-Net's fingerprint, on the real shared datasets and datasets derived from them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tutorseg.data.cropping import nonzero_bounding_box
from tutorseg.data.problems import DatasetError, TutorsegError
from tutorseg.fingerprinting import (
    DatasetFingerprint,
    fingerprint,
    sample_foreground,
    weighted_percentiles,
)


@pytest.fixture(scope="session")
def hippocampus_fingerprint(hippocampus_dir):
    return fingerprint(hippocampus_dir, num_workers=2, progress=False)


@pytest.fixture(scope="session")
def isbi_fingerprint(isbi_dir):
    return fingerprint(isbi_dir, num_workers=2, progress=False)


def _reference(reference_dir, name):
    return json.loads((reference_dir / name / "dataset_fingerprint.json").read_text())


@pytest.mark.parametrize("name, fixture", [("Task04_Hippocampus", "hippocampus_fingerprint"),
                                           ("ISBI2012_EM_membrane", "isbi_fingerprint")])
def test_fingerprint_equals_nnunets(request, reference_dir, name, fixture):
    fp = request.getfixturevalue(fixture)
    mine, ref = fp.to_nnunet_dict(), _reference(reference_dir, name)
    assert mine["shapes_after_crop"] == ref["shapes_after_crop"]
    np.testing.assert_allclose(mine["spacings"], ref["spacings"], rtol=1e-6)
    assert mine["median_relative_size_after_cropping"] == pytest.approx(ref["median_relative_size_after_cropping"])
    for channel, stats in ref["foreground_intensity_properties_per_channel"].items():
        for key, value in stats.items():  # the same voxels are drawn; only float32 summation order differs
            assert mine["foreground_intensity_properties_per_channel"][channel][key] == pytest.approx(value, rel=1e-5)


def test_per_case_fields_and_medians(hippocampus_fingerprint):
    fp = hippocampus_fingerprint
    assert fp.num_training_cases == 208 and fp.samples_per_case == 100_000_000 // 208
    case = fp.cases[0]
    assert len(case.spacing) == len(case.shape_before_crop) == len(case.shape_after_crop) == 3
    assert 0 < case.relative_size_after_crop <= 1
    assert sum(case.class_voxel_counts.values()) == int(np.prod(case.shape_before_crop))
    assert fp.median_spacing == (1.0, 1.0, 1.0)
    assert fp.median_shape_after_crop == (35.0, 50.0, 36.0)  # nnU-Net's (36, 50, 35), reversed
    assert sum(fp.class_frequencies.values()) == pytest.approx(1.0)
    assert set(fp.class_frequencies) == {0, 1, 2} and fp.class_presence[1] == 1.0
    hist = fp.intensity_histograms["0"]
    assert len(hist["counts"]) == len(hist["bin_edges"]) - 1 and sum(hist["counts"]) > 0


def test_json_round_trip_is_lossless(hippocampus_fingerprint, tmp_path):
    path = hippocampus_fingerprint.save(tmp_path / "fp.json")
    assert DatasetFingerprint.load(path) == hippocampus_fingerprint
    assert "Hippocampus" in repr(hippocampus_fingerprint) and "<table>" in hippocampus_fingerprint._repr_html_()


def test_sampling_is_nnunets_choice_with_replacement():
    values = np.random.default_rng(0).normal(size=997).astype(np.float32)
    expected = np.random.RandomState(1234).choice(values, 50_000, replace=True)
    drawn, counts = sample_foreground(values, 50_000)
    assert counts.sum() == 50_000
    np.testing.assert_array_equal(np.sort(np.repeat(drawn, counts)), np.sort(expected))
    q = (0.5, 50, 99.5)
    np.testing.assert_allclose(weighted_percentiles(drawn, counts, q), np.percentile(expected, q), rtol=1e-6)


def test_nonzero_bbox_spans_any_channel():
    image = np.zeros((2, 6, 7, 8), np.float32)
    image[0, 1, 2, 3] = 1
    image[1, 4, 5, 6] = -2
    assert nonzero_bounding_box(image) == ((1, 5), (2, 6), (3, 7))
    assert nonzero_bounding_box(np.zeros((1, 3, 4), np.float32)) == ((0, 3), (0, 4))


def _copy_cases(src, dst, n):
    """A small MSD-layout dataset of the first ``n`` real Hippocampus cases."""
    meta = json.loads((src / "dataset.json").read_text())
    meta["training"] = meta["training"][:n]
    meta["numTraining"], meta["test"] = n, []
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True)
    for entry in meta["training"]:
        for key in ("image", "label"):
            shutil.copy(src / entry[key], dst / entry[key])
    (dst / "dataset.json").write_text(json.dumps(meta))
    return meta


def test_broken_dataset_is_refused_with_a_report(hippocampus_dir, tmp_path):
    meta = _copy_cases(hippocampus_dir, tmp_path, 3)
    broken = tmp_path / meta["training"][1]["image"]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated file
    (tmp_path / meta["training"][2]["label"]).unlink()
    with pytest.raises(DatasetError) as info:
        fingerprint(tmp_path, num_workers=1, progress=False)
    message = str(info.value)
    assert info.value.problems and "cannot fingerprint" in message
    assert meta["training"][2]["label"].split("/")[-1] in message or "label" in message


def test_load_refuses_nnunet_fingerprint_and_missing_file(reference_dir, tmp_path):
    with pytest.raises(TutorsegError, match="nnU-Net's dataset_fingerprint"):
        DatasetFingerprint.load(reference_dir / "Task04_Hippocampus" / "dataset_fingerprint.json")
    with pytest.raises(TutorsegError, match="not found"):
        DatasetFingerprint.load(tmp_path / "missing.json")
