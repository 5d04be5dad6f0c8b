"""Tests of tutorseg.integrations.convert on folders made from real cases (ISBI 2012 PNGs, Hippocampus NIfTIs)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tutorseg import inspect_dataset, load_dataset
from tutorseg.integrations.convert import ConversionError, convert_folders, match_files, value_map


@pytest.fixture
def png_folders(isbi_dir, tmp_path):
    """5 ISBI images with 0/255 masks named ``*_mask.png`` (a drawing tool's export), plus one image without mask."""
    dataset = load_dataset(isbi_dir)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    originals = {}
    for case in dataset.training[:6]:
        shutil.copyfile(case.image_files[0], images / f"{case.case_id}.png")
        label = case.load_label()
        originals[case.case_id] = label
        if len(originals) <= 5:
            Image.fromarray((label * 255).astype(np.uint8)).save(masks / f"{case.case_id}_mask.png")
    return images, masks, originals


@pytest.fixture
def nifti_folders(sample_dir, tmp_path):
    """4 real Hippocampus cases; masks stored with the grey levels 0/100/200 instead of 0/1/2."""
    dataset = load_dataset(sample_dir)
    images, masks = tmp_path / "nii_images", tmp_path / "nii_masks"
    images.mkdir(), masks.mkdir()
    originals = {}
    for case in dataset.training[:4]:
        shutil.copyfile(case.image_files[0], images / case.image_files[0].name)
        label_img = nib.load(case.label_file)
        originals[case.case_id] = case.load_label()
        nib.save(nib.Nifti1Image((originals[case.case_id] * 100).astype(np.uint8), label_img.affine),
                 masks / case.label_file.name)
    return images, masks, originals


def test_png_masks_0_255_become_a_checked_dataset(png_folders, tmp_path):
    images, masks, originals = png_folders
    result = convert_folders(images, masks, tmp_path / "out", name="Dataset501_EM")
    assert (result.n_training, result.n_test) == (5, 1)
    assert result.value_map == {255: 1} and any("0/255" in n for n in result.notes)
    assert result.labels == {"background": 0, "class_1": 1}
    meta = json.loads((result.dataset_dir / "dataset.json").read_text())
    assert meta["numTraining"] == 5 and meta["file_ending"] == ".png" and meta["channel_names"] == {"0": "image"}
    assert sorted(p.name for p in (result.dataset_dir / "imagesTs").iterdir()) == ["isbi2012_005_0000.png"]
    report = inspect_dataset(result.dataset_dir, progress=False, num_workers=1)
    assert not report.errors, report
    dataset = load_dataset(result.dataset_dir)
    for case in dataset.training:
        assert case.image_files[0].name == f"{case.case_id}_0000.png"
        np.testing.assert_array_equal(case.load_label(), originals[case.case_id])
    assert "5 training cases" in str(result) and "ConversionResult" in result._repr_html_()


def test_nifti_grey_levels_mapped_for_the_whole_dataset(nifti_folders, tmp_path):
    images, masks, originals = nifti_folders
    result = convert_folders(images, masks, tmp_path / "out", name="Dataset502_Hippo",
                             labels={"background": 0, "Anterior": 1, "Posterior": 2}, channel_names={0: "MRI"})
    assert result.value_map == {100: 1, 200: 2}
    report = inspect_dataset(result.dataset_dir, progress=False, num_workers=1)
    assert not report.errors, report
    dataset = load_dataset(result.dataset_dir)
    assert dataset.layout == "nnunetv2" and dataset.file_ending == ".nii.gz" and len(dataset.training) == 4
    for case in dataset.training:
        np.testing.assert_array_equal(case.load_label(), originals[case.case_id])
        source = nib.load(images / f"{case.case_id}.nii.gz")
        assert np.allclose(nib.load(case.label_file).affine, source.affine)


def test_value_map_is_decided_over_all_masks():
    assert value_map({0, 1, 2}) == {}
    assert value_map({0, 2}) == {2: 1}  # no mask anywhere has class 1
    assert value_map({1}) == {}  # a mask without background
    assert value_map({0, 255}) == {255: 1}
    assert value_map({0, 128, 255}) == {128: 1, 255: 2}


def test_every_bad_case_is_listed(png_folders, tmp_path):
    images, masks, _ = png_folders
    mask = np.asarray(Image.open(masks / "isbi2012_001_mask.png"))
    Image.fromarray(mask[:100]).save(masks / "isbi2012_001_mask.png")
    Image.fromarray(mask.astype(np.float32) / 255 * 0.7).save(masks / "isbi2012_002_mask.tif")  # a probability map
    (masks / "isbi2012_002_mask.png").unlink()
    with pytest.raises(ConversionError) as error:
        convert_folders(images, masks, tmp_path / "out")
    message = str(error.value)
    assert "2 case(s)" in message and "isbi2012_001" in message and "has shape (100, 512)" in message
    assert "isbi2012_002" in message and "non-integer" in message
    assert not (tmp_path / "out" / "Dataset500_MyData").exists()


def test_matching_and_refusals(png_folders, tmp_path):
    images, masks, _ = png_folders
    shutil.copyfile(masks / "isbi2012_000_mask.png", masks / "other_case_label.png")
    pairs, lonely_images, lonely_masks = match_files(images, masks)
    assert len(pairs) == 5 and [p.name for p in lonely_images] == ["isbi2012_005.png"]
    assert [p.name for p in lonely_masks] == ["other_case_label.png"]
    shutil.copyfile(masks / "isbi2012_000_mask.png", masks / "isbi2012_000_seg.png")
    with pytest.raises(ConversionError, match="both look like the mask of case 'isbi2012_000'"):
        match_files(images, masks)
    with pytest.raises(ConversionError, match="does not exist"):
        match_files(tmp_path / "nope", masks)


def test_existing_output_is_not_overwritten_silently(png_folders, tmp_path):
    images, masks, _ = png_folders
    convert_folders(images, masks, tmp_path / "out", name="Dataset501_EM")
    with pytest.raises(ConversionError, match="already exists"):
        convert_folders(images, masks, tmp_path / "out", name="Dataset501_EM")
    result = convert_folders(images, masks, tmp_path / "out", name="Dataset501_EM", overwrite=True)
    assert result.n_training == 5


def test_example_folders_round_trip(sample_dir, tmp_path):
    from tutorseg.integrations.convert import make_example_folders

    images, masks = make_example_folders(tmp_path / "mine", n_cases=3)
    assert len(list(images.iterdir())) == 3 and all(p.name.endswith("_mask.nii.gz") for p in masks.iterdir())
    result = convert_folders(images, masks, tmp_path / "out")
    assert result.n_training == 3 and result.value_map == {}
    assert not inspect_dataset(result.dataset_dir, progress=False, num_workers=1).errors
