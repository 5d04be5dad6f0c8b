"""nnU-Net's trained models in tutorseg and tutorseg's in nnU-Net (``tutorseg import-nnunet``, ``export-model --format
nnunet``): plans, weights, checkpoints read safely, and the same predictions.

The models in ``tests/data/nnunet_models`` were trained by nnU-Net 2.8.1's own trainer, and their predictions made by
its own ``nnUNetv2_predict``, on the bundled sample (``scripts/make_nnunet_model_fixtures.py`` says how); nnU-Net is
not needed to run these tests.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from training_helpers import tiny_plan

import tutorseg
from tutorseg.cli import main
from tutorseg.data.problems import TutorsegError
from tutorseg.integrations.model_files import export_model
from tutorseg.integrations.nnunet_models import (
    NnUNetModelError,
    export_nnunet_model,
    import_nnunet_model,
    plan_from_nnunet,
    read_nnunet_checkpoint,
    weights_from_nnunet,
    weights_to_nnunet,
)
from tutorseg.training.model.network import build_network

MODELS = Path(__file__).parent / "data" / "nnunet_models"
KINDS = sorted(p.parent.name for p in MODELS.glob("*/plans.json"))  # one model per folder; find_best/ is not one
AGREEMENT = 0.999  # issue #33: label agreement on at least 99.9 % of the voxels of every case
WIDE = "hippocampus_wide"  # two held-out images side by side: three overlapping windows (the fixture script)
# where windows overlap: nnU-Net sums the weighted logits in float16, tutorseg in float32, and the fixture keeps
# nnU-Net's probabilities quantised to 1/255; measured on the four fixtures: at most 0.003 apart (MONAI's tiling and
# Gaussian, which tutorseg used before, put them 0.5-0.99 apart on the same case)
PROBABILITY_TOLERANCE = 0.01


ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "ISBI2012_EM_membrane"


def _label_map(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        from PIL import Image

        return np.asarray(Image.open(path))
    return np.asarray(nib.load(path).dataobj)


def _inputs(kind: str, sample_dir: Path, cases: list[str], folder: Path) -> Path:
    """The images nnU-Net predicted, named as nnU-Net names them (``CASE_0000``)."""
    folder.mkdir()
    for case in cases:
        if case == WIDE:
            _write_wide_image(sample_dir, folder / f"{case}_0000.nii.gz")
        elif kind.startswith("isbi"):
            if not ISBI.is_dir():
                pytest.skip(f"needs {ISBI} (the shared data beside the repository; present in CI)")
            shutil.copy(ISBI / "imagesTr" / f"{case}_0000.png", folder / f"{case}_0000.png")
        else:
            shutil.copy(sample_dir / "imagesTs" / f"{case}.nii.gz", folder / f"{case}_0000.nii.gz")
    return folder


def _write_wide_image(sample_dir: Path, target: Path) -> None:
    """The fixture script's wide case: the first two held-out images side by side along the first array axis."""
    first, second = (nib.load(p) for p in sorted((sample_dir / "imagesTs").glob("*.nii.gz"))[:2])
    a, b = (np.asarray(image.dataobj, dtype=np.float32) for image in (first, second))
    crop = (slice(None), *(slice(0, min(x, y)) for x, y in zip(a.shape[1:], b.shape[1:])))
    nib.save(nib.Nifti1Image(np.concatenate([a[crop], b[crop]], axis=0), first.affine), target)


def _random_network(configuration, plan):
    torch.manual_seed(0)
    network = build_network(configuration, len(plan.channel_names), plan.n_outputs)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0, 0.1)  # every weight distinct, so that a wrong pairing or axis order shows
    return network


