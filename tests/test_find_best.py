"""find_best_configuration on five real (tiny) folds of 2d and 3d_fullres, checked against a hand computation.

The runs train on the bundled sample (25 real Hippocampus cases) with a shrunken network for two steps each: the
scores are low, but every number the choice rests on comes from real training, real validation files and real
probabilities, and is recomputed here from those files without tutorseg's scoring code.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from training_helpers import tiny_plan

import tutorseg
from tutorseg.cli import main
from tutorseg.data.problems import TutorsegError
from tutorseg.prediction.instructions import InferenceInstructions, predict_best
from tutorseg.training.budget.smoke import smoke_plan

CONFIGURATIONS = ("2d", "3d_fullres")


@pytest.fixture(scope="module")
def run_root(tmp_path_factory, sample_dir):
    """RUN_ROOT/2d/fold_0..4 and RUN_ROOT/3d_fullres/fold_0..4, validated with probabilities (--npz)."""
    root = tmp_path_factory.mktemp("find_best") / "runs"
    plan = smoke_plan(tiny_plan(sample_dir, "3d_fullres"), "2d")
    for configuration in CONFIGURATIONS:
        for fold in range(5):
            tutorseg.train_fold(sample_dir, plan, fold=fold, configuration=configuration,
                                out_dir=root / configuration / f"fold_{fold}", epochs=1, iterations_per_epoch=2,
                                val_iterations=1, preprocessed_dir=root.parent / f"preprocessed_{configuration}",
                                validation_tta=False, save_probabilities=True, num_threads=1, progress=False,
                                verbose=False)
    return root


def _dice(prediction: np.ndarray, reference: np.ndarray, value: int) -> float:
    p, r = prediction == value, reference == value
    total = p.sum() + r.sum()
    return math.nan if total == 0 else 2 * float((p & r).sum()) / float(total)


def _by_hand(root: Path, sample_dir: Path) -> dict[str, dict[str, float]]:
    """Each candidate's Dice per class and mean, from the fold summaries and the .npz files only."""
    classes = {"Anterior": 1, "Posterior": 2}
    scores = {}
    for configuration in CONFIGURATIONS:
        cases = [case for fold in range(5) for case in json.loads(
            (root / configuration / f"fold_{fold}" / "validation" / "summary.json").read_text())["per_case"]]
        assert len(cases) == 25  # every case validated once
        per_class = {n: np.nanmean([np.nan if c["dice"][n] is None else c["dice"][n] for c in cases])
                     for n in classes}
        scores[configuration] = {**per_class, "mean": np.mean(list(per_class.values()))}
    per_case = {n: [] for n in classes}
    for npz_2d in sorted(root.glob("2d/fold_*/validation/*.npz")):
        npz_3d = next(root.glob(f"3d_fullres/fold_*/validation/{npz_2d.name}"))
        mean = (np.load(npz_2d)["probabilities"].astype(np.float32)
                + np.load(npz_3d)["probabilities"].astype(np.float32)) / 2
        reference = np.asarray(nib.load(sample_dir / "labelsTr" / f"{npz_2d.stem}.nii.gz").dataobj)
        for name, value in classes.items():
            per_case[name].append(_dice(np.argmax(mean, axis=0), reference, value))
    per_class = {n: np.nanmean(v) for n, v in per_case.items()}
    scores["ensemble 2d + 3d_fullres"] = {**per_class, "mean": np.mean(list(per_class.values()))}
    return scores


def _per_fold_by_hand(root: Path, configuration: str) -> dict[int, dict[str, float]]:
    """One configuration's mean Dice per class over the cases each fold validated, from the fold summaries only."""
    scores = {}
    for fold in range(5):
        cases = json.loads((root / configuration / f"fold_{fold}" / "validation" / "summary.json").read_text())
        scores[fold] = {n: np.nanmean([np.nan if c["dice"][n] is None else c["dice"][n] for c in cases["per_case"]])
                        for n in ("Anterior", "Posterior")}
    return scores


def test_the_choice_is_the_hand_computed_best(run_root, sample_dir, capsys):
    result = tutorseg.find_best_configuration(run_root, output=run_root / "best.json")
    expected = _by_hand(run_root, sample_dir)
    assert [c.name for c in result.candidates] == ["2d", "3d_fullres", "ensemble 2d + 3d_fullres"]
    for candidate in result.candidates:
        assert candidate.n_cases == 25
        assert candidate.mean_dice == pytest.approx(expected[candidate.name]["mean"], abs=1e-12)
        for name in ("Anterior", "Posterior"):
            assert candidate.dice_per_class[name] == pytest.approx(expected[candidate.name][name], abs=1e-12)
    best = max(expected, key=lambda name: expected[name]["mean"])
    assert result.best.name == best
    # each candidate is scored per fold too: the mean over the cases each fold validated, from its summary alone
    for candidate in result.candidates:
        assert sorted(candidate.dice_per_fold) == [0, 1, 2, 3, 4]
        if len(candidate.configurations) == 1:
            per_fold = _per_fold_by_hand(run_root, candidate.name)
            for fold, per_class in candidate.dice_per_fold.items():
                for name, value in per_class.items():
                    assert value == pytest.approx(per_fold[fold][name], abs=1e-12, nan_ok=True)
    shown = capsys.readouterr().out
    assert "<- best" in shown and result.why() in shown and "tutorseg predict --best" in shown
    # the instructions and the learner's text next to them
    instructions = InferenceInstructions.load(run_root / "best.json")
    assert instructions.name == best and instructions.folds == (0, 1, 2, 3, 4)
    text = (run_root / "best.txt").read_text()
    assert "why: " in text and "tutorseg predict --best" in text
    listed = json.loads((run_root / "best_candidates.json").read_text())
    assert listed["best"] == best and len(listed["candidates"]) == 3


