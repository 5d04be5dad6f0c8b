"""An ignore label (sparse annotations): left out of loss, metrics and sampling, never predicted, as nnU-Net's.

The dataset: six real cases of the bundled sample whose labels are unannotated (value 3, named ``ignore``) in the
upper half of the slices, as a sparsely annotated study would leave them.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from training_helpers import tiny_plan

import tutorseg
from tutorseg.data.label_maps import dice_per_class
from tutorseg.preprocessing.preprocessor import ANNOTATED, PreprocessedDataset
from tutorseg.training.batches.patch_sampling import PatchSampler
from tutorseg.training.model.loss import DeepSupervisionLoss, masked_dice_ce

IGNORE = 3


def _sparse_dataset(sample_dir, root, *, ignore_value=IGNORE, n=6):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for label_file in sorted((sample_dir / "labelsTr").glob("*.nii.gz"))[:n]:
        case = label_file.name[: -len(".nii.gz")]
        shutil.copy(sample_dir / "imagesTr" / label_file.name, root / "imagesTr" / f"{case}_0000.nii.gz")
        label = nib.load(label_file)
        array = np.asarray(label.dataobj).astype(np.uint8)
        array[:, :, array.shape[2] // 2:] = ignore_value
        nib.save(nib.Nifti1Image(array, label.affine), root / "labelsTr" / label_file.name)
    meta = {"name": "Sparse", "channel_names": {"0": "MRI"}, "numTraining": n, "file_ending": ".nii.gz",
            "labels": {"background": 0, "Anterior": 1, "Posterior": 2, "ignore": ignore_value}}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


@pytest.fixture(scope="module")
def sparse(sample_dir, tmp_path_factory):
    return _sparse_dataset(sample_dir, tmp_path_factory.mktemp("sparse") / "Dataset909_Sparse")


def test_inspect_explains_the_ignore_label_and_wants_it_highest(sparse, sample_dir, tmp_path):
    report = tutorseg.inspect_dataset(sparse, progress=False)
    assert not report.errors
    assert any(p.code == "ignore_label" and "left out of the loss" in p.why for p in report.problems)
    meta = json.loads((sparse / "dataset.json").read_text())
    bad = tmp_path / "bad"
    shutil.copytree(sparse, bad)
    meta["labels"] = {"background": 0, "Anterior": 1, "ignore": 2, "Posterior": 3}
    (bad / "dataset.json").write_text(json.dumps(meta))
    errors = tutorseg.inspect_dataset(bad, progress=False).errors
    assert any(p.code == "ignore_label_not_highest" and "renumber it to 4" in p.fix for p in errors)


def test_the_loss_leaves_ignored_voxels_out():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 12, 12, 12, generator=generator, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 12, 12, 12), generator=generator)
    # nothing ignored: exactly MONAI's DiceCELoss as the training loss sets it up
    monai = DeepSupervisionLoss(1, batch_dice=False)(logits, labels)
    assert torch.allclose(masked_dice_ce(logits, labels, IGNORE, batch_dice=False), monai, atol=1e-6)
    # a third ignored: what the network outputs there changes nothing, and gets no gradient
    labels[:, :, :4] = IGNORE
    loss = masked_dice_ce(logits, labels, IGNORE, batch_dice=True)
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad[:, :, :4] == 0) and logits.grad[:, :, 4:].abs().sum() > 0
    changed = logits.detach().clone()
    changed[:, :, :4] = torch.randn_like(changed[:, :, :4])
    assert torch.allclose(masked_dice_ce(changed, labels, IGNORE, batch_dice=True), loss.detach())


def test_metrics_leave_ignored_voxels_out():
    reference = np.array([0, 1, 1, 3, 3, 2])
    prediction = np.array([0, 1, 2, 1, 2, 2])
    assert dice_per_class(prediction, reference, {"A": 1, "B": 2}, ignore=3) == {"A": 2 / 3, "B": 2 / 3}
    summary = tutorseg.evaluate({"c": prediction[None]}, {"c": reference[None]},
                                labels={"A": 1, "B": 2, "ignore": 3}, spacing=(1.0, 1.0))
    assert summary.mean["A"]["dice"] == pytest.approx(2 / 3) and "ignore" not in summary.mean


def test_a_sparse_dataset_trains_samples_annotated_voxels_and_predicts(sparse, tmp_path):
    plan = tiny_plan(sparse)
    assert plan.ignore_label == IGNORE and plan.class_labels == {"background": 0, "Anterior": 1, "Posterior": 2}
    run = tmp_path / "run"
    record = tutorseg.train_fold(sparse, plan, fold=0, out_dir=run, epochs=2, iterations_per_epoch=3,
                                 val_iterations=1, validation_tta=False, progress=False, verbose=False,
                                 num_threads=1)
    state = torch.load(run / "checkpoint_final.pt", weights_only=True)
    assert state["n_classes"] == 3  # background, Anterior, Posterior: the ignore label is no output
    assert set(record.validation["mean_dice"]) == {"Anterior", "Posterior"}

    preprocessed = PreprocessedDataset.open(next((run / "preprocessed").iterdir()))
    case = preprocessed.load_case(preprocessed.case_ids[0])
    assert IGNORE not in case.class_locations and ANNOTATED in case.class_locations
    annotated = case.class_locations[ANNOTATED]
    assert len(annotated) and np.all(case.label[tuple(annotated.T)] != IGNORE)
    # patches not forced to foreground are centred on annotated voxels (half the volume is unannotated)
    sampler = PatchSampler([case], patch_size=(8, 8, 8), batch_size=3, seed=0)
    centres = [sampler.choose_box(0, False) for _ in range(200)]
    labels = [case.label[tuple(min(max(lo + 4, 0), s - 1) for lo, s in zip(box.lower, case.label.shape))]
              for box in centres]
    assert np.mean([v != IGNORE for v in labels]) > 0.95

    prediction = tutorseg.predict(run, tutorseg.load_dataset(sparse).training[:1], tmp_path / "pred", tta=False,
                                  progress=False)
    assert IGNORE not in np.unique(np.asarray(nib.load(prediction.files[0]).dataobj))