@pytest.mark.parametrize("network", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_weights_go_to_nnunets_names_and_axes_and_back(sample_dir, network):
    plan = tiny_plan(sample_dir)
    configuration = plan[plan.default_configuration]
    if network == "ResidualEncoderUNet":
        configuration = replace(configuration, network=network, n_conv_per_stage=(),
                                n_blocks_per_stage=(1,) * configuration.n_stages,
                                n_conv_per_stage_decoder=(1,) * (configuration.n_stages - 1))
    ours = _random_network(configuration, plan)
    theirs = weights_to_nnunet(ours, plan, configuration)
    back = weights_from_nnunet(build_network(configuration, 1, plan.n_outputs), plan, configuration, theirs,
                               source="round trip")
    assert back.keys() == dict(ours.named_parameters()).keys()
    assert all(torch.equal(back[name], p) for name, p in ours.named_parameters())
    # nnU-Net's axes are the reverse of tutorseg's for NIfTI: a kernel's last axis is tutorseg's first
    first = "encoder.stages.0.0.convs.0.conv.weight" if network == "PlainConvUNet" else "encoder.stem.convs.0.conv.weight"
    kernel = next(p for name, p in ours.named_parameters() if "conv" in name and p.dim() == 5)
    assert torch.equal(theirs[first], kernel.permute(0, 1, 4, 3, 2))
    with pytest.raises(NnUNetModelError, match="not those of the"):
        weights_from_nnunet(ours, plan, configuration, {**theirs, "decoder.extra.weight": torch.zeros(1)},
                            source="a checkpoint with one weight too many")


def test_a_checkpoint_with_pickled_code_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "the_code_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    crafted = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "trainer_name": "nnUNetTrainer", "init_args": Payload()}, crafted)
    with pytest.raises(NnUNetModelError, match="did not load it"):
        read_nnunet_checkpoint(crafted)
    assert not marker.exists()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(NnUNetModelError, match="not an nnU-Net v2 checkpoint"):
        read_nnunet_checkpoint(tmp_path / "other.pth")
    (tmp_path / "cut.pth").write_bytes(crafted.read_bytes()[:200])
    with pytest.raises(NnUNetModelError, match="damaged"):
        read_nnunet_checkpoint(tmp_path / "cut.pth")
    with open(tmp_path / "plain.pkl", "wb") as f:  # a plain pickle (another protocol): refused as well, not run
        pickle.dump({"network_weights": {}, "init_args": Payload()}, f)
    with pytest.raises(NnUNetModelError, match="not loaded"):
        read_nnunet_checkpoint(tmp_path / "plain.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_nnunet_trained_model_predicts_what_nnunet_predicted(kind, sample_dir, tmp_path):
    model = MODELS / kind
    imported = import_nnunet_model(model, tmp_path / "model")
    assert imported.description["trainer"] == "nnUNetTrainer_5epochs"  # a variant that keeps the default network
    predicted = sorted(p for p in (model / "predictions").iterdir() if p.name.endswith((".nii.gz", ".png")))
    cases = [p.name.split(".")[0] for p in predicted]
    assert len(cases) == (2 if kind.startswith("isbi") else 3)
    images = _inputs(kind, sample_dir, cases, tmp_path / "images")
    for folder, tta in (("predictions", True), ("predictions_no_mirroring", False)):
        out = tmp_path / folder
        tutorseg.predict(list(imported.run_dirs), images, out, tta=tta, progress=False, save_probabilities=True)
        for case, reference in zip(cases, predicted):
            theirs = _label_map(model / folder / reference.name)
            assert len(np.unique(theirs)) > 1, "a fixture that predicts one label everywhere proves little"
            ours = _label_map(out / reference.name)
            assert ours.shape == theirs.shape
            agreement = float((ours == theirs).mean())
            assert agreement >= AGREEMENT, f"{kind} {case} tta={tta}: {agreement:.5f}"
        if WIDE in cases:  # windows overlap: the stitching decides every probability there
            theirs = np.load(model / folder / f"{WIDE}.npz")["probabilities"].astype(np.float32) / 255
            ours = np.load(out / f"{WIDE}.npz")["probabilities"].astype(np.float32)
            assert ours.shape == theirs.shape
            difference = float(np.abs(ours - theirs).max())
            assert difference <= PROBABILITY_TOLERANCE, f"{kind} tta={tta}: probabilities {difference:.3f} apart"


@pytest.mark.parametrize("kind", KINDS)
def test_exported_weights_have_nnunets_names_and_shapes(kind, tmp_path):
    model = MODELS / kind
    imported = import_nnunet_model(model, tmp_path / "model")
    out = export_nnunet_model(imported.run_dirs, tmp_path / "nnUNet_results", dataset_id=991,
                              zip_file=tmp_path / "model.zip")
    theirs = read_nnunet_checkpoint(model / "fold_0" / "checkpoint_final.pth")["network_weights"]
    ours = read_nnunet_checkpoint(out / "fold_0" / "checkpoint_final.pth")
    assert {k: tuple(v.shape) for k, v in ours["network_weights"].items()} == \
        {k: tuple(v.shape) for k, v in theirs.items()}
    assert ours["trainer_name"] == "nnUNetTrainer" and ours["init_args"]["configuration"] == imported.description[
        "configuration"]
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        assert (out / name).is_file()
    plans = json.loads((out / "plans.json").read_text())
    nnunet_plans = json.loads((model / "plans.json").read_text())
    configuration = imported.description["configuration"]
    for field in ("patch_size", "spacing", "batch_size"):
        assert plans["configurations"][configuration][field] == \
            nnunet_plans["configurations"][configuration][field], field
    assert plans["configurations"][configuration]["architecture"]["arch_kwargs"]["features_per_stage"] == \
        nnunet_plans["configurations"][configuration]["architecture"]["arch_kwargs"]["features_per_stage"]
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:  # laid out as nnUNetv2_export_model_to_zip's
        assert f"{out.parent.name}/{out.name}/fold_0/checkpoint_final.pth" in archive.namelist()
    # and back: the same weights, so the same network
    again = import_nnunet_model(out, tmp_path / "again")
    first = torch.load(imported.run_dirs[0] / "checkpoint_final.pt", weights_only=True)["network"]
    second = torch.load(again.run_dirs[0] / "checkpoint_final.pt", weights_only=True)["network"]
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_folds_of_different_networks_are_not_exported_as_one_model(tmp_path):
    """Folds form one model only with one plan: a default and a ResEnc 3d_fullres are refused, in both formats,
    while a fold whose plan differs only in its reasons (a budget plan's measured times) is taken."""
    if not (MODELS / "resenc_3d_fullres").is_dir():
        pytest.skip("fixtures not made")
    default = import_nnunet_model(MODELS / "3d_fullres", tmp_path / "default").run_dirs[0]
    resenc = import_nnunet_model(MODELS / "resenc_3d_fullres", tmp_path / "resenc").run_dirs[0]
    for export in (lambda: export_model([default, resenc], tmp_path / "mixed.zip"),
                   lambda: export_nnunet_model([default, resenc], tmp_path / "nnUNet_results")):
        with pytest.raises(TutorsegError, match="another 3d_fullres plan"):
            export()
    assert not (tmp_path / "mixed.zip").exists() and not (tmp_path / "nnUNet_results").exists()

    reworded = tmp_path / "reworded" / "fold_1"  # the same network as fold 0, its plan's reasons reworded
    shutil.copytree(default, reworded)
    plan, config = json.loads((reworded / "plan.json").read_text()), json.loads((reworded / "config.json").read_text())
    plan["decisions"] = [{**d, "because": d["because"] + " (measured again)"} for d in plan["decisions"]]
    config["fold"] = 1
    (reworded / "plan.json").write_text(json.dumps(plan))
    (reworded / "config.json").write_text(json.dumps(config))
    out = export_nnunet_model([default, reworded], tmp_path / "nnUNet_results")
    assert sorted(p.name for p in out.glob("fold_*")) == ["fold_0", "fold_1"]


def test_plan_from_nnunet_reorders_axes_and_refuses_other_networks():
    model = MODELS / "3d_fullres"
    if not model.is_dir():
        pytest.skip("fixtures not made")
    plans = json.loads((model / "plans.json").read_text())
    dataset_json = json.loads((model / "dataset.json").read_text())
    plan = plan_from_nnunet(plans, dataset_json, ["3d_fullres"])
    c = plans["configurations"]["3d_fullres"]
    assert list(plan["3d_fullres"].patch_size) == c["patch_size"][::-1]  # SimpleITK (z, y, x) -> nibabel (x, y, z)
    assert plan.labels == {"background": 0, "Anterior": 1, "Posterior": 2}
    other = json.loads(json.dumps(plans))
    other["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "mednext.MedNeXt"
    with pytest.raises(NnUNetModelError, match="MedNeXt"):
        plan_from_nnunet(other, dataset_json, ["3d_fullres"])


def test_cli_import_and_export(tmp_path, capsys):
    model = MODELS / "3d_fullres"
    if not model.is_dir():
        pytest.skip("fixtures not made")
    assert main(["import-nnunet", str(model), "-o", str(tmp_path / "model")]) == 0
    assert "tutorseg predict" in capsys.readouterr().out
    assert main(["import-nnunet", str(model), "-o", str(tmp_path / "model")]) == 1  # not empty: a clear error
    run = tmp_path / "model" / "3d_fullres" / "fold_0"
    renamed = run.rename(tmp_path / "my_run")  # a run folder of any name: nnU-Net's fold_<k> comes from its config
    assert main(["export-model", str(renamed), "--format", "nnunet", "-o",
                 str(tmp_path / "results"), "--zip", str(tmp_path / "m.zip")]) == 0
    assert len(list((tmp_path / "results").glob("Dataset500_*/*/fold_0/checkpoint_final.pth"))) == 1
    assert "nnUNetv2_predict_from_modelfolder" in capsys.readouterr().out
    assert (tmp_path / "m.zip").is_file()


def test_nnunets_postprocessing_comes_along_and_unknown_steps_are_refused(tmp_path):
    """The post-processing.json written the way nnU-Net 2.8.1's determine_postprocessing writes it (its names and
    kwargs beside the pickle; remove_connected_components.py). The fixture models were not cross-validated, so
    the file is written here in that form."""
    source = MODELS / "2d"
    model = tmp_path / "nnUNetTrainer_5epochs__nnUNetPlans__2d"
    shutil.copytree(source, model)
    crossval = model / "crossval_results_folds_0"
    crossval.mkdir()
    decision = {"input_folder": {"foreground_mean": {"Dice": 0.80}}, "postprocessed": {"foreground_mean": {"Dice": 0.81}},
                "postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"] * 2,
                "postprocessing_kwargs": [{"labels_or_regions": [1, 2]}, {"labels_or_regions": 2}]}
    (crossval / "postprocessing.json").write_text(json.dumps(decision))
    imported = import_nnunet_model(model, tmp_path / "imported")
    taken = json.loads((imported.run_dirs[0] / "postprocessing.json").read_text())
    assert taken["steps"] == [[1, 2], [2]] and taken["dice_after"] == {"foreground_mean": 0.81}
    decision["postprocessing_fns"][1] = "something_else"
    (crossval / "postprocessing.json").write_text(json.dumps(decision))
    with pytest.raises(NnUNetModelError, match="something_else"):
        import_nnunet_model(model, tmp_path / "again")


# --------------------------------------------------------------------------------------------------- find-best


def _results_with_find_best(tmp_path: Path) -> Path:
    """nnUNet_results as nnU-Net left it: the 2d and 3d_fullres models, and its find-best decision beside them."""
    dataset = tmp_path / "nnUNet_results" / "Dataset991_Hippocampus"
    for kind in ("2d", "3d_fullres"):
        shutil.copytree(MODELS / kind, dataset / f"nnUNetTrainer_5epochs__nnUNetPlans__{kind}",
                        ignore=shutil.ignore_patterns("predictions*"))
    shutil.copytree(MODELS / "find_best", dataset, dirs_exist_ok=True, ignore=shutil.ignore_patterns("predictions"))
    return dataset


def test_nnunets_find_best_decision_comes_along_and_predict_best_follows_it(sample_dir, tmp_path):
    """The fixture's decision is nnU-Net 2.8.1's own (3d_fullres, with largest-component steps); its predictions
    followed the instructions nnUNetv2_find_best_configuration printed (predict, then apply_postprocessing)."""
    from tutorseg.prediction.instructions import InferenceInstructions
    from tutorseg.prediction.postprocessing import PostprocessingDecision

    results = _results_with_find_best(tmp_path).parent
    with pytest.raises(NnUNetModelError, match="choose one with configuration"):  # two models, no decision: ask
        shutil.move(str(results / "Dataset991_Hippocampus" / "inference_information.json"), tmp_path / "info.json")
        import_nnunet_model(results, tmp_path / "undecided")
    shutil.move(str(tmp_path / "info.json"), results / "Dataset991_Hippocampus" / "inference_information.json")

    imported = import_nnunet_model(results, tmp_path / "model")
    assert imported.description["chosen_by_nnunet"] == ["3d_fullres"]
    assert imported.best is not None and "predict --best" in repr(imported)
    instructions = InferenceInstructions.load(imported.best)
    assert instructions.configurations == ("3d_fullres",) and instructions.folds == (0,)
    assert round(instructions.mean_dice, 4) == 0.6235  # nnU-Net's result_on_crossval_pre_pp
    assert set(instructions.dice_per_class) == {"Anterior", "Posterior"}
    assert instructions.postprocessing is not None
    # nnU-Net's postprocessing.json: all foreground as one, then each class on its own
    assert PostprocessingDecision.load(instructions.postprocessing).steps == ((1, 2), (1,), (2,))

    reference = sorted((MODELS / "find_best" / "predictions").glob("*.nii.gz"))
    images = _inputs("3d_fullres", sample_dir, [p.name.split(".")[0] for p in reference], tmp_path / "images")
    assert main(["predict", "--best", str(imported.best), "-i", str(images), "-o", str(tmp_path / "out"), "-q"]) == 0
    for theirs in reference:
        agreement = float((_label_map(tmp_path / "out" / theirs.name) == _label_map(theirs)).mean())
        assert agreement >= AGREEMENT, f"{theirs.name}: {agreement:.5f}"


def test_an_ensemble_chosen_by_nnunet_becomes_an_ensemble_to_predict_with(sample_dir, tmp_path):
    """nnU-Net's decision file with its choice edited to the ensemble of both (the format is nnU-Net's own; on the
    fixture's data the single 3d_fullres model won), where find-best wrote no post-processing for it."""
    from tutorseg.prediction.instructions import InferenceInstructions

    dataset = _results_with_find_best(tmp_path)
    information = json.loads((dataset / "inference_information.json").read_text())
    best = information["best_model_or_ensemble"]
    best["selected_model_or_models"] = [{"configuration": c, "plans_identifier": "nnUNetPlans",
                                         "trainer": "nnUNetTrainer_5epochs"} for c in ("2d", "3d_fullres")]
    name = "ensemble___nnUNetTrainer_5epochs__nnUNetPlans__2d___nnUNetTrainer_5epochs__nnUNetPlans__3d_fullres___0"
    best["postprocessing_file"] = f"/elsewhere/nnUNet_results/{dataset.name}/ensembles/{name}/postprocessing.pkl"
    (dataset / "inference_information.json").write_text(json.dumps(information))

    imported = import_nnunet_model(dataset, tmp_path / "model")
    instructions = InferenceInstructions.load(imported.best)
    assert instructions.configurations == ("2d", "3d_fullres") and instructions.postprocessing is None
    assert [d.parent.name for d in instructions.run_dirs["2d"]] == ["2d"]
    images = _inputs("3d_fullres", sample_dir, ["hippocampus_002"], tmp_path / "images")
    assert main(["predict", "--best", str(imported.best), "-i", str(images), "-o", str(tmp_path / "out"), "-q"]) == 0
    assert (tmp_path / "out" / "hippocampus_002.nii.gz").is_file()


def test_nnunets_cascade_comes_over_with_its_first_stage(sample_dir, tmp_path):
    """nnU-Net 2.8.1's cascade (3d_lowres at 2 mm, then 3d_cascade_fullres; the fixture script says how it was
    planned and trained): imported together, tutorseg predicts the first stage and then the second with it, as
    nnUNetv2_predict with -prev_stage_predictions did."""
    cascade = MODELS / "cascade"
    imported = import_nnunet_model(cascade, tmp_path / "model")
    assert imported.description["configuration"] == "3d_cascade_fullres"
    assert (tmp_path / "model" / "3d_lowres" / "fold_0" / "checkpoint_final.pt").is_file()
    reference = sorted((cascade / "predictions").glob("*.nii.gz"))
    images = _inputs("3d_fullres", sample_dir, [p.name.split(".")[0] for p in reference], tmp_path / "images")
    tutorseg.predict(list(imported.run_dirs), images, tmp_path / "out", progress=False)
    for theirs in reference:
        assert len(np.unique(_label_map(theirs))) > 1, "a fixture that predicts one label everywhere proves little"
        agreement = float((_label_map(tmp_path / "out" / theirs.name) == _label_map(theirs)).mean())
        assert agreement >= AGREEMENT, f"{theirs.name}: {agreement:.5f}"
