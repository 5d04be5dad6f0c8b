"""Tests of tutorseg.integrations.export: nnU-Net v2 raw format from the bundled sample and derived real datasets."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from tutorseg.data.dataset import load_dataset
from tutorseg.integrations.export import ExportError, export_nnunet, nnunet_plans
from tutorseg.planning import ConfigurationPlan, Plan


def test_sample_exports_as_nnunet_v2(sample_dir, tmp_path):
    source = load_dataset(sample_dir)
    out = export_nnunet(sample_dir, None, tmp_path / "nnUNet_raw", dataset_id=4)
    assert out.name == "Dataset004_Hippocampus"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MRI"}
    assert meta["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert meta["numTraining"] == len(source.training) and meta["file_ending"] == ".nii.gz"
    assert (out / "imagesTr" / "hippocampus_001_0000.nii.gz").is_file()
    exported = load_dataset(out)
    assert exported.layout == "nnunetv2" and not exported.errors
    assert [c.case_id for c in exported.training] == [c.case_id for c in source.training]
    assert [c.case_id for c in exported.test] == [c.case_id for c in source.test]
    first, original = exported.training[0], source.training[0]
    assert np.array_equal(first.load_image(), original.load_image())
    assert np.array_equal(first.load_label(), original.load_label())
    assert np.array_equal(first.geometry().affine, original.geometry().affine)
    with pytest.raises(ExportError, match="already exists"):
        export_nnunet(sample_dir, None, tmp_path / "nnUNet_raw", dataset_id=4)
    with pytest.raises(ExportError, match="1-999"):
        export_nnunet(sample_dir, None, tmp_path / "other", dataset_id=1000)


def _msd_multichannel(sample_dir, root):
    """A two-channel MSD dataset from two real cases: 4D images (x, y, z, 2) and float-typed labels."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries = []
    for case_id in ("hippocampus_001", "hippocampus_003"):
        image = nib.load(str(sample_dir / "imagesTr" / f"{case_id}.nii.gz"))
        data = np.asanyarray(image.dataobj).astype(np.float32)
        four_d = np.stack([data, np.sqrt(data)], axis=-1)
        nib.save(nib.Nifti1Image(four_d, image.affine), str(root / "imagesTr" / f"{case_id}.nii.gz"))
        label = nib.load(str(sample_dir / "labelsTr" / f"{case_id}.nii.gz"))
        nib.save(nib.Nifti1Image(np.asanyarray(label.dataobj).astype(np.float32), label.affine),
                 str(root / "labelsTr" / f"{case_id}.nii.gz"))
        entries.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "TwoChannel", "modality": {"0": "T1", "1": "T1sqrt"},
        "labels": {"0": "background", "1": "Anterior", "2": "Posterior"}, "training": entries, "test": []}))
    return root


def test_multichannel_split_and_float_labels_cast(sample_dir, tmp_path):
    source = load_dataset(_msd_multichannel(sample_dir, tmp_path / "Task501_TwoChannel"))
    out = export_nnunet(source, None, tmp_path / "raw", dataset_id=501)
    assert out.name == "Dataset501_TwoChannel"
    exported = load_dataset(out)
    case = exported.case("hippocampus_001")
    assert [f.name for f in case.image_files] == ["hippocampus_001_0000.nii.gz", "hippocampus_001_0001.nii.gz"]
    assert np.allclose(case.load_image(), source.case("hippocampus_001").load_image())
    label = nib.load(str(case.label_file))
    assert label.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(label.dataobj), source.case("hippocampus_001").load_label())
    assert np.array_equal(nib.load(str(case.image_files[1])).affine, case.geometry().affine)


