"""tutorseg.planning: nnU-Net v2's plans for the shared datasets, and its rules on datasets derived from real cases.

Expected values for the derived datasets are worked out by hand from nnU-Net's rules in the comments.
"""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tutorseg.data.problems import TutorsegError
from tutorseg.fingerprinting import fingerprint
from tutorseg.planning import PRESETS, Plan, compare_with_nnunet, diff_plans, plan


@pytest.fixture(scope="module")
def hippo_fp(hippocampus_dir):
    return fingerprint(hippocampus_dir, num_workers=2, progress=False)


@pytest.fixture(scope="module")
def isbi_fp(isbi_dir):
    return fingerprint(isbi_dir, num_workers=2, progress=False)


@pytest.mark.parametrize("name, fixture", [("Task04_Hippocampus", "hippo_fp"), ("ISBI2012_EM_membrane", "isbi_fp")])
def test_plan_equals_nnunets_reference(request, reference_dir, name, fixture):
    result = plan(request.getfixturevalue(fixture), gpu_memory_gb=8)
    comparison = compare_with_nnunet(result, reference_dir / name / "nnUNetPlans.json")
    assert comparison.all_match, str(comparison)
    assert len(comparison.rows) == 12 * len(result.configurations)


def test_hippocampus_plan_in_tutorseg_axes(hippo_fp):
    p = plan(hippo_fp)
    assert set(p.configurations) == {"2d", "3d_fullres"}  # the fullres patch covers the whole image: no cascade
    full, flat = p["3d_fullres"], p["2d"]
    assert full.patch_size == (40, 56, 40) and full.batch_size == 7  # 7: the 5 % cap with 208 cases
    assert full.median_image_size_in_voxels == (35.0, 50.0, 36.0)  # nnU-Net: (36, 50, 35)
    assert flat.slice_axis == 2 and flat.patch_size == (40, 56) and flat.batch_size == 292  # nnU-Net: (56, 40)
    assert flat.target_spacing_for_case((1.0, 1.0, 1.3)) == (1.0, 1.0, 1.3)
    assert flat.batch_dice and not full.batch_dice
    assert "5 % dataset cap" in full.decision("batch_size").because


def test_isbi_is_2d_only(isbi_fp):
    p = plan(isbi_fp)
    assert list(p.configurations) == ["2d"] and p.is_2d_data
    assert p["2d"].slice_axis is None and p["2d"].n_stages == 8 and p["2d"].features_per_stage[-1] == 512


def test_plans_are_deterministic_and_round_trip(hippo_fp, tmp_path):
    a, b = plan(hippo_fp), plan(hippo_fp)
    assert a == b
    assert Plan.load(a.save(tmp_path / "plan.json")) == a
    data = json.loads((tmp_path / "plan.json").read_text())
    assert set(data["configurations"]["3d_fullres"]) >= {"spacing", "patch_size", "batch_size", "normalization_schemes",
                                                         "use_mask_for_norm", "n_stages", "features_per_stage",
                                                         "kernel_sizes", "strides"}
    assert "axis_order" in data


def _anisotropic(fp, factor=4.0):
    """Hippocampus as if scanned with 4 mm slices: z spacing x4, z size / 4 (rounded), every case."""
    cases = tuple(replace(c, spacing=(1.0, 1.0, factor), shape_after_crop=(*c.shape_after_crop[:2],
                  max(1, round(c.shape_after_crop[2] / factor)))) for c in fp.cases)
    return replace(fp, cases=cases)


def test_anisotropic_rule_by_hand(hippo_fp):
    # nnU-Net order: spacing (4, 1, 1), median shape (9, 50, 35). 4 > 3*1 and 9*3 < 35: anisotropic; the 10th
    # percentile (4) is kept. Pooling: z (4 mm) is not pooled until x, y reach 4 mm (2 poolings); kernels stay 1 along
    # z until then -> strides z: 1,1,1,2; x,y: 1,2,2,2; patch divisible by (2, 8, 8): (10, 56, 40).
    p = plan(_anisotropic(hippo_fp))
    full = p["3d_fullres"]
    assert full.spacing == (1.0, 1.0, 4.0)
    assert full.patch_size == (40, 56, 10)
    assert full.strides == ((1, 1, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2))
    assert full.kernel_sizes == ((3, 3, 1), (3, 3, 1), (3, 3, 3), (3, 3, 3))
    # 5 % of 9*50*35*208 voxels = 163,800 / (10*56*40) = 7.3 -> 7
    assert full.batch_size == 7
    assert p["2d"].slice_axis == 2 and p["2d"].patch_size == (40, 56)
    assert "anisotropic" in p.decisions[0].because


