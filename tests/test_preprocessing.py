"""Tests of tutorseg.preprocessing on real Hippocampus (3D) and ISBI (2D) cases, against nnU-Net's plans."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tutorseg.data.cropping import crop_to_nonzero
from tutorseg.data.dataset import load_dataset
from tutorseg.planning import ConfigurationPlan, Plan
from tutorseg.preprocessing.preprocessor import (
    CaseProperties,
    PreprocessedDataset,
    PreprocessingError,
    normalize_channel,
    preprocess,
    preprocess_image,
    undo_preprocessing,
)
from tutorseg.training.batches.patch_sampling import PatchSampler


def plan_from_nnunet(path: Path, labels: dict, *, is_2d_data: bool = False) -> Plan:
    """A tutorseg Plan holding nnU-Net's own decisions (nnUNetPlans.json), axes reversed into tutorseg order."""
    raw = json.loads(path.read_text())
    configurations = {}
    for name, c in raw["configurations"].items():
        if "patch_size" not in c:
            continue  # cascade entries inherit from another configuration
        arch = c["architecture"]["arch_kwargs"]
        two_d_of_3d = name == "2d" and not is_2d_data
        flip = (lambda v: tuple(v)) if is_2d_data else (lambda v: tuple(v)[::-1])
        configurations[name] = ConfigurationPlan(
            name=name, spacing=flip(c["spacing"]), patch_size=flip(c["patch_size"]), batch_size=c["batch_size"],
            median_image_size_in_voxels=flip(c["median_image_size_in_voxels"]),
            normalization_schemes=tuple(c["normalization_schemes"]), use_mask_for_norm=tuple(c["use_mask_for_norm"]),
            n_stages=arch["n_stages"], features_per_stage=tuple(arch["features_per_stage"]),
            kernel_sizes=tuple(flip(k) for k in arch["kernel_sizes"]), strides=tuple(flip(s) for s in arch["strides"]),
            n_conv_per_stage=tuple(arch["n_conv_per_stage"]),
            n_conv_per_stage_decoder=tuple(arch["n_conv_per_stage_decoder"]), batch_dice=c["batch_dice"],
            slice_axis=2 if two_d_of_3d else None)  # nnU-Net's axis 0 (no transpose here) is tutorseg's axis 2
    return Plan(dataset_name=raw["dataset_name"], channel_names={0: "MRI"}, labels=labels,
                configurations=configurations,
                foreground_intensity_properties_per_channel=raw["foreground_intensity_properties_per_channel"],
                gpu_memory_gb=8, preset=None, is_2d_data=is_2d_data, num_training_cases=0, axis_order="tutorseg",
                transpose_forward=tuple(raw["transpose_forward"]), original_median_spacing=(1.0, 1.0, 1.0),
                original_median_shape=tuple(raw["original_median_shape_after_transp"])[::-1])


@pytest.fixture(scope="module")
def hippo_plan(reference_dir) -> Plan:
    return plan_from_nnunet(reference_dir / "Task04_Hippocampus" / "nnUNetPlans.json",
                            {"background": 0, "Anterior": 1, "Posterior": 2})


@pytest.fixture(scope="module")
def small_hippo(hippocampus_dir, tmp_path_factory) -> Path:
    """A copy of 6 real Hippocampus cases (MSD layout), so tests can change files."""
    root = tmp_path_factory.mktemp("hippo") / "Task04_Hippocampus"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = json.loads((hippocampus_dir / "dataset.json").read_text())
    meta["training"] = meta["training"][:6]
    meta["test"], meta["numTraining"] = [], 6
    for entry in meta["training"]:
        for key in ("image", "label"):
            source = hippocampus_dir / entry[key]
            shutil.copy2(source, root / entry[key])
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def preprocessed(small_hippo, hippo_plan, tmp_path_factory) -> PreprocessedDataset:
    out = tmp_path_factory.mktemp("pre")
    return preprocess(small_hippo, hippo_plan, "3d_fullres", out, num_workers=2, progress=False)