def test_predict_best_follows_the_instructions_single_and_ensemble(run_root, sample_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for image in sorted((sample_dir / "imagesTs").iterdir())[:2]:
        shutil.copy(image, inputs / image.name)
    runs = {c: [run_root / c / f"fold_{k}" for k in range(5)] for c in CONFIGURATIONS}

    single = InferenceInstructions(("3d_fullres",), {"3d_fullres": tuple(runs["3d_fullres"])}, None, 0.0, {},
                                   (0, 1, 2, 3, 4))
    single.save(tmp_path / "single.json")
    assert main(["predict", "--best", str(tmp_path / "single.json"), "-i", str(inputs), "-o",
                 str(tmp_path / "single"), "--no-tta", "-q"]) == 0
    direct = tutorseg.predict(runs["3d_fullres"], inputs, tmp_path / "direct", tta=False, postprocess=False,
                              save_probabilities=True, progress=False)
    alone_2d = tutorseg.predict(runs["2d"], inputs, tmp_path / "direct_2d", tta=False, postprocess=False,
                                save_probabilities=True, progress=False)
    for file in direct.files:
        assert np.array_equal(nib.load(tmp_path / "single" / file.name).get_fdata(), nib.load(file).get_fdata())

    ensemble = InferenceInstructions(CONFIGURATIONS, {c: tuple(runs[c]) for c in CONFIGURATIONS}, None, 0.0, {},
                                     (0, 1, 2, 3, 4))
    written = predict_best(ensemble, inputs, tmp_path / "ensemble", tta=False, progress=False)
    assert len(written.files) == 2 and not list((tmp_path / "ensemble").glob(".ensemble_*"))  # parts removed
    for file, file_2d in zip(direct.files, alone_2d.files):
        stem = file.name[: -len(".nii.gz")]
        mean = (np.load(file.parent / f"{stem}.npz")["probabilities"].astype(np.float32)
                + np.load(file_2d.parent / f"{stem}.npz")["probabilities"].astype(np.float32)) / 2
        ensembled = nib.load(tmp_path / "ensemble" / file.name)
        assert np.array_equal(np.asarray(ensembled.dataobj), np.argmax(mean, axis=0))
        assert np.allclose(ensembled.affine, nib.load(file).affine)


def test_incomplete_configurations_are_left_out_with_the_reason(run_root, tmp_path):
    partial = tmp_path / "runs"
    shutil.copytree(run_root / "3d_fullres", partial / "3d_fullres")
    for fold in range(3):  # 2d: only folds 0-2
        shutil.copytree(run_root / "2d" / f"fold_{fold}", partial / "2d" / f"fold_{fold}")
    result = tutorseg.find_best_configuration(partial, verbose=False)
    assert result.best.name == "3d_fullres" and [c.name for c in result.candidates] == ["3d_fullres"]
    assert "fold(s) 3, 4 not trained" in result.left_out["2d"]
    with pytest.raises(TutorsegError, match="configuration 2d: fold.s. 3, 4 not trained"):
        tutorseg.find_best_configuration(partial, configurations=["2d", "3d_fullres"], verbose=False)
    # folds 0-2 only: both compared
    assert len(tutorseg.find_best_configuration(partial, folds=[0, 1, 2], verbose=False).candidates) == 3


def test_ensembles_need_the_validation_probabilities(run_root, tmp_path):
    copied = tmp_path / "runs"
    shutil.copytree(run_root / "2d", copied / "2d", ignore=shutil.ignore_patterns("*.npz", "preprocessed"))
    shutil.copytree(run_root / "3d_fullres", copied / "3d_fullres", ignore=shutil.ignore_patterns("preprocessed"))
    assert main(["find-best", str(copied), "-o", str(tmp_path / "best.json")]) == 0
    listed = json.loads((tmp_path / "best_candidates.json").read_text())
    assert [c["name"] for c in listed["candidates"]] == ["2d", "3d_fullres"]
    assert "train with --npz" in listed["left_out"]["ensemble 2d + 3d_fullres"]


def test_find_best_says_what_to_train_when_there_is_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TutorsegError, match="--fold 0 1 2 3 4"):
        tutorseg.find_best_configuration(tmp_path / "empty", verbose=False)
    assert main(["find-best", str(tmp_path / "empty")]) == 1


def test_several_folds_pass_the_new_training_options_to_each_fold(tmp_path):
    """``tutorseg train --fold 0 1 2 3 4`` runs one process per fold: --npz, --previous-stage, --init-from, --lr and
    --warmup must reach each of them (paths made absolute: the fold processes may start elsewhere)."""
    from tutorseg.cli import _train_arguments, build_parser
    from tutorseg.training.folds import fold_command

    args = build_parser().parse_args(
        ["train", "DATASET", "--plan", "plan.json", "--configuration", "3d_cascade_fullres", "--fold", "0", "1",
         "-o", "runs", "--budget", "5m", "--npz", "--previous-stage", "lowres", "--init-from", "pre",
         "--lr", "0.001", "--warmup", "0.1"])
    passed = _train_arguments(args)
    assert passed[passed.index("--previous-stage") + 1] == str((Path.cwd() / "lowres").resolve())
    assert passed[passed.index("--init-from") + 1] == str((Path.cwd() / "pre").resolve())
    assert {"--npz", "--lr", "0.001", "--warmup", "0.1", "--budget", "5m"} <= set(passed)
    command = fold_command(tmp_path, tmp_path / "plan.json", 1, tmp_path / "fold_1", "cpu",
                           preprocessed_dir=tmp_path / "pre", resume=False, train_arguments=passed)
    assert build_parser().parse_args(command[3:]).npz  # what the fold's own process parses
