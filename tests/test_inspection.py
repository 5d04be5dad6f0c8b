"""inspect_dataset: one test per problem kind, each on a copy of real cases with exactly one thing broken."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from builders import (
    load_nifti,
    msd_dataset,
    msd_four_d_dataset,
    png_dataset,
    read_json,
    sample_ids,
    save_nifti,
    truncate,
    v2_dataset,
    v2_two_channel_dataset,
    write_json,
)
from PIL import Image

from tutorseg import inspect_dataset
from tutorseg.data.problems import Severity
from tutorseg.inspection.report import CaseSummary, DatasetReport


def inspect(root):
    return inspect_dataset(root, progress=False, num_workers=1)


def the_problem(report, code, *, case_id=None, severity=Severity.ERROR):
    """The single problem of this code (for this case), checked for a complete message."""
    found = report.problems_of(code, case_id=case_id)
    assert len(found) == 1, f"expected one {code!r} for {case_id}, got {found}; all: {report.problems}"
    problem = found[0]
    assert problem.severity is severity
    assert problem.message and problem.fix and problem.why
    return problem


# --------------------------------------------------------------------------------------------------- clean data


def test_sample_is_clean_but_for_the_float_label(sample_dir):
    report = inspect_dataset(sample_dir, progress=False)
    assert (report.num_training_cases, report.num_test_cases, report.num_channels) == (25, 4, 1)
    assert report.labels == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert report.errors == () and report.infos == ()
    assert [(p.code, p.case_id) for p in report.warnings] == [("float_label", "hippocampus_003")]
    case = next(c for c in report.cases if c.case_id == "hippocampus_001")
    assert case.shape == (35, 51, 35) and case.spacing == (1.0, 1.0, 1.0) and case.dtype == "uint8"
    assert case.label_values == (0, 1, 2) and case.intensity_range == ((2.0, 139.0),)
    assert {c.split for c in report.cases} == {"training", "test"}


@pytest.mark.shared
def test_hippocampus_208_cases(hippocampus_dir):
    report = inspect_dataset(hippocampus_dir, progress=False)
    assert (report.num_training_cases, report.num_channels, report.num_test_cases) == (208, 1, 130)
    assert sorted(report.labels.values()) == [0, 1, 2]
    assert report.errors == ()
    assert sorted((p.code, p.case_id) for p in report.warnings) == [
        ("float_label", "hippocampus_003"), ("float_label", "hippocampus_243")]
    text = str(report)
    assert "208 labelled training case(s)" in text and "hippocampus_243" in text
    assert "hippocampus_100 " not in text  # 208 cases: summary statistics, no per-case table


@pytest.mark.shared
def test_isbi_30_2d_cases(isbi_dir):
    report = inspect_dataset(isbi_dir, progress=False)
    assert (report.num_training_cases, report.num_channels, report.problems) == (30, 1, ())
    assert all(c.shape == (512, 512) and c.label_values == (0, 1) for c in report.cases)
    assert "2D .png" in str(report)


def test_v2_layout_and_multichannel_files(tmp_path):
    report = inspect(v2_two_channel_dataset(tmp_path, 2))
    assert report.layout == "nnunetv2" and report.problems == ()
    assert all(c.n_channels == 2 and len(c.intensity_range) == 2 for c in report.cases)


def test_msd_four_d_multichannel(tmp_path):
    report = inspect(msd_four_d_dataset(tmp_path, 2))
    assert report.problems == ()
    assert [c.n_channels for c in report.cases] == [2, 2]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_grey_and_rgb_are_clean(tmp_path, mode):
    report = inspect(png_dataset(tmp_path, 2, mode=mode))
    assert report.problems == ()
    assert report.cases[0].n_channels == (1 if mode == "L" else 3)
    assert len(report.cases[0].shape) == 2


# --------------------------------------------------------------------------------------------------- dataset.json, layout


def test_missing_dataset_json(tmp_path):
    root = msd_dataset(tmp_path, 2)
    (root / "dataset.json").unlink()
    the_problem(inspect(root), "missing_dataset_json")


def test_malformed_dataset_json_syntax(tmp_path):
    root = msd_dataset(tmp_path, 2)
    (root / "dataset.json").write_text('{"modality": {"0": "MRI"},}')
    problem = the_problem(inspect(root), "malformed_dataset_json")
    assert "not valid JSON" in problem.message


def test_malformed_dataset_json_names_the_key(tmp_path):
    root = v2_dataset(tmp_path, 2)
    write_json(root, {**read_json(root), "labels": {"0": "background", "1": "Anterior", "2": "Posterior"}})
    problem = the_problem(inspect(root), "malformed_dataset_json")
    assert "'labels'" in problem.message and "swap keys and values" in problem.fix


def test_msd_json_beside_v2_files(tmp_path):
    root = msd_dataset(tmp_path, 2)
    case_id = sample_ids(2)[1]
    (root / "imagesTr" / f"{case_id}.nii.gz").rename(root / "imagesTr" / f"{case_id}_0000.nii.gz")
    the_problem(inspect(root), "layout_mismatch", case_id=case_id)


def test_v2_json_beside_msd_files(tmp_path):
    root = v2_dataset(tmp_path, 2)
    case_id = sample_ids(2)[0]
    (root / "imagesTr" / f"{case_id}_0000.nii.gz").rename(root / "imagesTr" / f"{case_id}.nii.gz")
    report = inspect(root)
    the_problem(report, "layout_mismatch")
    the_problem(report, "missing_image", case_id=case_id)  # its label is now unmatched


def test_missing_image_label_and_channel(tmp_path):
    root = v2_two_channel_dataset(tmp_path / "v2", 2)
    first, second = sample_ids(2)
    (root / "imagesTr" / f"{first}_0001.nii.gz").unlink()
    (root / "labelsTr" / f"{second}.nii.gz").unlink()
    report = inspect(root)
    the_problem(report, "missing_channel", case_id=first)
    the_problem(report, "missing_label", case_id=second)
    assert report.num_training_cases == 0 and not report.ok

    msd = msd_dataset(tmp_path / "msd", 2)
    (msd / "imagesTr" / f"{first}.nii.gz").unlink()
    the_problem(inspect(msd), "missing_image", case_id=first)


def test_duplicate_case_ids(tmp_path):
    root = msd_dataset(tmp_path, 2, test=1)
    data = read_json(root)
    write_json(root, {**data, "training": data["training"] + data["training"][:1]})
    test_image = sorted((root / "imagesTs").iterdir())[0]
    shutil.copyfile(test_image, root / "imagesTr" / test_image.name)  # the test id also as a training case
    data = read_json(root)
    case_id = test_image.name.removesuffix(".nii.gz")
    data["training"].append({"image": f"./imagesTr/{test_image.name}", "label": f"./labelsTr/{test_image.name}"})
    shutil.copyfile(root / "labelsTr" / f"{sample_ids(1)[0]}.nii.gz", root / "labelsTr" / test_image.name)
    write_json(root, data)
    report = inspect(root)
    the_problem(report, "duplicate_case", case_id=sample_ids(1)[0])
    the_problem(report, "duplicate_case", case_id=case_id, severity=Severity.WARNING)


def test_unlisted_and_hidden_files_and_count_mismatch(tmp_path):
    root = msd_dataset(tmp_path, 3)
    data = read_json(root)
    write_json(root, {**data, "training": data["training"][:2]})
    (root / "imagesTr" / "._hippocampus_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    report = inspect(root)
    the_problem(report, "unlisted_file", severity=Severity.WARNING)
    the_problem(report, "hidden_files_ignored", severity=Severity.INFO)

    v2 = v2_dataset(tmp_path / "v2", 2)
    write_json(v2, {**read_json(v2), "numTraining": 5})
    the_problem(inspect(v2), "num_training_mismatch", severity=Severity.WARNING)


def test_unsupported_format(tmp_path):
    root = v2_dataset(tmp_path, 2)
    write_json(root, {**read_json(root), "file_ending": ".jpg"})
    the_problem(inspect(root), "unsupported_format")


# --------------------------------------------------------------------------------------------------- files


def test_truncated_and_garbage_files(tmp_path):
    root = msd_dataset(tmp_path, 3)
    first, second, third = sample_ids(3)
    truncate(root / "imagesTr" / f"{first}.nii.gz")
    truncate(root / "labelsTr" / f"{second}.nii.gz", 0.8)
    (root / "imagesTr" / f"{third}.nii.gz").write_bytes(b"this is not a NIfTI file" * 20)
    report = inspect(root)
    for case_id in (first, second, third):
        problem = the_problem(report, "unreadable_file", case_id=case_id)
        assert "Traceback" not in problem.message
    assert "truncated" in report.problems_of("unreadable_file", case_id=first)[0].message


def test_unsupported_dimensionality(tmp_path):
    root = msd_dataset(tmp_path, 2)
    case_id = sample_ids(1)[0]
    path = root / "imagesTr" / f"{case_id}.nii.gz"
    image, img = load_nifti(path)
    save_nifti(image[..., image.shape[2] // 2].copy(), path, img)  # a 2D NIfTI slice in a 3D dataset
    the_problem(inspect(root), "unsupported_dimensionality", case_id=case_id)


def test_image_label_shape_mismatch(tmp_path):
    root = msd_dataset(tmp_path, 2)
    case_id = sample_ids(1)[0]
    path = root / "labelsTr" / f"{case_id}.nii.gz"
    label, img = load_nifti(path)
    save_nifti(label[:-3].copy(), path, img)  # cropped by 3 voxels along x
    problem = the_problem(inspect(root), "shape_mismatch", case_id=case_id)
    assert str(label.shape) in problem.message


def test_image_label_spacing_mismatch(tmp_path):
    root = msd_dataset(tmp_path, 2)
    case_id = sample_ids(1)[0]
    path = root / "labelsTr" / f"{case_id}.nii.gz"
    label, img = load_nifti(path)
    save_nifti(label, path, img, zooms=(1.0, 1.0, 2.0))
    the_problem(inspect(root), "spacing_mismatch", case_id=case_id)


def test_image_label_affine_mismatch_beyond_tolerance(tmp_path):
    root = msd_dataset(tmp_path, 3)
    shifted, nudged = sample_ids(2)
    for case_id, shift in ((shifted, 5.0), (nudged, 1e-5)):  # 5 mm: reported; 0.01 um: within tolerance
        path = root / "labelsTr" / f"{case_id}.nii.gz"
        label, img = load_nifti(path)
        affine = img.affine.copy()
        affine[0, 3] += shift
        save_nifti(label, path, img, affine=affine)
    report = inspect(root)
    the_problem(report, "affine_mismatch", case_id=shifted, severity=Severity.WARNING)
    assert report.problems_of(case_id=nudged) == ()


def test_channel_files_of_different_shapes_and_spacings(tmp_path):
    root = v2_two_channel_dataset(tmp_path, 2)
    cropped, resized = sample_ids(2)
    path = root / "imagesTr" / f"{cropped}_0001.nii.gz"
    data, img = load_nifti(path)
    save_nifti(data[:, :-2].copy(), path, img)
    path = root / "imagesTr" / f"{resized}_0001.nii.gz"
    data, img = load_nifti(path)
    save_nifti(data, path, img, zooms=(1.0, 1.0, 3.0))
    report = inspect(root)
    the_problem(report, "channel_shape_mismatch", case_id=cropped)
    the_problem(report, "channel_spacing_mismatch", case_id=resized)


def test_channel_count_differs_from_dataset_json(tmp_path):
    grey = png_dataset(tmp_path / "grey", 2, mode="L", channel_names={"0": "R", "1": "G", "2": "B"})
    report = inspect(grey)
    for case_id in sample_ids(2):
        the_problem(report, "channel_count_mismatch", case_id=case_id)

    four_d = msd_four_d_dataset(tmp_path / "msd", 2)
    write_json(four_d, {**read_json(four_d), "modality": {"0": "MRI"}})
    the_problem(inspect(four_d), "channel_count_mismatch", case_id=sample_ids(1)[0])


def test_rgba_with_three_declared_channels_drops_alpha(tmp_path):
    report = inspect(png_dataset(tmp_path, 2, mode="RGBA"))
    assert report.errors == ()
    problem = the_problem(report, "alpha_dropped", case_id=sample_ids(1)[0], severity=Severity.INFO)
    assert "alpha" in problem.message
    assert report.cases[0].n_channels == 3


# --------------------------------------------------------------------------------------------------- voxel values


def _rewrite_label(root, case_id, change):
    path = root / "labelsTr" / f"{case_id}.nii.gz"
    label, img = load_nifti(path)
    save_nifti(change(label.copy()), path, img)


def test_undeclared_label_values(tmp_path):
    root = msd_dataset(tmp_path, 2)
    case_id = sample_ids(1)[0]
    _rewrite_label(root, case_id, lambda lab: np.where(lab == 2, 7, lab).astype(np.uint8))
    problem = the_problem(inspect(root), "undeclared_label_values", case_id=case_id)
    assert "7" in problem.message


def test_non_integer_label_values(tmp_path):
    root = msd_dataset(tmp_path, 2)
    case_id = sample_ids(1)[0]
    _rewrite_label(root, case_id, lambda lab: (lab.astype(np.float32) * 0.75))  # as after linear resampling
    problem = the_problem(inspect(root), "non_integer_label", case_id=case_id)
    assert "0.75" in problem.message or "1.5" in problem.message


def test_float_label_with_integral_values_is_a_warning(tmp_path):
    root = msd_dataset(tmp_path, 2, ids=["hippocampus_001", "hippocampus_003"])  # 003: float32 in the real data
    report = inspect(root)
    assert report.errors == ()
    the_problem(report, "float_label", case_id="hippocampus_003", severity=Severity.WARNING)


def test_nan_and_inf_in_image(tmp_path):
    root = msd_dataset(tmp_path, 2)
    case_id = sample_ids(1)[0]
    path = root / "imagesTr" / f"{case_id}.nii.gz"
    image, img = load_nifti(path)
    image = image.astype(np.float32)
    image[0, 0, 0], image[1, 1, 1] = np.nan, np.inf
    save_nifti(image, path, img)
    report = inspect(root)
    problem = the_problem(report, "non_finite_values", case_id=case_id)
    assert "2 NaN/Inf" in problem.message
    assert all(np.isfinite(report.cases[0].intensity_range[0]))


def test_constant_image(tmp_path):
    root = msd_dataset(tmp_path, 2)
    case_id = sample_ids(1)[0]
    path = root / "imagesTr" / f"{case_id}.nii.gz"
    image, img = load_nifti(path)
    save_nifti(np.zeros_like(image), path, img)
    the_problem(inspect(root), "constant_image", case_id=case_id, severity=Severity.WARNING)


def test_label_without_foreground(tmp_path):
    root = msd_dataset(tmp_path, 2)
    case_id = sample_ids(1)[0]
    _rewrite_label(root, case_id, np.zeros_like)
    the_problem(inspect(root), "empty_label", case_id=case_id, severity=Severity.WARNING)


def test_label_never_present(tmp_path):
    root = msd_dataset(tmp_path, 2)
    write_json(root, {**read_json(root), "labels": {"0": "background", "1": "Anterior", "2": "Posterior",
                                                    "3": "Amygdala"}})
    problem = the_problem(inspect(root), "label_never_present", severity=Severity.WARNING)
    assert "Amygdala" in problem.message


def test_png_mask_stored_as_0_255(tmp_path):
    root = png_dataset(tmp_path, 2)
    case_id = sample_ids(1)[0]
    path = root / "labelsTr" / f"{case_id}.png"
    mask = np.asarray(Image.open(path))
    Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(path)
    problem = the_problem(inspect(root), "mask_0_255", case_id=case_id)
    assert "255" in problem.message and "> 0" in problem.fix


def test_rgb_label_is_not_a_label_map(tmp_path):
    root = png_dataset(tmp_path, 2)
    case_id = sample_ids(1)[0]
    path = root / "labelsTr" / f"{case_id}.png"
    mask = np.asarray(Image.open(path))
    Image.fromarray(np.stack([mask] * 3, axis=-1)).save(path)
    the_problem(inspect(root), "label_not_single_channel", case_id=case_id)


def test_all_problems_at_once_and_in_parallel(tmp_path, monkeypatch):
    """Several broken cases: every one is reported, and a thread pool gives the same report as one thread."""
    import tutorseg.inspection.checks as inspection

    ids = sample_ids(6)
    root = msd_dataset(tmp_path, ids=ids)
    truncate(root / "imagesTr" / f"{ids[0]}.nii.gz")
    _rewrite_label(root, ids[1], np.zeros_like)
    _rewrite_label(root, ids[2], lambda lab: np.where(lab == 1, 9, lab).astype(np.uint8))
    serial = inspect(root)
    monkeypatch.setattr(inspection, "MIN_CASES_FOR_POOL", 1)  # 6 cases would otherwise be read one by one
    pooled = inspect_dataset(root, progress=False, num_workers=3)
    codes = {(p.code, p.case_id) for p in serial.problems}
    assert codes == {("unreadable_file", ids[0]), ("empty_label", ids[1]), ("undeclared_label_values", ids[2])}
    assert serial.problems == pooled.problems and serial.cases == pooled.cases


# --------------------------------------------------------------------------------------------------- the report


def test_report_text_html_and_json_round_trip(tmp_path):
    root = msd_dataset(tmp_path / "ds", 3, test=1)
    _rewrite_label(root, sample_ids(1)[0], np.zeros_like)
    report = inspect(root)

    text = str(report)
    assert "3 labelled training case(s), 1 test image(s)" in text
    assert "channels     1: 0 MRI" in text and "0 background, 1 Anterior, 2 Posterior" in text
    assert "WARNING empty_label" in text and "why:" in text and "fix:" in text
    assert sample_ids(1)[0] in text and "shape" in text and "spacing" in text
    assert "1 warning(s)" in repr(report)

    page = report._repr_html_()
    assert page.startswith("<div>") and "<table>" in page and "empty_label" in page
    assert ">spacing</th>" in page and "<details>" in page and page.count("<tr>") > 4 + 1
    assert "<script" not in page

    saved = report.save(tmp_path / "out" / "report.json")
    data = json.loads(saved.read_text())
    assert data["num_training_cases"] == 3 and data["n_warnings"] == 1
    assert DatasetReport.load(saved) == report


def test_report_escapes_html_and_hides_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    root = msd_dataset(tmp_path / "data" / "<b>set", 2)
    report = inspect(root)
    assert report.root == "~/data/<b>set"
    assert "<b>set" not in report._repr_html_() and "&lt;b&gt;set" in report._repr_html_()


def test_case_summary_round_trip():
    summary = CaseSummary("c", "training", (3, 4, 5), (1.0, 1.0, 2.5), "float32", 2,
                          ((0.0, 1.0), None), "uint8", (0, 1))
    assert CaseSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


def test_many_problems_of_one_kind_stay_readable(tmp_path):
    root = msd_dataset(tmp_path, 15)
    write_json(root, {**read_json(root), "labels": {"0": "background", "1": "Anterior"}})  # 2 undeclared in all
    report = inspect(root)
    assert len(report.problems_of("undeclared_label_values")) == 15
    text = str(report)
    assert "and 3 more of this kind" in text
    assert all(case_id in text for case_id in sample_ids(15))  # every problem is named


# --------------------------------------------------------------------------------------------------- CLI


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "tutorseg", "inspect", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_cli_exit_status_and_json(tmp_path, sample_dir):
    clean = _cli(sample_dir, "-q", "--json", tmp_path / "clean.json")
    assert clean.returncode == 0, clean.stderr
    assert "25 labelled training case(s)" in clean.stdout
    assert json.loads((tmp_path / "clean.json").read_text())["n_errors"] == 0

    root = msd_dataset(tmp_path / "broken", 2)
    truncate(root / "imagesTr" / f"{sample_ids(1)[0]}.nii.gz")
    broken = _cli(root, "-q", "--json", tmp_path / "broken.json")
    assert broken.returncode == 1
    assert "unreadable_file" in broken.stdout and "Traceback" not in broken.stdout + broken.stderr
    assert json.loads((tmp_path / "broken.json").read_text())["problems"][0]["case_id"] == sample_ids(1)[0]


def test_cli_not_a_dataset_folder(tmp_path):
    result = _cli(tmp_path / "nowhere")
    assert result.returncode == 1
    assert "dataset folder not found" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_region_labels_missing_folder_and_other_endings(tmp_path):
    regions = v2_dataset(tmp_path / "regions", 2)
    write_json(regions, {**read_json(regions), "labels": {"background": 0, "whole": [1, 2], "core": 2}})
    the_problem(inspect(regions), "missing_regions_class_order")  # region-based labels need their order

    no_images = msd_dataset(tmp_path / "no_images", 2)
    shutil.rmtree(no_images / "imagesTr")
    report = inspect(no_images)
    the_problem(report, "missing_folder")
    assert len(report.problems_of("missing_image")) == 2

    mixed = v2_dataset(tmp_path / "mixed", 2)
    first = sample_ids(1)[0]
    image, img = load_nifti(mixed / "imagesTr" / f"{first}_0000.nii.gz")
    save_nifti(image, mixed / "imagesTr" / "extra_0000.nii", img)
    the_problem(inspect(mixed), "other_file_ending", severity=Severity.WARNING)


def test_listed_test_image_missing(tmp_path):
    root = msd_dataset(tmp_path, 2, test=2)
    missing = sorted((root / "imagesTs").iterdir())[0]
    missing.unlink()
    report = inspect(root)
    the_problem(report, "missing_image", case_id=missing.name.removesuffix(".nii.gz"), severity=Severity.WARNING)
    assert report.num_test_cases == 1