# --------------------------------------------------------------------------------------------------- nnU-Net parity


def test_crop_shapes_equal_nnunets_fingerprint_reversed(hippocampus_dir, reference_dir):
    fingerprint = json.loads((reference_dir / "Task04_Hippocampus" / "dataset_fingerprint.json").read_text())
    cases = load_dataset(hippocampus_dir).training  # sorted by id, as nnU-Net lists them
    for case, nnunet_shape in list(zip(cases, fingerprint["shapes_after_crop"]))[:12]:
        cropped, _, _ = crop_to_nonzero(case.load_image())
        assert cropped.shape[1:] == tuple(nnunet_shape)[::-1], case.case_id


def test_crop_marks_outside_background_minus_one(isbi_dir):
    case = load_dataset(isbi_dir).training[0]
    image = np.pad(case.load_image(), ((0, 0), (5, 7), (3, 0)))  # a real image with a zero border
    label = np.pad(case.load_label(), ((5, 7), (3, 0)))
    cropped, cropped_label, box = crop_to_nonzero(image, label)
    assert box == ((5, 517), (3, 515))
    assert np.array_equal(cropped, case.load_image())
    assert cropped_label.min() >= 0  # the image is non-zero everywhere: nothing outside
    _, no_label, _ = crop_to_nonzero(image)
    assert no_label.shape == (512, 512) and set(np.unique(no_label)) <= {0, -1}


# --------------------------------------------------------------------------------------------------- the folder


def test_output_matches_the_plan(preprocessed, hippo_plan, small_hippo):
    config = hippo_plan["3d_fullres"]
    assert len(preprocessed) == 6 and len(preprocessed.processed) == 6
    for case in preprocessed.load_cases():
        props = case.properties
        assert props.target_spacing == config.spacing
        assert case.data.shape == (1, *props.shape_after_resampling) and case.data.dtype == np.float32
        assert case.label.shape == props.shape_after_resampling and case.label.dtype == np.int8
        # Hippocampus is 1 mm isotropic: resampling keeps the cropped shape
        assert props.shape_after_resampling == props.shape_after_crop
        # Z-score without mask (nnU-Net's plan for MRI here): mean 0, std 1 over the whole crop
        assert case.data.mean() == pytest.approx(0, abs=1e-4) and case.data.std() == pytest.approx(1, abs=1e-3)
        assert set(case.class_locations) == {1, 2}
        for value, where in case.class_locations.items():
            assert (case.label[tuple(where.T)] == value).all()
            assert len(where) == min(10_000, props.class_voxels[value])
    files = sorted(p.name for p in preprocessed.folder.iterdir())
    per_case = [f"{c}{ending}" for c in preprocessed.case_ids
                for ending in (".b2nd", "_seg.b2nd", "_locations.npz", ".json")]
    assert files == sorted(per_case + ["preprocessed.json", "properties.json"])


def test_second_call_does_nothing_and_changes_are_detected(preprocessed, small_hippo, hippo_plan, capsys):
    out = preprocessed.folder.parent
    again = preprocess(small_hippo, hippo_plan, "3d_fullres", out, num_workers=1, progress=False)
    assert again.processed == () and "nothing to do" in capsys.readouterr().out
    # a changed case file: only that case is redone
    label_file = sorted((small_hippo / "labelsTr").glob("*.nii.gz"))[0]
    os.utime(label_file, ns=(label_file.stat().st_atime_ns, label_file.stat().st_mtime_ns + 10**9))
    changed = preprocess(small_hippo, hippo_plan, "3d_fullres", out, num_workers=1, progress=False)
    assert changed.processed == (label_file.name.replace(".nii.gz", ""),)
    # a changed preprocessing setting redoes everything; a changed batch size does not
    bigger_batch = replace(hippo_plan, configurations={
        "3d_fullres": replace(hippo_plan["3d_fullres"], batch_size=2)})
    assert preprocess(small_hippo, bigger_batch, "3d_fullres", out, progress=False).processed == ()
    masked = replace(hippo_plan, configurations={
        "3d_fullres": replace(hippo_plan["3d_fullres"], use_mask_for_norm=(True,))})
    assert len(preprocess(small_hippo, masked, "3d_fullres", out, num_workers=1, progress=False).processed) == 6
    assert "plan settings changed" in capsys.readouterr().out


