"""Tests of tutorseg.prediction.predictor with tiny real training runs (seconds) on the sample and on ISBI crops.

The outputs must lie exactly on the input's grid: same shape, affine, orientation and spacing, also for inputs
with rotated, anisotropic affines in another orientation (built from real cases).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tutorseg.data.dataset import load_dataset
from tutorseg.prediction.predictor import PredictionError, predict, resolve_inputs


def _tiny_run(dataset_dir, out_dir):
    from tutorseg.fingerprinting import fingerprint
    from tutorseg.planning import plan
    from tutorseg.training import train_fold

    the_plan = plan(fingerprint(dataset_dir, num_workers=1, progress=False), preset="cpu")
    train_fold(dataset_dir, the_plan, fold=0, out_dir=out_dir, budget="4s", progress=False, validate=False,
               verbose=False)
    return out_dir


@pytest.fixture(scope="module")
def hippo_run(sample_dir, tmp_path_factory):
    return _tiny_run(sample_dir, tmp_path_factory.mktemp("hippo") / "fold_0")


@pytest.fixture(scope="module")
def isbi_crops(isbi_dir, tmp_path_factory):
    """Six real ISBI slices cropped to 96x128 (nnU-Net v2 layout, PNG), and one test image."""
    root = tmp_path_factory.mktemp("isbi") / "Dataset103_ISBIcrops"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)
    for index in range(7):
        case_id = f"isbi2012_{index:03d}"
        image = np.asarray(Image.open(isbi_dir / "imagesTr" / f"{case_id}_0000.png"))[:96, :128]
        label = np.asarray(Image.open(isbi_dir / "labelsTr" / f"{case_id}.png"))[:96, :128]
        if index < 6:
            Image.fromarray(image).save(root / "imagesTr" / f"{case_id}_0000.png")
            Image.fromarray(label).save(root / "labelsTr" / f"{case_id}.png")
        else:
            Image.fromarray(image).save(root / "imagesTs" / f"{case_id}_0000.png")
    meta = json.loads((isbi_dir / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": 6}))
    return root


def _odd_geometry_case(sample_dir, folder):
    """A real test image given a rotated, anisotropic affine and another orientation (axes flipped and swapped)."""
    source = nib.load(str(sample_dir / "imagesTs" / sorted(p.name for p in (sample_dir / "imagesTs").iterdir()
                                                          if p.name.endswith(".nii.gz"))[0]))
    data = np.asanyarray(source.dataobj).astype(np.float32)
    data = np.flip(np.transpose(data, (1, 0, 2)), axis=2).copy()  # another voxel order on disk
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1.2, 0.9, 2.5])  # flipped x, anisotropic
    affine[:3, 3] = [40.0, -12.5, 7.0]
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=2)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "oddcase_0000.nii.gz"
    nib.save(image, str(path))
    return path


def test_nifti_prediction_keeps_shape_affine_and_orientation(hippo_run, sample_dir, tmp_path):
    path = _odd_geometry_case(sample_dir, tmp_path / "inputs")
    written = predict(hippo_run, path, tmp_path / "out", tta=False, progress=False, save_probabilities=True).files
    assert [p.name for p in written] == ["oddcase.nii.gz"]
    source, result = nib.load(str(path)), nib.load(str(written[0]))
    assert result.shape == source.shape
    assert np.allclose(result.affine, source.affine)
    assert nib.aff2axcodes(result.affine) == nib.aff2axcodes(source.affine)
    assert np.allclose(result.header.get_zooms(), source.header.get_zooms())
    assert (int(result.header["sform_code"]), int(result.header["qform_code"])) == (2, 1)
    values = np.unique(np.asanyarray(result.dataobj))
    assert set(values) <= {0, 1, 2}
    saved = np.load(tmp_path / "out" / "oddcase.npz")
    assert saved["probabilities"].shape == (3, *source.shape)
    assert np.allclose(saved["probabilities"].astype(np.float32).sum(0), 1, atol=1e-2)
    assert list(saved["classes"]) == ["background", "Anterior", "Posterior"]
    # without probabilities the label map is restored one class at a time (less memory): the same segmentation
    alone = predict(hippo_run, path, tmp_path / "labels_only", tta=False, progress=False).files[0]
    assert np.array_equal(np.asanyarray(nib.load(str(alone)).dataobj), np.asanyarray(result.dataobj))


def test_dataset_test_images_and_folder_inputs(hippo_run, sample_dir, tmp_path):
    dataset = load_dataset(sample_dir)
    result = predict([hippo_run], sample_dir, tmp_path / "test", tta=False, progress=False)
    written = result.files
    assert [p.name.replace(".nii.gz", "") for p in written] == [c.case_id for c in dataset.test]
    assert result.run_dirs == (Path(hippo_run),) and result.configuration == "3d_fullres" and result.tta is False
    assert result.device == "cpu" and result.seconds_per_case > 0 and result.out_dir == tmp_path / "test"
    assert f"{len(written)} case(s)" in repr(result) and "TTA off" in repr(result)
    assert "<table>" in result._repr_html_()
    for case, out in zip(dataset.test, written):
        assert nib.load(str(out)).shape == case.geometry().shape
    # a folder of nnU-Net style CASE_0000 files
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(dataset.test[0].image_files[0], folder / f"{dataset.test[0].case_id}_0000.nii.gz")
    assert [c.case_id for c in resolve_inputs(folder)] == [dataset.test[0].case_id]
    assert predict(hippo_run, folder, tmp_path / "out2", tta=False, progress=False).files[0].is_file()


def test_clear_errors(hippo_run, sample_dir, tmp_path):
    empty = tmp_path / "not_trained"
    empty.mkdir()
    with pytest.raises(PredictionError, match="holds no checkpoint"):
        predict(empty, sample_dir, tmp_path / "out", progress=False)
    with pytest.raises(PredictionError, match="does not exist"):
        predict(hippo_run, tmp_path / "missing.nii.gz", tmp_path / "out", progress=False)
    source = nib.load(str(load_dataset(sample_dir).test[0].image_files[0]))
    data = np.asanyarray(source.dataobj).astype(np.float32)
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), source.affine), str(tmp_path / "two_0000.nii.gz"))
    with pytest.raises(PredictionError, match="2 channel"):
        predict(hippo_run, tmp_path / "two_0000.nii.gz", tmp_path / "out", progress=False)


def test_png_prediction_matches_input(isbi_crops, tmp_path):
    run = _tiny_run(isbi_crops, tmp_path / "isbi_run")
    written = predict(run, isbi_crops, tmp_path / "out", progress=False).files
    assert [p.name for p in written] == ["isbi2012_006.png"]
    result = np.asarray(Image.open(written[0]))
    assert result.shape == (96, 128) and result.dtype == np.uint8
    assert set(np.unique(result)) <= {0, 1}


def test_cli_predict_then_evaluate(hippo_run, sample_dir, tmp_path, capsys):
    from tutorseg.cli import main

    dataset = load_dataset(sample_dir)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    case = dataset.training[0]
    shutil.copy(case.image_files[0], inputs / f"{case.case_id}_0000.nii.gz")
    assert main(["predict", str(hippo_run), "-i", str(inputs), "-o", str(tmp_path / "pred"), "--no-tta", "-q",
                 "--checkpoint", "latest"]) == 0
    assert "1 segmentation(s) written" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "pred"), str(sample_dir), "-o", str(tmp_path / "summary.json")]) == 0
    assert (tmp_path / "summary.csv").is_file() and "mean Dice" in capsys.readouterr().out
    assert main(["predict", str(tmp_path), "-i", str(inputs), "-o", str(tmp_path / "x"), "-q"]) == 1
    assert "holds no checkpoint" in capsys.readouterr().err


def test_postprocessing_decision_is_applied(hippo_run, sample_dir, tmp_path):
    from scipy import ndimage

    from tutorseg.prediction.postprocessing import PostprocessingDecision

    labels = {"Anterior": 1, "Posterior": 2}
    keep_one = PostprocessingDecision(((1, 2),), labels, {}, {}, (), 0)
    case = load_dataset(sample_dir).test[0]
    run = tmp_path / "run_copy"
    shutil.copytree(hippo_run, run)
    keep_one.save(run / "postprocessing.json")  # found in the run folder, as predict does by default
    for postprocess, folder in ((True, "with"), (False, "without")):
        written = predict(run, [case], tmp_path / folder, tta=False, progress=False, postprocess=postprocess).files
        foreground = np.isin(np.asanyarray(nib.load(str(written[0])).dataobj), (1, 2))
        if postprocess:
            assert ndimage.label(foreground, structure=np.ones((3, 3, 3)))[1] <= 1  # nnU-Net's full connectivity
    cleaned = np.asanyarray(nib.load(str(tmp_path / "with" / written[0].name)).dataobj)
    raw = np.asanyarray(nib.load(str(written[0])).dataobj)
    assert np.array_equal(cleaned, keep_one.apply(raw))


def test_prediction_uses_the_gpu_when_there_is_one(hippo_run, monkeypatch):
    """Before, predict loaded every fold to the CPU. Faked GPU: torch.cuda.is_available is patched, and the
    model loader records the device it is asked for (then loads to the CPU, the only device here)."""
    import torch

    import tutorseg.training
    from tutorseg.prediction.predictor import load_folds, prediction_device
    from tutorseg.training.runs.model_io import load_model

    asked = []

    def recording_load_model(run_dir, *, checkpoint, device):
        asked.append(device)
        return load_model(run_dir, checkpoint=checkpoint, device="cpu")

    assert prediction_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tutorseg.training, "load_model", recording_load_model)
    assert prediction_device() == "cuda" and prediction_device("cpu") == "cpu"
    load_folds([hippo_run])
    assert asked == ["cuda"]


def test_asking_for_a_gpu_that_is_not_there_is_one_clear_line(hippo_run, tmp_path, capsys):
    from tutorseg.cli import main

    code = main(["predict", str(hippo_run), "-i", str(tmp_path), "-o", str(tmp_path / "out"), "--device", "cuda"])
    assert code == 1  # the CLI's status for a user's error (as every other command's)
    err = capsys.readouterr().err
    assert "torch sees no CUDA GPU" in err and "Traceback" not in err


def test_out_of_memory_in_prediction_names_the_case_and_the_way_out(hippo_run, sample_dir, tmp_path, monkeypatch):
    # faked: CUDA's out-of-memory error raised where a case is predicted
    import torch

    from tutorseg.prediction import predictor

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")

    monkeypatch.setattr(predictor, "predict_case_segmentation", out_of_memory)
    case = load_dataset(sample_dir).test[0]
    with pytest.raises(PredictionError, match=f"case {case.case_id}.*ran out of memory.*--no-tta.*--device cpu") \
            as caught:
        predict(hippo_run, [case], tmp_path / "out", progress=False)
    assert caught.value.__context__ is None


def test_a_volume_too_large_for_the_memory_is_refused_before_predicting(hippo_run, sample_dir, tmp_path,
                                                                         monkeypatch):
    # faked: the machine reports 1 MB available; the case is a real one of the sample
    from tutorseg.data import jobs

    monkeypatch.setattr(jobs, "available_memory_bytes", lambda: 10**6)
    case = load_dataset(sample_dir).test[0]
    with pytest.raises(PredictionError, match=rf"case {case.case_id} .*3 classes\) needs about .* GB .*available"):
        predict(hippo_run, [case], tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_end_of_training_validation_and_predict_give_the_same_label_maps(hippo_run, sample_dir, tmp_path):
    """One code path (#14): the fold's validation writes what predict writes for the same raw images."""
    from tutorseg.preprocessing.preprocessor import PreprocessedDataset
    from tutorseg.training import load_model
    from tutorseg.training.validation import validate_cases

    network, plan, configuration, _ = load_model(hippo_run)
    dataset = load_dataset(sample_dir)
    cases = PreprocessedDataset.open(hippo_run / "preprocessed" / configuration).load_cases(in_memory=False)[:2]
    validate_cases(network, cases, dataset, plan, plan[configuration], tmp_path / "validation", device="cpu",
                   tta=False)
    predicted = predict(hippo_run, [dataset.case(c.case_id) for c in cases], tmp_path / "predicted", tta=False,
                        progress=False, postprocess=False)
    for case, written in zip(cases, predicted.files):
        validated = nib.load(str(tmp_path / "validation" / f"{case.case_id}.nii.gz"))
        assert np.array_equal(np.asanyarray(validated.dataobj), np.asanyarray(nib.load(str(written)).dataobj))
