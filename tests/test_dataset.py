"""The dataset layer and image IO: both layouts, NIfTI 3D/4D, PNG grey/RGB/RGBA, lazy cases, writing labels."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from builders import (
    msd_dataset,
    msd_four_d_dataset,
    png_dataset,
    read_json,
    sample_ids,
    v2_dataset,
    v2_two_channel_dataset,
    write_json,
)
from PIL import Image

from tutorseg import DatasetError, load_dataset, sample_dataset_path
from tutorseg.data.dataset import as_dataset
from tutorseg.data.imageio import read_geometry, read_image, write_segmentation
from tutorseg.data.problems import ImageReadError, Problem, Severity


def test_sample_dataset(sample_dir):
    ds = load_dataset(sample_dir)
    assert sample_dir == sample_dataset_path()
    assert (ds.name, ds.layout, ds.file_ending) == ("Hippocampus", "msd", ".nii.gz")
    assert (len(ds.training), len(ds.test), ds.problems) == (25, 4, ())
    assert ds.channel_names == {0: "MRI"} and ds.label_values == (0, 1, 2)
    assert ds.foreground_labels == {"Anterior": 1, "Posterior": 2}
    assert [c.case_id for c in ds.training] == sorted(c.case_id for c in ds.training)
    assert "25 training + 4 test cases" in repr(ds)
    assert (sample_dir / "README.md").read_text().count("CC-BY-SA 4.0") >= 1


def test_case_loads_lazily_channel_first(sample_dir):
    case = load_dataset(sample_dir).case("hippocampus_001")
    geometry = case.geometry()
    assert geometry.shape == (35, 51, 35) and geometry.n_channels == 1 and geometry.spacing == (1.0, 1.0, 1.0)
    assert geometry.affine.shape == (4, 4) and geometry.dtype == "uint8"
    image = case.load_image()
    assert image.shape == (1, 35, 51, 35) and image.dtype == np.float32
    label = case.load_label()
    assert label.shape == (35, 51, 35) and label.dtype == np.int16 and set(np.unique(label)) == {0, 1, 2}
    assert case.label_geometry().shape == geometry.shape
    assert "hippocampus_001.nii.gz" in repr(case)


def test_float_label_is_converted(sample_dir):
    case = load_dataset(sample_dir).case("hippocampus_003")
    assert case.label_geometry().dtype == "float32"
    assert case.load_label().dtype == np.int16


def test_unknown_case_and_relative_paths(sample_dir):
    ds = load_dataset(sample_dir)
    with pytest.raises(KeyError, match="hippocampus_001"):
        ds.case("nope")
    assert ds.relative(ds.training[0].label_file) == "labelsTr/hippocampus_001.nii.gz"
    assert as_dataset(ds) is ds and as_dataset(sample_dir).name == ds.name


def test_v2_layout_same_cases_as_msd(tmp_path):
    msd = load_dataset(msd_dataset(tmp_path / "msd", 3))
    v2 = load_dataset(v2_dataset(tmp_path / "v2", 3))
    assert v2.layout == "nnunetv2" and v2.problems == ()
    assert [c.case_id for c in v2.training] == [c.case_id for c in msd.training]
    assert v2.labels == msd.labels
    np.testing.assert_array_equal(v2.training[0].load_image(), msd.training[0].load_image())


def test_v2_two_channel_files_stack(tmp_path):
    ds = load_dataset(v2_two_channel_dataset(tmp_path, 2))
    case = ds.training[0]
    assert [f.name[-12:] for f in case.image_files] == ["_0000.nii.gz", "_0001.nii.gz"]
    image = case.load_image()
    assert image.shape[0] == 2 and case.geometry().n_channels == 2
    np.testing.assert_allclose(image[1], image[0].max() - image[0])


def test_msd_four_d_channels_move_first(tmp_path):
    ds = load_dataset(msd_four_d_dataset(tmp_path, 2))
    case = ds.training[0]
    raw = np.asanyarray(nib.load(str(case.image_files[0])).dataobj)
    image = case.load_image()
    assert raw.ndim == 4 and image.shape == (2, *raw.shape[:3])
    np.testing.assert_array_equal(image[1], raw[..., 1])
    assert case.geometry().shape == raw.shape[:3] and case.geometry().n_channels == 2


@pytest.mark.parametrize("mode, channels, note", [("L", 1, False), ("RGB", 3, False), ("RGBA", 3, True)])
def test_png_modes(tmp_path, mode, channels, note):
    ds = load_dataset(png_dataset(tmp_path, 2, mode=mode))
    assert ds.is_2d_format and ds.problems == ()
    case = ds.training[0]
    image, label = case.load_image(), case.load_label()
    assert image.shape == (channels, *label.shape) and image.ndim == 3
    geometry = case.geometry()
    assert geometry.spacing == (1.0, 1.0) and geometry.affine is None
    assert bool(geometry.notes) is note


def test_2d_spacing_from_dataset_json(tmp_path):
    root = png_dataset(tmp_path, 2)
    write_json(root, {**read_json(root), "spacing": [0.5, 0.25]})
    ds = load_dataset(root)
    assert ds.training[0].geometry().spacing == (0.5, 0.25)
    write_json(root, {**read_json(root), "spacing": "big"})
    assert [p.code for p in load_dataset(root).problems] == ["malformed_dataset_json"]


def test_not_a_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing")
    msd_dataset(tmp_path / "Task04_Hippocampus", 2)
    with pytest.raises(DatasetError, match="Task04_Hippocampus/ with a dataset.json"):
        load_dataset(tmp_path)


def test_load_label_refuses_non_integer_values(tmp_path):
    root = msd_dataset(tmp_path, 2)
    case = load_dataset(root).training[0]
    img = nib.load(str(case.label_file))
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) * np.float32(0.5), img.affine), str(case.label_file))
    with pytest.raises(DatasetError, match=f"{case.case_id}.*non-integer"):
        case.load_label()


def test_read_errors_name_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ImageReadError, match="broken.nii.gz") as info:
        read_image(bad)
    assert info.value.fix and info.value.code == "unreadable_file"
    with pytest.raises(ImageReadError, match="not found"):
        read_geometry(tmp_path / "absent.png")
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "image.mha")
    assert info.value.code in {"unreadable_file", "unsupported_format"}


def test_write_segmentation_nifti_keeps_the_affine(tmp_path, sample_dir):
    case = load_dataset(sample_dir).case("hippocampus_001")
    label = case.load_label()
    out = write_segmentation(label, tmp_path / "pred" / "hippocampus_001.nii.gz", reference=case.image_files[0])
    written = nib.load(str(out))
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), label)
    np.testing.assert_allclose(written.affine, nib.load(str(case.image_files[0])).affine)
    assert not list(out.parent.glob(".tmp_*"))


def test_write_segmentation_png(tmp_path):
    mask = np.zeros((6, 8), dtype=np.int64)
    mask[2:4, 3:7] = 2
    out = write_segmentation(mask, tmp_path / "mask.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), mask)
    # beyond 255 (instance maps of many objects): a 16-bit PNG, read back exactly; beyond 65535 refused
    many = write_segmentation(mask + 300, tmp_path / "many.png")
    np.testing.assert_array_equal(read_image(many).array[0], mask + 300)
    with pytest.raises(ValueError, match="65535"):
        write_segmentation(mask + 70000, tmp_path / "big.png")


def test_problem_round_trip_and_text():
    problem = Problem(Severity.WARNING, "float_label", "stored as float32", "why text", "fix text", "case_1", "f")
    assert Problem.from_dict(json.loads(json.dumps(problem.to_dict()))) == problem
    assert str(problem).startswith("WARNING [case_1] stored as float32") and "fix: fix text" in str(problem)


@pytest.mark.shared
def test_shared_datasets_load(hippocampus_dir, isbi_dir):
    hippocampus, isbi = load_dataset(hippocampus_dir), load_dataset(isbi_dir)
    assert (len(hippocampus.training), len(hippocampus.test), hippocampus.problems) == (208, 130, ())
    assert (len(isbi.training), isbi.layout, isbi.is_2d_format, isbi.problems) == (30, "nnunetv2", True, ())
    assert isbi.training[0].load_image().shape == (1, 512, 512)


def test_sample_ids_are_real_cases():
    assert all((sample_dataset_path() / "imagesTr" / f"{i}.nii.gz").is_file() for i in sample_ids(5))


@pytest.mark.parametrize("variant", ["scaled_int16", "big_endian", "uncompressed", "nifti2", "four_d"])
def test_read_image_matches_nibabel(tmp_path, sample_dir, variant):
    """tutorseg's fast NIfTI-1 reader gives nibabel's voxels and affine, for every header variant."""
    source = nib.load(str(sample_dir / "imagesTr" / "hippocampus_003.nii.gz"))
    data = np.asanyarray(source.dataobj).astype(np.float32)
    path = tmp_path / ("image.nii" if variant == "uncompressed" else "image.nii.gz")
    if variant == "scaled_int16":
        img = nib.Nifti1Image(data, source.affine)
        img.set_data_dtype(np.int16)  # nibabel stores int16 with scl_slope / scl_inter
    elif variant == "big_endian":
        img = nib.Nifti1Image(data.astype(">f4"), source.affine, nib.Nifti1Header(endianness=">"))
    elif variant == "nifti2":
        img = nib.Nifti2Image(data, source.affine)
    elif variant == "four_d":
        img = nib.Nifti1Image(np.stack([data, -data], axis=-1), source.affine)
    else:
        img = nib.Nifti1Image(data, source.affine)
    nib.save(img, str(path))
    expected = nib.load(str(path))
    image = read_image(path)
    reference = np.asanyarray(expected.dataobj)
    reference = np.moveaxis(reference, 3, 0) if reference.ndim == 4 else reference[None]
    np.testing.assert_array_equal(image.array, reference)
    assert image.array.dtype == reference.dtype and image.array.flags.writeable
    np.testing.assert_allclose(image.geometry.affine, expected.affine)
    assert image.geometry == read_geometry(path)