def test_open_and_repr(preprocessed):
    opened = PreprocessedDataset.open(preprocessed.folder)
    assert opened.case_ids == preprocessed.case_ids
    assert "3d_fullres" in repr(opened) and "<table>" in opened._repr_html_()
    with pytest.raises(PreprocessingError, match="preprocess"):
        PreprocessedDataset.open(preprocessed.folder.parent / "missing")
    props = opened.properties[opened.case_ids[0]]
    assert CaseProperties.from_dict(json.loads(json.dumps(props.to_dict()))) == props


def test_sampler_reads_preprocessed_cases(preprocessed, hippo_plan):
    config = hippo_plan["3d_fullres"]
    sampler = PatchSampler(preprocessed.load_cases(), patch_size=config.patch_size, batch_size=3, seed=0)
    images, labels = sampler.next_batch()
    assert images.shape == (3, 1, *config.patch_size) and (labels[2] > 0).any()


# --------------------------------------------------------------------------------------------------- round trips


def test_round_trip_restores_shape_and_labels_anisotropic(hippocampus_dir, hippo_plan):
    """Resample a real case to 1 x 1 x 5 mm: z is resampled separately, and undo gets the labels back."""
    case = load_dataset(hippocampus_dir).training[3]
    image, label = case.load_image(), case.load_label()
    thick = replace(hippo_plan["3d_fullres"], spacing=(1.0, 1.0, 5.0))
    data, pre_label, props = preprocess_image(image, (1.0, 1.0, 1.0), hippo_plan, thick, label)
    assert props.separate_z_axis == 2
    assert props.shape_after_resampling[2] == round(props.shape_after_crop[2] / 5)
    assert data.shape[1:] == pre_label.shape == props.shape_after_resampling
    back = undo_preprocessing(pre_label, props, hippo_plan, thick)
    assert back.shape == image.shape[1:]
    # nearest along z: every 5th slice comes back exactly; the rest is the nearest thick slice
    assert (back == label).mean() > 0.9
    # probabilities: one-hot of the preprocessed labels, back onto the original grid
    one_hot = np.stack([(pre_label == v) for v in (0, 1, 2)]).astype(np.float32)
    probabilities = undo_preprocessing(one_hot, props, hippo_plan, thick)
    assert probabilities.shape == (3, *image.shape[1:])
    assert (probabilities.argmax(0) == back).mean() > 0.97


def test_round_trip_isotropic_is_near_identical(hippocampus_dir, hippo_plan):
    case = load_dataset(hippocampus_dir).training[0]
    image, label = case.load_image(), case.load_label()
    finer = replace(hippo_plan["3d_fullres"], spacing=(0.8, 0.8, 0.8))
    data, pre_label, props = preprocess_image(image, (1.0, 1.0, 1.0), hippo_plan, finer, label)
    assert props.separate_z_axis is None
    assert props.shape_after_resampling == tuple(round(s / 0.8) for s in props.shape_after_crop)
    back = undo_preprocessing(pre_label, props, hippo_plan, finer)
    assert (back == label).mean() > 0.99


