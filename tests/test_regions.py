"""Region-based labels (nnU-Net's ``regions_class_order``, as BraTS): sigmoid outputs, per-region Dice + BCE,
region sampling, label maps region after region, evaluation per region.

The dataset: six real cases of the bundled sample with nested regions as BraTS has them (whole tumour > tumour core
> enhancing tumour): the label files hold 1 = Anterior, 2 = Posterior and 3 = the Posterior's core (its voxels one
erosion inside); the regions are "hippocampus" [1, 2, 3], "posterior" [2, 3] and "posterior core" [3].
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage
from training_helpers import tiny_plan

import tutorseg
from tutorseg.data.label_maps import dice_per_class
from tutorseg.preprocessing.preprocessor import (
    PreprocessedDataset,
    restore_label_map,
    restore_probabilities,
    sample_class_locations,
)
from tutorseg.training.model.loss import DeepSupervisionLoss, region_dice_bce, region_masks
from tutorseg.training.runs.history import confusion_counts

REGIONS = {"hippocampus": [1, 2, 3], "posterior": [2, 3], "posterior core": [3]}
ORDER = [1, 2, 3]


def _region_dataset(sample_dir, root, n=6, ignore=None, **overrides):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for label_file in sorted((sample_dir / "labelsTr").glob("*.nii.gz"))[:n]:
        case = label_file.name[: -len(".nii.gz")]
        shutil.copy(sample_dir / "imagesTr" / label_file.name, root / "imagesTr" / f"{case}_0000.nii.gz")
        label = nib.load(label_file)
        array = np.asarray(label.dataobj).astype(np.uint8)
        array[ndimage.binary_erosion(array == 2)] = 3
        if ignore is not None:  # sparse annotations: the upper half of the slices left unannotated
            array[:, :, array.shape[2] // 2:] = ignore
        nib.save(nib.Nifti1Image(array, label.affine), root / "labelsTr" / label_file.name)
    meta = {"name": "Regions", "channel_names": {"0": "MRI"}, "numTraining": n, "file_ending": ".nii.gz",
            "labels": {"background": 0, **REGIONS, **({"ignore": ignore} if ignore is not None else {})},
            "regions_class_order": ORDER, **overrides}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


@pytest.fixture(scope="module")
def regions(sample_dir, tmp_path_factory):
    return _region_dataset(sample_dir, tmp_path_factory.mktemp("regions") / "Dataset910_Regions")


def test_dataset_json_regions_are_read_and_explained(regions, sample_dir, tmp_path):
    dataset = tutorseg.load_dataset(regions)
    assert dataset.regions == {k: tuple(v) for k, v in REGIONS.items()} and dataset.regions_class_order == (1, 2, 3)
    # the values the label files hold, named after the region each stands for in predictions
    assert dataset.labels == {"background": 0, "hippocampus": 1, "posterior": 2, "posterior core": 3}
    report = tutorseg.inspect_dataset(regions, progress=False)
    assert not report.errors
    assert any(p.code == "region_based" and "sigmoid" in p.why for p in report.problems)
    # without regions_class_order: one error that says what to add
    bad = _region_dataset(sample_dir, tmp_path / "bad", n=2, regions_class_order=None)
    errors = tutorseg.inspect_dataset(bad, progress=False).errors
    assert [p.code for p in errors] == ["missing_regions_class_order"]
    assert '"regions_class_order": [3, 3, 3]' in errors[0].fix


def test_region_loss_is_dice_plus_bce_of_each_regions_sigmoid():
    from monai.losses import DiceLoss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 10, 12, 8, generator=generator)
    labels = torch.randint(0, 4, (2, 1, 10, 12, 8), generator=generator)
    masks = region_masks(labels, list(REGIONS.values()))
    assert torch.equal(masks[:, 1], ((labels[:, 0] == 2) | (labels[:, 0] == 3)).float())
    for batch_dice in (False, True):
        monai_dice = DiceLoss(sigmoid=True, include_background=True, batch=batch_dice, smooth_nr=1e-5,
                              smooth_dr=1e-5)(logits, masks)
        expected = monai_dice + torch.nn.functional.binary_cross_entropy_with_logits(logits, masks)
        assert torch.allclose(region_dice_bce(logits, masks, batch_dice=batch_dice), expected, atol=1e-6)
    loss = DeepSupervisionLoss(2, batch_dice=False, regions=list(REGIONS.values()))
    assert torch.allclose(loss([logits, logits[:, :, ::2, ::2, ::2]], labels),
                          region_dice_bce(logits, masks, batch_dice=False))  # the lowest output has weight 0


def test_pseudo_dice_and_sampling_count_regions():
    labels = torch.tensor([0, 1, 2, 3, 3]).reshape(1, 1, 5)
    logits = torch.tensor([[-1, 1, 1, 1, 1], [-1, -1, 1, 1, -1], [-1, -1, 1, 1, 1]], dtype=torch.float32)[None]
    counts = confusion_counts(logits, labels, 3, regions=list(REGIONS.values()))
    # TP, FP, FN: hippocampus all 4 found; posterior 2 of 3; core both, and one voxel too many
    assert counts.tolist() == [[4, 2, 2], [0, 0, 1], [0, 1, 0]]
    label = np.array([[0, 1, 2], [3, 3, 0]])
    locations = sample_class_locations(label, {1: (1, 2, 3), 2: (2, 3), 3: (3,)})
    assert [len(locations[k]) for k in (1, 2, 3)] == [4, 3, 2]


def test_label_map_is_written_region_after_region():
    """nnU-Net's convert_probabilities_to_segmentation: inner regions overwrite outer ones."""
    from dataclasses import replace

    from tutorseg.planning import Plan

    plan = replace(Plan("x", {0: "MRI"}, {"background": 0}, {}, {}, 8, None, False, 1, "", (0, 1, 2), (1.0,) * 3,
                        (1.0,) * 3), regions={k: tuple(v) for k, v in REGIONS.items()}, regions_class_order=(1, 2, 3))
    probabilities = np.array([[0.9, 0.9, 0.2, 0.9], [0.1, 0.8, 0.9, 0.8], [0.1, 0.2, 0.1, 0.7]])
    assert plan.to_label_map(probabilities).tolist() == [1, 2, 2, 3]
    assert plan.n_outputs == 3 and plan.output_names == ("hippocampus", "posterior", "posterior core")