def test_png_dataset_exports(isbi_dir, tmp_path):
    root = tmp_path / "Dataset103_ISBIEM"
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for case_id in ("isbi2012_000", "isbi2012_001"):
        shutil.copy(isbi_dir / "imagesTr" / f"{case_id}_0000.png", root / "imagesTr")
        shutil.copy(isbi_dir / "labelsTr" / f"{case_id}.png", root / "labelsTr")
    meta = json.loads((isbi_dir / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": 2}))
    out = export_nnunet(root, None, tmp_path / "raw", dataset_id=103)
    exported = load_dataset(out)
    assert [c.case_id for c in exported.training] == ["isbi2012_000", "isbi2012_001"]
    assert np.array_equal(exported.training[0].load_label(), load_dataset(root).training[0].load_label())


def _plan_from_nnunet(reference: dict) -> Plan:
    """A tutorseg Plan holding the values of nnU-Net's own Hippocampus plans, in tutorseg's (x, y, z) order."""
    configurations = {}
    for name in ("2d", "3d_fullres"):
        c = reference["configurations"][name]
        arch = c["architecture"]["arch_kwargs"]
        configurations[name] = ConfigurationPlan(
            name=name, spacing=tuple(c["spacing"][::-1]), patch_size=tuple(c["patch_size"][::-1]),
            batch_size=c["batch_size"], median_image_size_in_voxels=tuple(c["median_image_size_in_voxels"][::-1]),
            normalization_schemes=tuple(c["normalization_schemes"]), use_mask_for_norm=tuple(c["use_mask_for_norm"]),
            n_stages=arch["n_stages"], features_per_stage=tuple(arch["features_per_stage"]),
            kernel_sizes=tuple(tuple(k[::-1]) for k in arch["kernel_sizes"]),
            strides=tuple(tuple(s[::-1]) for s in arch["strides"]), n_conv_per_stage=tuple(arch["n_conv_per_stage"]),
            n_conv_per_stage_decoder=tuple(arch["n_conv_per_stage_decoder"]), batch_dice=c["batch_dice"],
            slice_axis=2 if name == "2d" else None)
    return Plan(dataset_name="Hippocampus", channel_names={0: "MRI"},
                labels={"background": 0, "Anterior": 1, "Posterior": 2}, configurations=configurations,
                foreground_intensity_properties_per_channel=reference["foreground_intensity_properties_per_channel"],
                gpu_memory_gb=8.0, preset=None, is_2d_data=False, num_training_cases=208, axis_order="x, y, z",
                transpose_forward=(0, 1, 2),
                original_median_spacing=tuple(reference["original_median_spacing_after_transp"][::-1]),
                original_median_shape=tuple(reference["original_median_shape_after_transp"][::-1]))


def test_plan_round_trips_to_nnunet_field_names(reference_dir, sample_dir, tmp_path):
    reference = json.loads((reference_dir / "Task04_Hippocampus" / "nnUNetPlans.json").read_text())
    plan = _plan_from_nnunet(reference)
    exported = nnunet_plans(plan, "Dataset004_Hippocampus")
    for key in ("dataset_name", "plans_name", "original_median_spacing_after_transp",
                "original_median_shape_after_transp", "transpose_forward", "transpose_backward", "image_reader_writer"):
        assert exported[key] == reference[key], key
    for name in ("2d", "3d_fullres"):
        ours, theirs = exported["configurations"][name], reference["configurations"][name]
        for key in ("patch_size", "spacing", "median_image_size_in_voxels", "batch_size", "normalization_schemes",
                    "resampling_fn_data_kwargs", "resampling_fn_seg_kwargs", "batch_dice"):
            assert ours[key] == theirs[key], (name, key)
        assert ours["architecture"]["arch_kwargs"] == theirs["architecture"]["arch_kwargs"], name
    plan.save(tmp_path / "plan.json")
    out = export_nnunet(sample_dir, tmp_path / "plan.json", tmp_path / "raw", dataset_id=4)
    assert json.loads((out / "tutorseg_plans.json").read_text())["configurations"]["3d_fullres"]["patch_size"] == \
        reference["configurations"]["3d_fullres"]["patch_size"]
