"""nnU-Net's Residual Encoder presets: plans equal to nnU-Net's, a ResidualEncoderUNet that trains and predicts,
and the hand-over to nnU-Net naming the matching preset.

The plans nnU-Net 2.8.1 made with ``nnUNetPlannerResEncM`` / ``nnUNetPlannerResEncL`` for the shared datasets are in
``../shared/reference/nnunet`` (its README says how they were made).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from training_helpers import TINY

import tutorseg
from tutorseg.cli import main
from tutorseg.data.imageio import read_image
from tutorseg.integrations.export import nnunet_commands, nnunet_plans
from tutorseg.planning import PRESETS, compare_with_nnunet, plan
from tutorseg.training import load_model
from tutorseg.training.budget.smoke import smoke_plan
from tutorseg.training.model.residual_unet import ResidualEncoderUNet

REFERENCE_PLANS = {"resenc-m": "nnUNetResEncUNetMPlans", "resenc-l": "nnUNetResEncUNetLPlans"}


@pytest.fixture(scope="module")
def fingerprints(request):
    cache = {}

    def get(name):
        if name not in cache:
            folder = request.getfixturevalue("hippocampus_dir" if name == "Task04_Hippocampus" else "isbi_dir")
            cache[name] = tutorseg.fingerprint(folder, num_workers=2, progress=False)
        return cache[name]

    return get


@pytest.mark.parametrize("dataset", ["Task04_Hippocampus", "ISBI2012_EM_membrane"])
@pytest.mark.parametrize("preset", sorted(REFERENCE_PLANS))
def test_resenc_plans_equal_nnunets(fingerprints, reference_dir, dataset, preset):
    """Field for field, network class and blocks per stage included; batch sizes are set by the memory estimate."""
    result = plan(fingerprints(dataset), preset=preset)
    reference = json.loads((reference_dir / dataset / f"{REFERENCE_PLANS[preset]}.json").read_text())
    comparison = compare_with_nnunet(result, reference)
    assert comparison.all_match, str(comparison)
    assert len(comparison.rows) == 12 * len(result.configurations)
    for config in result.configurations.values():
        assert config.network == "ResidualEncoderUNet" and config.n_blocks_per_stage[:4] == (1, 3, 4, 6)
        # no 5 % cap: batches beyond 5 % of the dataset (Hippocampus 3d_fullres 58 / 146, where 5 % would be 7)
        numbers = config.decision("batch_size").numbers
        assert config.batch_size > round(0.05 * numbers["n_voxels_dataset"] / numbers["patch_voxels"])
    assert result.planner.endswith(f"'{REFERENCE_PLANS[preset]}'")


def test_explain_says_what_changes_from_the_default_planner(fingerprints):
    result = plan(fingerprints("Task04_Hippocampus"), preset="resenc-m")
    changes = next(d for d in result.decisions if d.name == "compared_with_default_planner")
    # nnU-Net's default plan for the same data: batch 7 (3d_fullres) and 292 (2d), capped at 5 % of the dataset
    assert "3d_fullres batch_size 7 -> 58" in changes.value and "2d batch_size 292 -> 1618" in changes.value
    text = result.explain()
    assert "ResidualEncoderUNet" in text and "[1, 3, 4, 6] residual blocks per encoder stage" in text
    assert "2 convolutions" in text and "5 %" in text


def test_colab_t4_preset_says_which_resenc_fits(fingerprints):
    t4 = PRESETS["colab-t4-resenc"]
    assert "ResEnc M (9-11 GB) fits a T4 and ResEnc L (24 GB) does not" in t4.description
    assert "-gpu_memory_target 15" in t4.nnunet_planner
    hippo = fingerprints("Task04_Hippocampus")
    on_t4, m = plan(hippo, preset="colab-t4-resenc"), plan(hippo, preset="resenc-m")
    assert on_t4.gpu_memory_gb == 15 and on_t4["3d_fullres"].network == "ResidualEncoderUNet"
    # the same rule with 15/8 of the memory: a larger batch for the same patch
    assert on_t4["3d_fullres"].patch_size == m["3d_fullres"].patch_size
    assert on_t4["3d_fullres"].batch_size > m["3d_fullres"].batch_size
    assert "use the preset colab-t4-resenc" in PRESETS["colab-t4"].description


def test_hand_over_to_nnunet_names_the_matching_preset(fingerprints, sample_dir, tmp_path, capsys):
    hippo = fingerprints("Task04_Hippocampus")
    resenc = plan(hippo, preset="resenc-l")
    commands = nnunet_commands(resenc, 4)
    assert commands == ["nnUNetv2_plan_and_preprocess -d 4 --verify_dataset_integrity -pl nnUNetPlannerResEncL",
                        "nnUNetv2_train 4 3d_fullres 0 -p nnUNetResEncUNetLPlans"]
    exported = nnunet_plans(resenc, "Dataset004_Hippocampus")
    assert exported["plans_name"] == "nnUNetResEncUNetLPlans"
    arch = exported["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"].endswith(".ResidualEncoderUNet") and "n_conv_per_stage" not in arch["arch_kwargs"]
    assert compare_with_nnunet(resenc, exported).all_match  # nnU-Net's own format, read back
    # a default plan: nnU-Net's default planner, and nnU-Net's advice to try the ResEnc presets
    default = nnunet_commands(plan(hippo), 4)
    assert default[:2] == ["nnUNetv2_plan_and_preprocess -d 4 --verify_dataset_integrity", "nnUNetv2_train 4 3d_fullres 0"]
    assert "nnUNetPlannerResEncM" in default[2]

    plan_file = tmp_path / "plan.json"
    plan(tutorseg.fingerprint(sample_dir, progress=False, num_workers=0), preset="resenc-m").save(plan_file)
    assert main(["export-nnunet", str(sample_dir), "--plan", str(plan_file), "-o", str(tmp_path / "raw"),
                 "--dataset-id", "4"]) == 0
    printed = capsys.readouterr().out
    assert "-pl nnUNetPlannerResEncM" in printed and "-p nnUNetResEncUNetMPlans" in printed
    assert "-pl nnUNetPlannerResEncM" in (tmp_path / "raw" / "Dataset004_Hippocampus" /
                                          "tutorseg_next_steps.txt").read_text()


def test_a_tiny_resenc_run_trains_and_predicts(sample_dir, tmp_path):
    """The resenc-m plan of the bundled sample, shrunk to three stages, trains two epochs and predicts a case."""
    full = plan(tutorseg.fingerprint(sample_dir, progress=False, num_workers=0), preset="resenc-m")
    tiny = smoke_plan(full, max_features=8)
    assert tiny["3d_fullres"].n_blocks_per_stage == (1, 3, 4)
    record = tutorseg.train_fold(sample_dir, tiny, fold=0, out_dir=tmp_path / "run", num_threads=1, **TINY)
    assert np.isfinite(record.history["train_loss"]).all()
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "ResidualEncoderUNet" in log
    case = tutorseg.load_dataset(sample_dir).training[0]
    out = tutorseg.predict(tmp_path / "run", [case], tmp_path / "pred", tta=False, progress=False)
    predicted = read_image(out.files[0])
    assert predicted.array.shape[1:] == read_image(case.image_files[0]).array.shape[1:]
    assert set(np.unique(predicted.array)) <= {0, 1, 2}
    network, *_ = load_model(tmp_path / "run", device="cpu")
    assert isinstance(network, ResidualEncoderUNet)
