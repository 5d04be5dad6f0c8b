"""NRRD and MetaImage (.mha, .mhd) datasets, made from real cases with SimpleITK, through the whole pipeline (issue 17).

The bundled sample's NIfTI cases are written as NRRD, MHA and MHD by SimpleITK (as 3D Slicer and MITK would save
them), in nnU-Net v2's layout. One small network is trained on the NIfTI dataset; the same cases in every format then
go through inspect, fingerprint, preprocess and predict, and must give the same numbers and the same voxels, with
predictions written in the input's format on the input's geometry (spacing, origin, direction read back by
SimpleITK). A case given an oblique, flipped orientation and an origin checks that ITK's LPS world and NIfTI's RAS
world are converted both ways exactly.
"""

from __future__ import annotations

import json
import locale
from pathlib import Path

import numpy as np
import pytest

import tutorseg
from tutorseg.data.imageio import itk_affine, itk_geometry_of, read_geometry, read_image, write_segmentation
from tutorseg.data.problems import ImageReadError

sitk = pytest.importorskip("SimpleITK")

FORMATS = (".nrrd", ".mha", ".mhd")
N_TRAIN, N_TEST = 8, 3


def _as_nnunet(sample: Path, root: Path, ending: str) -> Path:
    """The first cases of the sample in nnU-Net v2 layout, every file written by SimpleITK in ``ending``."""
    dataset = tutorseg.load_dataset(sample)
    folder = root / f"Dataset900_Hippocampus{ending.replace('.', '_')}"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    cases = [(c, "imagesTr") for c in dataset.training[:N_TRAIN]] + [(c, "imagesTs") for c in dataset.test[:N_TEST]]
    for case, sub in cases:
        sitk.WriteImage(sitk.ReadImage(str(case.image_files[0])), str(folder / sub / f"{case.case_id}_0000{ending}"),
                        True)
        if sub == "imagesTr":
            sitk.WriteImage(sitk.ReadImage(str(case.label_file)), str(folder / "labelsTr" / f"{case.case_id}{ending}"),
                            True)
    (folder / "dataset.json").write_text(json.dumps({
        "name": "Hippocampus", "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": N_TRAIN, "file_ending": ending}))
    return folder


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, sample_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    return {ending: _as_nnunet(sample_dir, root, ending) for ending in (".nii.gz", *FORMATS)}


@pytest.fixture(scope="module")
def trained(datasets, tmp_path_factory):
    """A tiny network trained for a few steps on the NIfTI copy (what it learnt does not matter)."""
    from tutorseg.training.budget.smoke import smoke_plan

    nifti = tutorseg.load_dataset(datasets[".nii.gz"])
    plan = smoke_plan(tutorseg.plan(tutorseg.fingerprint(nifti, progress=False), preset="cpu"))
    run = tmp_path_factory.mktemp("run") / "fold_0"
    tutorseg.train_fold(nifti, plan, fold=0, out_dir=run, epochs=2, iterations_per_epoch=2, val_iterations=1,
                        validate=False, progress=False, verbose=False)
    return run


# --------------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("ending", FORMATS)
def test_a_case_reads_the_same_in_every_format(datasets, ending):
    for nifti_file in sorted((datasets[".nii.gz"] / "imagesTr").iterdir()):
        other = datasets[ending] / "imagesTr" / nifti_file.name.replace(".nii.gz", ending)
        a, b = read_image(nifti_file), read_image(other)
        assert np.array_equal(a.array, b.array) and a.array.dtype == b.array.dtype
        assert b.geometry.spacing == a.geometry.spacing and b.geometry.shape == a.geometry.shape
        np.testing.assert_allclose(b.geometry.affine, a.geometry.affine, atol=1e-5)
        assert read_geometry(other).affine is not None  # header only