def test_2d_configuration_of_3d_data_keeps_the_slice_spacing(hippocampus_dir, hippo_plan):
    case = load_dataset(hippocampus_dir).training[0]
    config = replace(hippo_plan["2d"], spacing=(0.5, 0.5))
    data, _, props = preprocess_image(case.load_image(), (1.0, 1.0, 2.0), hippo_plan, config)
    assert props.target_spacing == (0.5, 0.5, 2.0)  # slice axis 2 keeps the case's own spacing
    assert data.shape[3] == props.shape_after_crop[2]


def test_2d_images(isbi_dir, reference_dir, tmp_path):
    plan = plan_from_nnunet(reference_dir / "ISBI2012_EM_membrane" / "nnUNetPlans.json",
                            {"background": 0, "membrane": 1}, is_2d_data=True)
    case = load_dataset(isbi_dir).training[0]
    data, label, props = preprocess_image(case.load_image(), (1.0, 1.0), plan, "2d", case.load_label())
    assert data.shape == (1, 512, 512) and label.shape == (512, 512)
    assert undo_preprocessing(label, props, plan, "2d").shape == (512, 512)


def test_normalisation_schemes(hippocampus_dir, hippo_plan):
    channel = load_dataset(hippocampus_dir).training[0].load_image()[0]
    props = hippo_plan.foreground_intensity_properties_per_channel["0"]
    ct, used = normalize_channel(channel, "CTNormalization", intensity_properties=props)
    expected = (np.clip(channel, props["percentile_00_5"], props["percentile_99_5"]) - props["mean"]) / props["std"]
    assert np.allclose(ct, expected, atol=1e-5) and used["clip"] == [28.0, props["percentile_99_5"]]
    rescaled, _ = normalize_channel(channel, "RescaleTo01Normalization")
    assert rescaled.min() == 0 and rescaled.max() == pytest.approx(1)
    inside = channel > 0
    masked, _ = normalize_channel(channel, "ZScoreNormalization", inside=inside)
    assert masked[inside].mean() == pytest.approx(0, abs=1e-4) and np.array_equal(masked[~inside], channel[~inside])
    assert np.array_equal(normalize_channel(channel, "NoNormalization")[0], channel)
    with pytest.raises(PreprocessingError, match="RGBTo01"):
        normalize_channel(channel * 1000, "RGBTo01Normalization")  # beyond 0..255
    with pytest.raises(PreprocessingError, match="unknown normalisation scheme 'Foo'"):
        normalize_channel(channel, "Foo")


def test_the_plans_anisotropy_threshold_reaches_resampling(hippocampus_dir, hippo_plan):
    """A planner override of the threshold (nnU-Net's ANISO_THRESHOLD) changes what preprocessing does with it."""
    case = load_dataset(hippocampus_dir).training[3]
    image = case.load_image()
    target = replace(hippo_plan["3d_fullres"], spacing=(1.0, 1.0, 2.5))  # 2.5x thicker: not anisotropic at 3
    assert hippo_plan.anisotropy_threshold == 3.0
    *_, by_default = preprocess_image(image, (1.0, 1.0, 1.0), hippo_plan, target)
    assert by_default.separate_z_axis is None
    lower = replace(hippo_plan, anisotropy_threshold=2.0)
    *_, by_override = preprocess_image(image, (1.0, 1.0, 1.0), lower, target)
    assert by_override.separate_z_axis == 2


def test_a_planner_override_of_the_threshold_is_carried_by_the_plan(tmp_path):
    from tutorseg import fingerprint, plan, sample_dataset_path
    from tutorseg.training.batches.augmentation import AugmentationConfig, is_dummy_2d

    fp = fingerprint(sample_dataset_path(), progress=False, num_workers=1)
    changed = plan(fp, settings={"anisotropy_threshold": 2.5})
    assert changed.anisotropy_threshold == 2.5
    assert Plan.load(changed.save(tmp_path / "plan.json")).anisotropy_threshold == 2.5
    assert is_dummy_2d((24, 56, 64), 2.5) and not is_dummy_2d((24, 56, 64), AugmentationConfig().anisotropy_threshold)
