"""The cascade trained end to end (3d_lowres five folds, then 3d_cascade_fullres) and predicted, on real cases.

The dataset follows ``tests/derived_datasets.py``'s Dataset907_HippoHuge, for which nnU-Net 2.8.1 plans a cascade
(``tests/data/nnunet_plans/Dataset907_HippoHuge.json``; ``tests/test_planning_nnunet.py`` checks that tutorseg's plan
equals it): real Hippocampus cases upsampled until the full-resolution patch covers too little of the image. Here
five cases (a cascade needs five lowres folds) upsampled x3 with a 0.5 GB memory target, so that the same rule fires
at a size a test can train (patch 48x64x48 of a 105x144x105 image: 9 %, nnU-Net plans 3d_lowres below 25 %; the
lowres images are 2.9x smaller). The networks are then shrunk (``smoke_plan``) and trained for two steps.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from derived_datasets import hippocampus_upsampled
from scipy import ndimage
from training_helpers import tiny_plan

import tutorseg
from tutorseg.data.imageio import read_image
from tutorseg.integrations.model_files import export_model, import_model
from tutorseg.prediction.predictor import load_folds
from tutorseg.preprocessing.preprocessor import PreprocessedDataset, label_on_grid
from tutorseg.training.budget.smoke import smoke_plan
from tutorseg.training.cascade import _ball_operator, _remove_a_component, augment_previous_stage, with_previous_stage
from tutorseg.training.runs.config import TrainingError

TRAIN = dict(epochs=1, iterations_per_epoch=2, val_iterations=1, validation_tta=False, num_threads=1, progress=False,
             verbose=False)


@pytest.fixture(scope="module")
def cascade_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade") / "Dataset908_HippoCascade"
    case_ids = sorted(p.name[: -len(".nii.gz")] for p in (tutorseg.sample_dataset_path() / "labelsTr").iterdir())
    hippocampus_upsampled(root, name="HippoCascade", n=5, factors=(3, 3, 3), spacings=[(0.33, 0.33, 0.33)],
                          case_ids=case_ids)
    return root


@pytest.fixture(scope="module")
def cascade_plan(cascade_dataset):
    fingerprint = tutorseg.fingerprint(cascade_dataset, progress=False, num_workers=0)
    plan = tutorseg.plan(fingerprint, gpu_memory_gb=0.5)
    return smoke_plan(smoke_plan(plan, "3d_lowres"), "3d_fullres")


@pytest.fixture(scope="module")
def lowres_runs(cascade_dataset, cascade_plan, tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade_runs")
    for fold in range(5):
        tutorseg.train_fold(cascade_dataset, cascade_plan, fold=fold, configuration="3d_lowres",
                            out_dir=root / "3d_lowres" / f"fold_{fold}",
                            preprocessed_dir=root / "preprocessed_lowres", **TRAIN)
    return root


def test_the_plan_has_a_cascade_by_nnunets_rule(cascade_plan):
    assert cascade_plan.has_cascade
    assert cascade_plan.trainable_configurations[-1] == "3d_cascade_fullres"
    cascade = cascade_plan["3d_cascade_fullres"]
    assert cascade.previous_stage == "3d_lowres" and cascade.patch_size == cascade_plan["3d_fullres"].patch_size
    decision = next(d for d in cascade_plan.decisions if d.name == "3d_lowres")
    assert decision.value is True and "covers only" in decision.because


def test_a_tiny_cascade_trains_on_out_of_fold_predictions_and_predicts(cascade_dataset, cascade_plan, lowres_runs):
    run_dir = lowres_runs / "3d_cascade_fullres" / "fold_0"
    record = tutorseg.train_fold(cascade_dataset, cascade_plan, fold=0, configuration="3d_cascade_fullres",
                                 out_dir=run_dir, preprocessed_dir=lowres_runs / "preprocessed_cascade", **TRAIN)
    assert record.validation["n_cases"] == 1
    state = torch.load(run_dir / "checkpoint_final.pt", weights_only=True)
    assert state["n_channels"] == 1 + 2  # the MRI, and the lowres segmentation's two foreground classes, one-hot
    assert state["configuration"] == "3d_cascade_fullres"

    # every training case's first-stage input is the lowres segmentation of the fold that did NOT train on it
    splits = json.loads((run_dir / "splits_final.json").read_text())
    preprocessed = PreprocessedDataset.open(next((lowres_runs / "preprocessed_cascade").iterdir()))
    for case_id in splits[0]["train"]:
        fold = next(k for k, split in enumerate(splits) if case_id in split["val"])
        assert fold != 0
        file = lowres_runs / "3d_lowres" / f"fold_{fold}" / "validation" / f"{case_id}.nii.gz"
        on_grid = label_on_grid(read_image(file).array[0], preprocessed.properties[case_id], cascade_plan,
                                "3d_cascade_fullres")
        assert on_grid.shape == preprocessed.properties[case_id].shape_after_resampling

    # prediction runs the lowres folds first, then the cascade
    image = sorted((cascade_dataset / "imagesTr").iterdir())[0]
    out = tutorseg.predict(run_dir, [tutorseg.load_dataset(cascade_dataset).training[0]], run_dir.parent / "pred",
                           tta=False, progress=False)
    predicted = read_image(out.files[0])
    assert predicted.array.shape[1:] == read_image(image).array.shape[1:]
    assert set(np.unique(predicted.array)) <= {0, 1, 2}

    # one model file carries both stages; imported, prediction finds the first stage again
    model = export_model([run_dir], lowres_runs / "cascade.zip")
    imported = import_model(model, lowres_runs / "imported")
    assert imported.description["first_stage_folds"] == [f"3d_lowres/fold_{k}" for k in range(5)]
    folds = load_folds(imported.run_dirs, device="cpu")
    assert [f.run_dir.name for f in folds[0].previous_stage] == [f"fold_{k}" for k in range(5)]
    assert folds[0].previous_stage[0].run_dir.parent == lowres_runs / "imported" / "3d_lowres"


def test_the_cascade_says_what_to_train_first(cascade_dataset, cascade_plan, lowres_runs, tmp_path):
    with pytest.raises(TrainingError, match="first stage is missing.*--configuration 3d_lowres --fold 0 1 2 3 4"):
        tutorseg.train_fold(cascade_dataset, cascade_plan, fold=0, configuration="3d_cascade_fullres",
                            out_dir=tmp_path / "runs" / "3d_cascade_fullres" / "fold_0",
                            preprocessed_dir=lowres_runs / "preprocessed_cascade", **TRAIN)
    partial = tmp_path / "partial"
    for fold in (0, 1):
        (partial / f"fold_{fold}").mkdir(parents=True)
        shutil.copytree(lowres_runs / "3d_lowres" / f"fold_{fold}" / "validation", partial / f"fold_{fold}" / "validation")
    with pytest.raises(TrainingError, match=r"case\(s\) have none .*validated folds in .*: fold_0, fold_1"):
        tutorseg.train_fold(cascade_dataset, cascade_plan, fold=0, configuration="3d_cascade_fullres",
                            out_dir=tmp_path / "other" / "fold_0", previous_stage=partial,
                            preprocessed_dir=lowres_runs / "preprocessed_cascade", **TRAIN)
    plan_without = tiny_plan(tutorseg.sample_dataset_path())
    with pytest.raises(TrainingError, match="no configuration '3d_cascade_fullres' .nnU-Net plans the cascade only"):
        tutorseg.train_fold(tutorseg.sample_dataset_path(), plan_without, configuration="3d_cascade_fullres",
                            out_dir=tmp_path / "nope", **TRAIN)


@pytest.mark.parametrize("radius", [1, 2, 3])
@pytest.mark.parametrize("operator", ["dilation", "erosion", "opening", "closing"])
def test_ball_operators_are_exact(operator, radius):
    """Against scipy's morphology with skimage's ball (nnU-Net's structuring element); the patch border counts as
    inside for erosion, as nnU-Net's zero-padded convolution of the inverted mask does."""
    rng = np.random.default_rng(radius)
    mask = ndimage.binary_opening(rng.random((20, 24, 18)) > 0.55)
    z, y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1, -radius:radius + 1]
    ball = x ** 2 + y ** 2 + z ** 2 <= radius ** 2  # skimage.morphology.ball(radius)

    def dilate(m):
        return ndimage.binary_dilation(m, structure=ball)

    def erode(m):
        return ndimage.binary_erosion(m, structure=ball, border_value=1)

    expected = {"dilation": dilate(mask), "erosion": erode(mask), "opening": dilate(erode(mask)),
                "closing": erode(dilate(mask))}[operator]
    assert np.array_equal(_ball_operator(mask, operator, float(radius)), expected)