def test_a_region_dataset_trains_predicts_and_is_evaluated_per_region(regions, tmp_path):
    plan = tiny_plan(regions)
    assert plan.has_regions and plan.regions_class_order == (1, 2, 3)
    run = tmp_path / "run"
    record = tutorseg.train_fold(regions, plan, fold=0, out_dir=run, epochs=2, iterations_per_epoch=3,
                                 val_iterations=1, validation_tta=False, progress=False, verbose=False,
                                 num_threads=1, save_probabilities=True)
    state = torch.load(run / "checkpoint_final.pt", weights_only=True)
    assert state["n_classes"] == 3  # one sigmoid output per region, no background
    assert set(record.validation["mean_dice"]) == set(REGIONS)
    assert json.loads((run / "history.json").read_text())["class_names"] == list(REGIONS)

    # region sampling: each region's voxels under its regions_class_order value
    preprocessed = PreprocessedDataset.open(next((run / "preprocessed").iterdir()))
    case = preprocessed.load_case(preprocessed.case_ids[0])
    for key, values in zip(ORDER, REGIONS.values()):
        assert np.all(np.isin(case.label[tuple(case.class_locations[key].T)], values))

    # the validation's label maps follow from the saved sigmoid probabilities, region after region
    validation = run / "validation"
    case_id = record.validation["per_case"][0]["case_id"]
    with np.load(validation / f"{case_id}.npz") as saved:
        probabilities, names = saved["probabilities"].astype(np.float32), saved["classes"].tolist()
    assert names == list(REGIONS) and probabilities.min() >= 0 and probabilities.max() <= 1
    written = np.asarray(nib.load(validation / f"{case_id}.nii.gz").dataobj)
    clear = np.all(np.abs(probabilities - 0.5) > 1e-3, axis=0)  # float16 storage may move a voxel near 0.5
    assert clear.mean() > 0.5
    assert np.array_equal(plan.to_label_map(probabilities)[clear], written[clear])

    # restoring one region at a time equals thresholding the restored probabilities
    from tutorseg.training.runs.model_io import load_model

    network, *_ = load_model(run, device="cpu")
    from tutorseg.training.model.sliding_window import predict_volume_logits

    logits = predict_volume_logits(network, case.data, patch_size=plan["3d_fullres"].patch_size, tta=False)
    by_region = restore_label_map(logits, case.properties, plan, "3d_fullres")
    assert np.array_equal(by_region, plan.to_label_map(restore_probabilities(logits, case.properties, plan,
                                                                             "3d_fullres")))

    dataset = tutorseg.load_dataset(regions)
    prediction = tutorseg.predict(run, dataset.training[:2], tmp_path / "pred", tta=False, progress=False)
    predicted = np.asarray(nib.load(prediction.files[0]).dataobj)
    assert set(np.unique(predicted)) <= {0, 1, 2, 3}
    summary = tutorseg.evaluate(tmp_path / "pred", dataset)
    assert list(summary.mean) == list(REGIONS)
    reference = np.asarray(nib.load(dataset.training[0].label_file).dataobj)
    expected = dice_per_class(predicted, reference, {k: tuple(v) for k, v in REGIONS.items()})
    for name in REGIONS:  # each region's Dice is that of the masks of its values
        assert summary.cases[0].metrics[name]["dice"] == pytest.approx(expected[name], nan_ok=True)