def test_an_oblique_flipped_case_keeps_its_world_geometry(sample_dir, tmp_path):
    """A real case given a rotated, flipped, anisotropic orientation with an origin, saved as NIfTI by nibabel."""
    import nibabel as nib

    case = tutorseg.load_dataset(sample_dir).training[0]
    data = case.load_image()[0]
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.8, 0.9, 2.5])  # x flipped, anisotropic
    affine[:3, 3] = (-12.5, 40.0, 7.25)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nifti = tmp_path / "oblique.nii.gz"
    nib.save(image, str(nifti))
    for ending in FORMATS:
        other = tmp_path / f"oblique{ending}"
        sitk.WriteImage(sitk.ReadImage(str(nifti)), str(other), True)
        read = read_image(other)
        assert np.array_equal(read.array[0], data)
        np.testing.assert_allclose(read.geometry.affine, affine, atol=1e-4)
        np.testing.assert_allclose(read.geometry.spacing, (0.8, 0.9, 2.5), atol=1e-5)
        # and back: a label written as NIfTI from the ITK file, and as ITK from the NIfTI, land on the same grid
        label = (data > np.percentile(data, 90)).astype(np.uint8)
        as_nifti = write_segmentation(label, tmp_path / f"from_{ending[1:]}.nii.gz", reference=other)
        np.testing.assert_allclose(nib.load(str(as_nifti)).affine, affine, atol=1e-4)
        as_itk = write_segmentation(label, tmp_path / f"from_nifti{ending}", reference=nifti)
        written, original = sitk.ReadImage(str(as_itk)), sitk.ReadImage(str(other))
        np.testing.assert_allclose(written.GetDirection(), original.GetDirection(), atol=1e-5)
        np.testing.assert_allclose(written.GetOrigin(), original.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(written.GetSpacing(), original.GetSpacing(), atol=1e-5)
        assert np.array_equal(read_image(as_itk).array[0], label)


def test_itk_affine_round_trips():
    affine = itk_affine((0.5, 0.7, 3.0), (1.0, -2.0, 3.5), (0, 1, 0, -1, 0, 0, 0, 0, 1))
    spacing, origin, direction = itk_geometry_of(affine)
    np.testing.assert_allclose(spacing, (0.5, 0.7, 3.0))
    np.testing.assert_allclose(origin, (1.0, -2.0, 3.5))
    np.testing.assert_allclose(direction, (0, 1, 0, -1, 0, 0, 0, 0, 1), atol=1e-12)


# --------------------------------------------------------------------------------------------------- the pipeline


@pytest.mark.parametrize("ending", FORMATS)
def test_inspect_and_fingerprint_agree_with_the_nifti_copy(datasets, ending):
    report = tutorseg.inspect_dataset(datasets[ending], progress=False)
    assert not report.errors, report
    assert report.file_ending == ending
    a = tutorseg.fingerprint(datasets[".nii.gz"], progress=False)
    b = tutorseg.fingerprint(datasets[ending], progress=False)
    assert np.array_equal(b.spacings, a.spacings) and np.array_equal(b.shapes_after_crop, a.shapes_after_crop)
    assert b.foreground_intensity_properties_per_channel == a.foreground_intensity_properties_per_channel
    assert tutorseg.plan(b).to_dict()["configurations"] == tutorseg.plan(a).to_dict()["configurations"]


@pytest.mark.slow
@pytest.mark.parametrize("ending", FORMATS)
def test_predictions_match_the_nifti_ones_and_sit_on_the_inputs_grid(datasets, trained, ending, tmp_path):
    from tutorseg.prediction.predictor import predict

    reference = predict(trained, datasets[".nii.gz"], tmp_path / "nifti", tta=False, progress=False)
    result = predict(trained, datasets[ending], tmp_path / ending[1:], tta=False, progress=False)
    assert [p.name for p in result.files] == [p.name.replace(".nii.gz", ending) for p in reference.files]
    for mine, theirs in zip(result.files, reference.files):
        assert np.array_equal(read_image(mine).array, read_image(theirs).array), mine.name
        image = sitk.ReadImage(str(datasets[ending] / "imagesTs" / mine.name.replace(ending, f"_0000{ending}")))
        written = sitk.ReadImage(str(mine))
        assert written.GetSize() == image.GetSize() and written.GetSpacing() == image.GetSpacing()
        np.testing.assert_allclose(written.GetOrigin(), image.GetOrigin(), atol=1e-5)
        np.testing.assert_allclose(written.GetDirection(), image.GetDirection(), atol=1e-6)
    if ending == ".mhd":  # the header and its raw data file, both in place, nothing half-written beside them
        names = sorted(p.name for p in (tmp_path / "mhd").iterdir())
        assert all(n.endswith((".mhd", ".zraw", ".raw")) for n in names), names


@pytest.mark.slow
def test_output_format_writes_nrrd_for_nifti_inputs(datasets, trained, tmp_path):
    from tutorseg.cli import main

    code = main(["predict", str(trained), "-i", str(datasets[".nii.gz"] / "imagesTs"), "-o", str(tmp_path / "out"),
                 "--output-format", "nrrd", "--no-tta", "-q"])
    assert code == 0
    written = sorted((tmp_path / "out").glob("*.nrrd"))
    assert len(written) == N_TEST
    for path in written:
        image = sitk.ReadImage(str(datasets[".nii.gz"] / "imagesTs" / path.name.replace(".nrrd", "_0000.nii.gz")))
        result = sitk.ReadImage(str(path))
        np.testing.assert_allclose(result.GetOrigin(), image.GetOrigin(), atol=1e-5)
        np.testing.assert_allclose(result.GetDirection(), image.GetDirection(), atol=1e-6)


def test_a_broken_file_is_named_with_a_fix(tmp_path, datasets):
    source = next((datasets[".nrrd"] / "imagesTr").iterdir())
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(source.read_bytes()[:300])
    with pytest.raises(ImageReadError) as caught:
        read_image(broken)
    assert "broken.nrrd" in str(caught.value)
    flat = tmp_path / "slice.mha"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkUInt8), str(flat))
    with pytest.raises(ImageReadError, match="2D image") as caught:
        read_geometry(flat)
    assert caught.value.code == "unsupported_dimensionality"