def test_a_removed_component_is_a_small_one():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[:14, :14, :14] = True  # 34 % of the patch: never removed
    mask[17:19, 17:19, 17:19] = True  # small
    out = _remove_a_component(mask, np.random.default_rng(0))
    assert out[:14, :14, :14].all() and not out[17:19, 17:19, 17:19].any()


def test_previous_stage_becomes_one_hot_input_and_its_augmentation_keeps_classes_exclusive():
    labels = torch.zeros((4, 2, 16, 16, 16), dtype=torch.int16)
    labels[:, 1, 2:8, 2:8, 2:8] = 1
    labels[:, 1, 9:14, 9:14, 9:14] = 2
    images, out_labels = with_previous_stage(torch.randn(4, 1, 16, 16, 16), labels, [1, 2])
    assert images.shape == (4, 3, 16, 16, 16) and out_labels.shape == (4, 1, 16, 16, 16)
    assert torch.equal(images[:, 1] == 1, labels[:, 1] == 1) and torch.equal(images[:, 2] == 1, labels[:, 1] == 2)
    changed = 0
    for seed in range(10):
        augmented = augment_previous_stage(images[:, 1:], np.random.default_rng(seed))
        assert set(augmented.unique().tolist()) <= {0.0, 1.0}
        assert (augmented.sum(dim=1) <= 1).all()  # a voxel belongs to one class at most
        changed += int(not torch.equal(augmented, images[:, 1:]))
    assert changed >= 5  # p = 1 - 0.6 * 0.8 per sample that something happens to it