def test_export_to_nnunet_keeps_the_regions(regions, tmp_path):
    exported = tutorseg.export_nnunet(regions, out_dir=tmp_path / "raw", dataset_id=910)
    meta = json.loads((exported / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, **REGIONS} and meta["regions_class_order"] == ORDER
    assert tutorseg.load_dataset(exported).regions == tutorseg.load_dataset(regions).regions


def test_regions_with_an_ignore_label_train_without_the_unannotated_voxels(sample_dir, tmp_path):
    """nnU-Net allows both: the ignored voxels are out of both loss terms, the metrics and sampling."""
    sparse = _region_dataset(sample_dir, tmp_path / "Dataset913_SparseRegions", ignore=4)
    report = tutorseg.inspect_dataset(sparse, progress=False)
    assert not report.errors and {"region_based", "ignore_label"} <= {p.code for p in report.problems}
    bad = _region_dataset(sample_dir, tmp_path / "bad", n=2, ignore=3)
    assert [p.code for p in tutorseg.inspect_dataset(bad, progress=False).errors] == ["ignore_label_not_highest"]

    # the loss: no gradient where the label is ignored, and the same value whatever the network says there
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, generator=generator, requires_grad=True)
    labels = torch.randint(0, 4, (2, 1, 8, 8, 8), generator=generator)
    labels[:, :, :3] = 4
    loss_fn = DeepSupervisionLoss(1, batch_dice=True, ignore_label=4, regions=list(REGIONS.values()))
    loss = loss_fn(logits, labels)
    loss.backward()
    assert torch.all(logits.grad[:, :, :3] == 0) and logits.grad[:, :, 3:].abs().sum() > 0
    changed = logits.detach().clone()
    changed[:, :, :3] = 10.0
    assert torch.allclose(loss_fn(changed, labels), loss.detach())

    plan = tiny_plan(sparse)
    assert plan.ignore_label == 4 and plan.n_outputs == 3
    run = tmp_path / "run"
    record = tutorseg.train_fold(sparse, plan, fold=0, out_dir=run, epochs=1, iterations_per_epoch=2,
                                 val_iterations=1, validation_tta=False, progress=False, verbose=False, num_threads=1)
    assert set(record.validation["mean_dice"]) == set(REGIONS)
    preprocessed = PreprocessedDataset.open(next((run / "preprocessed").iterdir()))
    case = preprocessed.load_case(preprocessed.case_ids[0])
    from tutorseg.preprocessing.preprocessor import ANNOTATED

    assert np.all(case.label[tuple(case.class_locations[ANNOTATED].T)] != 4)
    prediction = tutorseg.predict(run, tutorseg.load_dataset(sparse).training[:1], tmp_path / "pred", tta=False,
                                  progress=False)
    predicted = np.asarray(nib.load(prediction.files[0]).dataobj)
    assert 4 not in np.unique(predicted)
    summary = tutorseg.evaluate(tmp_path / "pred", sparse)
    assert list(summary.mean) == list(REGIONS)


def test_find_best_scores_regions_and_ensembles_their_sigmoids(sample_dir, tmp_path):
    """Five tiny folds of 2d and 3d_fullres on ten region cases; the ensemble's region Dice recomputed by hand."""
    from tutorseg.training.budget.smoke import smoke_plan

    data = _region_dataset(sample_dir, tmp_path / "Dataset914_RegionsCV", n=10)
    plan = smoke_plan(tiny_plan(data, "3d_fullres"), "2d")
    root = tmp_path / "runs"
    for configuration in ("2d", "3d_fullres"):
        for fold in range(5):
            tutorseg.train_fold(data, plan, fold=fold, configuration=configuration,
                                out_dir=root / configuration / f"fold_{fold}", epochs=1, iterations_per_epoch=2,
                                val_iterations=1, validation_tta=False, save_probabilities=True, num_threads=1,
                                progress=False, verbose=False)
    result = tutorseg.find_best_configuration(root, verbose=False)
    ensemble = next(c for c in result.candidates if len(c.configurations) == 2)
    assert set(ensemble.dice_per_class) == set(REGIONS)
    per_region = {name: [] for name in REGIONS}
    for npz_2d in sorted(root.glob("2d/fold_*/validation/*.npz")):
        npz_3d = next(root.glob(f"3d_fullres/fold_*/validation/{npz_2d.name}"))
        mean = (np.load(npz_2d)["probabilities"].astype(np.float32)
                + np.load(npz_3d)["probabilities"].astype(np.float32)) / 2
        label_map = np.zeros(mean.shape[1:], np.uint8)
        for channel, value in zip(mean, ORDER):  # region after region, as nnU-Net writes them
            label_map[channel > 0.5] = value
        reference = np.asarray(nib.load(data / "labelsTr" / f"{npz_2d.stem}.nii.gz").dataobj)
        for name, dice in dice_per_class(label_map, reference, {k: tuple(v) for k, v in REGIONS.items()}).items():
            per_region[name].append(dice)
    for name in REGIONS:
        assert ensemble.dice_per_class[name] == pytest.approx(np.nanmean(per_region[name]), abs=1e-12, nan_ok=True)