def test_lowres_for_large_images(hippo_fp):
    # images 8x larger per axis: the 3d_fullres patch cannot cover 25 % of the median image -> 3d_lowres + cascade
    cases = tuple(replace(c, shape_after_crop=tuple(8 * s for s in c.shape_after_crop)) for c in hippo_fp.cases)
    p = plan(replace(hippo_fp, cases=cases))
    assert set(p.configurations) == {"2d", "3d_fullres", "3d_lowres"}
    low, full = p["3d_lowres"], p["3d_fullres"]
    assert low.next_stage == "3d_cascade_fullres" and full.batch_dice and not low.batch_dice
    assert all(s > 1.0 for s in low.spacing)
    assert np.prod(low.patch_size) / np.prod(low.median_image_size_in_voxels) >= 0.25
    assert np.prod(full.patch_size) < np.prod(full.median_image_size_in_voxels)
    assert full.features_per_stage[-1] == 320  # capped in 3D


def test_normalization_from_channel_names(hippo_fp):
    names = {0: "CT", 1: "noNorm", 2: "ZSCORE", 3: "rescale_to_0_1", 4: "rgb_to_0_1", 5: "T2"}
    fp = replace(hippo_fp, channel_names=names)
    assert plan(fp)["3d_fullres"].normalization_schemes == (
        "CTNormalization", "NoNormalization", "ZScoreNormalization", "RescaleTo01Normalization",
        "RGBTo01Normalization", "ZScoreNormalization")
    # cropping kept a median 60 % (< 75 %): the mask is used, for z-scored channels only
    cropped = replace(fp, cases=tuple(replace(c, relative_size_after_crop=0.6) for c in fp.cases))
    assert plan(cropped)["3d_fullres"].use_mask_for_norm == (False, False, True, False, False, True)
    assert plan(fp)["3d_fullres"].use_mask_for_norm == (False,) * 6


def test_real_two_channel_anisotropic_nifti_dataset(sample_dir, tmp_path):
    """A dataset written from real cases: every 3rd slice (3 mm), a second channel (the image squared), v2 layout."""
    from tutorseg.data.dataset import load_dataset

    source = load_dataset(sample_dir)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for case in source.training[:6]:
        image, label = case.load_image()[0][..., ::3], case.load_label()[..., ::3]
        affine = np.diag([1.0, 1.0, 3.0, 1.0])
        nib.save(nib.Nifti1Image(image, affine), tmp_path / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        nib.save(nib.Nifti1Image(image ** 2, affine), tmp_path / "imagesTr" / f"{case.case_id}_0001.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), tmp_path / "labelsTr" / f"{case.case_id}.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "noNorm"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": 6, "file_ending": ".nii.gz"}))
    fp = fingerprint(tmp_path, num_workers=1, progress=False)
    assert set(fp.foreground_intensity_properties_per_channel) == {"0", "1"}
    p = plan(fp)
    full = p["3d_fullres"]
    # z spacing 3 mm is not MORE than 3x 1 mm: median spacing kept; z (3 mm) is pooled only after x, y reach 2 mm
    assert full.spacing == (1.0, 1.0, 3.0)
    assert full.normalization_schemes == ("ZScoreNormalization", "NoNormalization")
    assert full.kernel_sizes[0] == (3, 3, 1) and full.strides[1][2] == 1
    assert p["2d"].slice_axis == 2


def test_rgb_png_dataset(isbi_dir, tmp_path):
    """RGB PNGs made from real ISBI images: 3 channels from one file, normalised by rgb_to_0_1."""
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for i, path in enumerate(sorted((isbi_dir / "imagesTr").glob("*.png"))[:4]):
        grey = np.asarray(Image.open(path).convert("L"))[:256, :200]
        rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / "imagesTr" / f"em_{i:03d}_0000.png")
        label = np.asarray(Image.open(isbi_dir / "labelsTr" / path.name.replace("_0000", "")))[:256, :200]
        Image.fromarray(label.astype(np.uint8)).save(tmp_path / "labelsTr" / f"em_{i:03d}.png")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "membrane": 1},
        "numTraining": 4, "file_ending": ".png"}))
    fp = fingerprint(tmp_path, num_workers=1, progress=False)
    assert fp.is_2d_data and fp.median_shape_after_crop == (256.0, 200.0)
    p = plan(replace(fp, channel_names={0: "rgb_to_0_1", 1: "rgb_to_0_1", 2: "rgb_to_0_1"}))
    assert list(p.configurations) == ["2d"]
    c = p["2d"]
    # 256 x 200: pool while >= 8 -> 256: 5 poolings (8), 200: 200,100,50,25,13,7 -> 5 (7 < 8): divisible by 32;
    # 200 -> 224; 5 % of 256*200*4 voxels / (256*224) = 0.18 -> 2 (the minimum)
    assert c.patch_size == (256, 224) and c.n_stages == 6 and c.batch_size == 2
    assert c.normalization_schemes == ("RGBTo01Normalization",) * 3