def test_export_for_nnunet_keeps_metaimage_data(datasets, tmp_path):
    dataset = tutorseg.load_dataset(datasets[".mhd"])
    plan = tutorseg.plan(tutorseg.fingerprint(dataset, progress=False))
    exported = tutorseg.export_nnunet(dataset, plan, tmp_path / "nnUNet_raw", dataset_id=901)
    headers = sorted((exported / "imagesTr").glob("*.mhd"))
    assert len(headers) == N_TRAIN
    for header in headers:
        original = datasets[".mhd"] / "imagesTr" / header.name
        assert np.array_equal(read_image(header).array, read_image(original).array)


# --------------------------------------------------------------------------------------------------- DICOM


def _write_series(volume, folder: Path, *, series_uid: str, modality: str = "MR", prefix: str = "slice") -> None:
    """Write a SimpleITK volume as a DICOM series of int16 slices, with the tags that carry its geometry.

    GDCM's writer sets the process's locale to "C" and leaves it so (seen with SimpleITK 2.5); the locale is put
    back, or every later subprocess in this test process would decode its output as ASCII.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(volume, folder, series_uid=series_uid, modality=modality, prefix=prefix)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(volume, folder: Path, *, series_uid: str, modality: str, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk.Cast(volume, sitk.sitkInt16)
    d = volume.GetDirection()
    orientation = "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))  # row and column directions
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        image = volume[:, :, k]
        for tag, value in (("0008|0060", modality), ("0020|000e", series_uid), ("0020|0037", orientation),
                           ("0020|0032", "\\".join(str(v) for v in volume.TransformIndexToPhysicalPoint((0, 0, k)))),
                           ("0020|0013", str(k + 1)), ("0018|0050", str(volume.GetSpacing()[2])),
                           ("0008|0008", "DERIVED\\SECONDARY")):
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}_{k:03d}.dcm"))
        writer.Execute(image)


def _integral_cases(sample: Path, n: int):
    cases = [c for c in tutorseg.load_dataset(sample).training
             if np.array_equal(c.load_image(), np.round(c.load_image()))]
    assert len(cases) >= n, "the sample has too few cases with whole-number intensities for a DICOM round trip"
    return cases[:n]


def test_dicom_series_become_a_dataset_with_their_geometry(sample_dir, tmp_path):
    from tutorseg.integrations.convert import convert_folders

    cases = _integral_cases(sample_dir, 3)
    for number, case in enumerate(cases):
        _write_series(sitk.ReadImage(str(case.image_files[0])), tmp_path / "dicom" / case.case_id,
                      series_uid=f"1.2.826.0.1.3680043.2.1125.{number + 1}")
        (tmp_path / "masks").mkdir(exist_ok=True)
        sitk.WriteImage(sitk.ReadImage(str(case.label_file)), str(tmp_path / "masks" / f"{case.case_id}.nii.gz"))
    result = convert_folders(tmp_path / "dicom", tmp_path / "masks", tmp_path / "out", name="Dataset902_Dicom",
                             channel_names={0: "MRI"}, labels={"background": 0, "Anterior": 1, "Posterior": 2})
    assert result.n_training == 3 and "3 DICOM series read as volumes" in result.notes[0]
    for case in cases:
        converted = read_image(result.dataset_dir / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        original = read_image(case.image_files[0])
        assert np.array_equal(converted.array, original.array.astype(np.int16))
        np.testing.assert_allclose(converted.geometry.spacing, original.geometry.spacing, atol=1e-5)
        np.testing.assert_allclose(converted.geometry.affine, original.geometry.affine, atol=1e-4)
        label = read_image(result.dataset_dir / "labelsTr" / f"{case.case_id}.nii.gz")
        assert np.array_equal(label.array[0], case.load_label())
    assert not tutorseg.inspect_dataset(result.dataset_dir, progress=False).errors
    assert not list((tmp_path / "out").glob(".tutorseg-dicom-*"))  # the intermediate volumes are gone


def test_unreadable_and_mixed_dicom_folders_are_all_reported(sample_dir, tmp_path):
    from tutorseg.integrations.convert import ConversionError, convert_folders

    first, second = _integral_cases(sample_dir, 2)
    _write_series(sitk.ReadImage(str(first.image_files[0])), tmp_path / "dicom" / "mixed", series_uid="1.2.3.1")
    _write_series(sitk.ReadImage(str(second.image_files[0]))[:, :, :5], tmp_path / "dicom" / "mixed",
                  series_uid="1.2.3.2", prefix="localiser")  # a second series in the same folder
    (tmp_path / "dicom" / "notes").mkdir()
    (tmp_path / "dicom" / "notes" / "readme.txt").write_text("not a scan")
    (tmp_path / "masks").mkdir()
    with pytest.raises(ConversionError) as caught:
        convert_folders(tmp_path / "dicom", tmp_path / "masks", tmp_path / "out")
    message = str(caught.value)
    assert "2 DICOM case folder(s) cannot be converted" in message
    assert "mixed:" in message and "notes: no DICOM series" in message


# --------------------------------------------------------------------------------------------------- 3D TIFF stacks


def _write_stack(case_file: Path, target: Path, *, sidecar: bool = True, spacing=None) -> None:
    """A case written as a TIFF stack (z, y, x) by tifffile, its spacing in the sidecar JSON [z, y, x]."""
    import tifffile

    image = read_image(case_file)
    tifffile.imwrite(target, np.ascontiguousarray(np.transpose(image.array[0])))
    if sidecar:
        zyx = list(reversed(spacing or image.geometry.spacing))
        target.with_name(target.name.removesuffix(".tif") + ".json").write_text(json.dumps({"spacing": zyx}))


@pytest.fixture(scope="module")
def tiff_dataset(datasets, tmp_path_factory) -> Path:
    nifti = datasets[".nii.gz"]
    folder = tmp_path_factory.mktemp("tiff") / "Dataset903_HippocampusTIFF"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
        for source in sorted((nifti / sub).glob("*.nii.gz")):
            _write_stack(source, folder / sub / source.name.replace(".nii.gz", ".tif"))
    data = json.loads((nifti / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**data, "file_ending": ".tif"}))
    return folder


def test_tiff_stacks_read_like_the_nifti_cases(datasets, tiff_dataset):
    dataset = tutorseg.load_dataset(tiff_dataset)
    assert not dataset.is_2d_format and len(dataset.training) == N_TRAIN
    for case in dataset.training:
        original = read_image(datasets[".nii.gz"] / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        stack = read_image(case.image_files[0])
        assert np.array_equal(stack.array, original.array) and stack.geometry.spacing == original.geometry.spacing
        assert stack.geometry.notes == ()
    report = tutorseg.inspect_dataset(tiff_dataset, progress=False)
    assert not report.errors and not report.problems_of("missing_spacing"), report
    assert "3D .tif files" in report.title()
    a = tutorseg.fingerprint(datasets[".nii.gz"], progress=False)
    b = tutorseg.fingerprint(tiff_dataset, progress=False)
    assert tutorseg.plan(b).to_dict()["configurations"] == tutorseg.plan(a).to_dict()["configurations"]


@pytest.mark.slow
def test_tiff_stack_predictions_match_and_carry_their_spacing(datasets, tiff_dataset, trained, tmp_path):
    from tutorseg.prediction.predictor import predict

    reference = predict(trained, datasets[".nii.gz"], tmp_path / "nifti", tta=False, progress=False)
    result = predict(trained, tiff_dataset, tmp_path / "tiff", tta=False, progress=False)
    for mine, theirs in zip(result.files, reference.files):
        assert mine.name.endswith(".tif")
        assert np.array_equal(read_image(mine).array, read_image(theirs).array)
        sidecar = json.loads(mine.with_name(mine.name.removesuffix(".tif") + ".json").read_text())
        assert sidecar == {"spacing": list(reversed(read_geometry(theirs).spacing))}


def test_stack_spacing_from_imagej_tags_or_reported_missing(sample_dir, tmp_path):
    import tifffile

    case = tutorseg.load_dataset(sample_dir).training[0]
    volume = np.ascontiguousarray(np.transpose(case.load_image()[0]))  # (z, y, x)
    tagged = tmp_path / "tagged.tif"
    tifffile.imwrite(tagged, volume.astype(np.float32), imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    assert read_geometry(tagged).spacing == pytest.approx((0.25, 0.5, 2.0))  # x, y from resolution, z from ImageJ

    folder = tmp_path / "Dataset904_NoSpacing"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    for c in tutorseg.load_dataset(sample_dir).training[:2]:
        _write_stack(c.image_files[0], folder / "imagesTr" / f"{c.case_id}_0000.tif", sidecar=False)
        _write_stack(c.label_file, folder / "labelsTr" / f"{c.case_id}.tif", sidecar=False)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {
        "background": 0, "Anterior": 1, "Posterior": 2}, "numTraining": 2, "file_ending": ".tif"}))
    report = tutorseg.inspect_dataset(folder, progress=False)
    missing = report.problems_of("missing_spacing")
    assert len(missing) == 2 and all('_0000.json: {"spacing": [z, y, x]}' in p.fix for p in missing), missing


def test_a_single_page_tiff_is_still_a_2d_image(isbi_dir, tmp_path):
    from PIL import Image

    page = tmp_path / "slice.tif"
    Image.open(next((isbi_dir / "imagesTr").iterdir())).save(page)
    assert read_geometry(page).ndim == 2


def test_inspect_names_a_flat_tiff_among_stacks_and_a_label_without_its_spacing(tiff_dataset, tmp_path):
    """Two mistakes microscopists make: one case saved as a single page, one label stack without its sidecar."""
    import shutil

    from PIL import Image

    folder = tmp_path / tiff_dataset.name
    shutil.copytree(tiff_dataset, folder)
    cases = sorted(p.name.removesuffix("_0000.tif") for p in (folder / "imagesTr").glob("*_0000.tif"))
    flat, unspaced = cases[1], cases[2]
    stack = read_image(folder / "imagesTr" / f"{flat}_0000.tif").array[0]
    middle = stack[:, :, stack.shape[2] // 2].T.astype(np.float32)
    Image.fromarray(middle).save(folder / "imagesTr" / f"{flat}_0000.tif")  # one page: a 2D image
    (folder / "labelsTr" / f"{unspaced}.json").write_text(json.dumps({"spacing": [3.0, 1.0, 1.0]}))
    report = tutorseg.inspect_dataset(folder, progress=False)
    (dimensionality,) = report.problems_of("unsupported_dimensionality", case_id=flat)
    assert "2 spatial dimensions" in dimensionality.message and "3D volumes" in dimensionality.message
    (spacing,) = report.problems_of("spacing_mismatch", case_id=unspaced)
    assert spacing.severity.value == "error"