def test_presets_and_memory_change_the_plan(hippo_fp):
    assert {"nnunet-default", "colab-t4", "cpu"} <= set(PRESETS)
    default, cpu = plan(hippo_fp), plan(hippo_fp, preset="cpu")
    assert cpu["3d_fullres"].features_per_stage[0] < default["3d_fullres"].features_per_stage[0]
    assert cpu.preset == "cpu" and "accuracy" in cpu.explain()
    big = _big(hippo_fp)
    small, large = plan(big, gpu_memory_gb=4), plan(big, gpu_memory_gb=24)
    assert np.prod(small["3d_fullres"].patch_size) < np.prod(large["3d_fullres"].patch_size)
    changes = diff_plans(small, large)
    assert any("3d_fullres patch_size" in line for line in changes)
    with pytest.raises(TutorsegError, match="unknown preset"):
        plan(hippo_fp, preset="tpu")
    with pytest.raises(TutorsegError, match="positive"):
        plan(hippo_fp, gpu_memory_gb=0)


def _big(fp):
    return replace(fp, cases=tuple(replace(c, shape_after_crop=tuple(6 * s for s in c.shape_after_crop))
                                   for c in fp.cases))


def test_explanations_cite_numbers(hippo_fp):
    p = plan(_anisotropic(hippo_fp))
    text = p.explain()
    assert "4 mm is more than 3x" in text and "10th percentile" in text
    html = p._repr_html_()
    assert "<table>" in html and "target_spacing" in html
    for config in p.configurations.values():
        names = {d.name for d in config.decisions}
        assert {"target_spacing", "patch_size", "batch_size", "strides", "kernel_sizes", "features_per_stage",
                "normalization_schemes", "use_mask_for_norm", "batch_dice", "deep_supervision"} <= names
        assert all(d.kind in ("fixed", "rule", "empirical") and d.rule for d in config.decisions)


def test_the_sample_plans_equal_nnunets_shipped_plans(sample_fingerprint):
    """nnU-Net 2.8.1's own fingerprint and plans of the bundled sample ship with tutorseg (notebook 02, Step 5)."""
    from tutorseg.data.sample import sample_nnunet_reference

    nnunet = sample_nnunet_reference()
    assert compare_with_nnunet(plan(sample_fingerprint), nnunet / "nnUNetPlans.json").all_match
    assert compare_with_nnunet(plan(sample_fingerprint, preset="resenc-m"),
                               nnunet / "nnUNetResEncUNetMPlans.json").all_match
    theirs = json.loads((nnunet / "dataset_fingerprint.json").read_text())
    ours = sample_fingerprint.to_nnunet_dict()
    assert ours["shapes_after_crop"] == theirs["shapes_after_crop"]
    for key, value in theirs["foreground_intensity_properties_per_channel"]["0"].items():
        assert ours["foreground_intensity_properties_per_channel"]["0"][key] == pytest.approx(value, rel=1e-5), key


def test_decisions_by_name(sample_fingerprint):
    """plan.decision(name) and plan[configuration].decision(name); a reason's first line is its summary."""
    p = plan(sample_fingerprint)
    assert p.decision("3d_lowres") is next(d for d in p.decisions if d.name == "3d_lowres")
    assert p["3d_fullres"].decision("batch_size").name == "batch_size"
    with pytest.raises(KeyError, match="no decision 'batch_size'.*3d_lowres.*plan\\[configuration\\]"):
        p.decision("batch_size")  # a configuration's decision, asked of the plan
    budget = replace(p.decisions[0], because="nnU-Net's plan: 1.00 s per step. Chosen: ...\n      measured: ...")
    assert budget.summary == "nnU-Net's plan: 1.00 s per step. Chosen: ..."


def test_compare_reports_differences(hippo_fp, reference_dir):
    p = plan(hippo_fp, gpu_memory_gb=8)
    wrong = replace(p, configurations={**p.configurations, "3d_fullres": replace(p["3d_fullres"], batch_size=9)})
    comparison = compare_with_nnunet(wrong, reference_dir / "Task04_Hippocampus" / "nnUNetPlans.json")
    assert not comparison.all_match
    assert [(r.configuration, r.field) for r in comparison.mismatches] == [("3d_fullres", "batch_size")]
    assert "DIFF" in str(comparison)
