"""Regenerate tests/data/nnunet_models: tiny models trained by nnU-Net 2.8.1's own code, and its predictions.

tutorseg never depends on nnU-Net; this script, run once by a maintainer, does. It drives nnU-Net's command-line tools
as a user would, from a virtual environment that has them:

    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.13.0 && /work/bench-venv/bin/pip install nnunetv2==2.8.1
    python scripts/make_nnunet_model_fixtures.py --nnunet-bin /work/bench-venv/bin

For each kind of model it:

1. exports the bundled sample (20 training cases of Task04_Hippocampus) to nnU-Net's raw layout with
   ``tutorseg export-nnunet`` (for ``regions``: with dataset.json's labels made region-based, nnU-Net's format:
   ``"hippocampus": [1, 2], "posterior": 2``, ``"regions_class_order": [1, 2]``);
2. plans and preprocesses it with nnU-Net (``nnUNetv2_plan_and_preprocess``; ResEnc: ``-pl nnUNetPlannerResEncM``);
3. makes the plan tiny so that the checkpoint is small (features capped at 4, 8, 16, 16, ...; one residual block per
   ResEnc stage; batch 2 in 3D, 12 in 2D): an edit of plans.json as nnU-Net's documentation describes for custom
   configurations;
4. trains fold 0 for 5 epochs of 250 steps with ``nnUNetTrainer_5epochs`` on the CPU (a trainer variant that keeps
   the default network: tutorseg must accept it), enough for the tiny networks to segment some hippocampus (after
   one epoch they predicted background everywhere, which would make equal label maps prove little);
5. predicts the sample's first two held-out images (imagesTs) with ``nnUNetv2_predict``, with mirroring and without
   (``--disable_tta``), and a third image made of those two side by side (``hippocampus_wide``, 73 voxels along its
   first axis: three overlapping windows of a 40-voxel patch), whose class probabilities are kept too
   (``--save_probabilities``): where windows overlap, the stitching (window positions, Gaussian weights) decides
   them.

``find_best`` (after ``2d`` and ``3d_fullres``): nnU-Net's own choice between those two models and their ensemble.
It validates each again with ``--val --npz`` (the probabilities ensembling needs), runs
``nnUNetv2_find_best_configuration 991 -c 2d 3d_fullres -f 0``, and follows the instructions it prints
(``nnUNetv2_predict`` per selected model, ``nnUNetv2_ensemble`` for an ensemble, ``nnUNetv2_apply_postprocessing``)
on the two held-out images. It keeps ``inference_information.json``, the winner's ``postprocessing.json`` and
``summary.json`` (never the pickle), and the final label maps in ``predictions/``, at the paths nnU-Net wrote them
relative to the dataset's results folder; the test puts the ``2d`` and ``3d_fullres`` models beside them.

``cascade``: nnU-Net's two-stage cascade. nnU-Net plans one only for images much larger than the patch, so a copy
of the sample (dataset 994) gets the two configurations by hand, as nnU-Net's documentation describes custom
configurations: ``3d_lowres`` at 2 mm (patch 24 x 32 x 24) and ``3d_cascade_fullres`` after it. All five
``3d_lowres`` folds are trained (their validations are the cascade's out-of-fold inputs), then fold 0 of the second
stage; the held-out images are predicted by ``3d_lowres`` and then by the cascade with those predictions
(``-prev_stage_predictions``). Kept: both results folders with fold 0's checkpoint, and the final label maps.

``isbi_2d`` does the same with the shared ISBI 2012 slices (2D PNG images, ``../shared/data``; it has no held-out
images, so its first two training slices are predicted).

What it keeps, per kind, in ``tests/data/nnunet_models/<kind>/``: the results folder as nnU-Net wrote it
(``plans.json``, ``dataset.json``, ``dataset_fingerprint.json``, ``fold_0/checkpoint_final.pth``), and the label maps
nnU-Net predicted (``predictions/`` and ``predictions_no_mirroring/``), and for the Hippocampus kinds the wide case's
probabilities as ``WIDE.npz`` in each (``probabilities`` in tutorseg's axis order, quantised to 0-255 to keep the
fixture small: 0.002 apart at most). ``tests/test_nnunet_models.py`` imports each model and checks tutorseg's
predictions against these.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "nnunet_models"
SAMPLE = REPO / "tutorseg" / "data" / "sample_data" / "Task04_Hippocampus_sample"
ISBI = REPO.parent / "shared" / "data" / "ISBI2012_EM_membrane"  # 2D PNG images: nnU-Net's NaturalImage2DIO
SOURCES = {991: SAMPLE, 992: SAMPLE, 993: ISBI, 994: SAMPLE}
# kind -> (dataset id, configuration, planner, plans name)
KINDS = {
    "isbi_2d": (993, "2d", "ExperimentPlanner", "nnUNetPlans"),
    "3d_fullres": (991, "3d_fullres", "ExperimentPlanner", "nnUNetPlans"),
    "2d": (991, "2d", "ExperimentPlanner", "nnUNetPlans"),
    "resenc_3d_fullres": (991, "3d_fullres", "nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans"),
    "regions_3d_fullres": (992, "3d_fullres", "ExperimentPlanner", "nnUNetPlans"),
}
FIND_BEST = "find_best"  # nnU-Net's choice among the 2d and 3d_fullres models (their ensemble included)
CASCADE = "cascade"  # 3d_lowres, then 3d_cascade_fullres, on a copy of the sample (dataset 994)
TRAINER = "nnUNetTrainer_5epochs"
N_PREDICTED = 2
WIDE = "hippocampus_wide"  # two held-out images side by side: larger than the patch, so windows overlap


def sh(command: list[str], env: dict) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, env=env, check=True)


def export(dataset_id: int, raw: Path, env: dict, *, regions: bool) -> Path:
    folder = next(raw.glob(f"Dataset{dataset_id}_*"), None)
    if folder is None:
        sh(["tutorseg", "export-nnunet", str(SOURCES[dataset_id]), "-o", str(raw), "--dataset-id", str(dataset_id)],
           env)
        folder = next(raw.glob(f"Dataset{dataset_id}_*"))
        if regions:
            dataset_json = json.loads((folder / "dataset.json").read_text())
            dataset_json["labels"] = {"background": 0, "hippocampus": [1, 2], "posterior": 2}
            dataset_json["regions_class_order"] = [1, 2]
            (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def make_tiny(plans_file: Path) -> None:
    """Cap the features at 4, 8, 16, 16...; one block per ResEnc stage; small batches (the topology's other fields kept)."""
    plans = json.loads(plans_file.read_text())
    for configuration in plans["configurations"].values():
        if "architecture" not in configuration:
            continue
        arch = configuration["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [min(4 * 2 ** i, 16) for i in range(arch["n_stages"])]
        if "n_blocks_per_stage" in arch:
            arch["n_blocks_per_stage"] = [1] * arch["n_stages"]
        patch = configuration["patch_size"]
        # 2D: 12 small slices as nnU-Net would take; ISBI's 512 x 512 patches: 2, or a CPU trains for hours
        configuration["batch_size"] = 12 if len(patch) == 2 and patch[0] * patch[1] <= 256 * 256 else 2
    plans_file.write_text(json.dumps(plans, indent=2))


def write_wide_image(images: Path) -> None:
    """``WIDE_0000.nii.gz``: the first two images of ``images`` side by side along the first array axis.

    Cropped to their common size along the other axes; the first image's header (its 1 mm spacing) is kept.
    """
    import nibabel as nib
    import numpy as np

    first, second = (nib.load(p) for p in sorted(images.glob("*_0000.nii.gz"))[:2])
    a, b = (np.asarray(image.dataobj, dtype=np.float32) for image in (first, second))
    common = tuple(min(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))
    crop = (slice(None), *(slice(0, n) for n in common))
    nib.save(nib.Nifti1Image(np.concatenate([a[crop], b[crop]], axis=0), first.affine), images / f"{WIDE}_0000.nii.gz")


def keep_probabilities(npz: Path, target: Path) -> None:
    """nnU-Net's probabilities of one case (K, z, y, x), in tutorseg's axis order (K, x, y, z), quantised to uint8."""
    import numpy as np

    probabilities = np.load(npz)["probabilities"].astype(np.float32).transpose(0, 3, 2, 1)
    np.savez_compressed(target, probabilities=np.round(probabilities * 255).astype(np.uint8))


def find_best(work: Path, results: Path, env: dict) -> None:
    """nnU-Net's find-best on the 2d and 3d_fullres models of dataset 991, and its instructions carried out."""
    dataset = next(results.glob("Dataset991_*"))
    for configuration in ("2d", "3d_fullres"):
        sh(["nnUNetv2_train", "991", configuration, "0", "-tr", TRAINER, "-p", "nnUNetPlans", "--val", "--npz",
            "-device", "cpu"], env)
    sh(["nnUNetv2_find_best_configuration", "991", "-c", "2d", "3d_fullres", "-tr", TRAINER, "-p", "nnUNetPlans",
        "-f", "0", "-np", "1"], env)
    information = json.loads((dataset / "inference_information.json").read_text())
    best = information["best_model_or_ensemble"]
    images, out = work / "images_991", work / "find_best_predictions"
    shutil.rmtree(out, ignore_errors=True)
    selected = best["selected_model_or_models"]
    parts = []
    for i, model in enumerate(selected):
        part = out / f"model_{i + 1}"
        sh(["nnUNetv2_predict", "-i", str(images), "-o", str(part), "-d", "991", "-c", model["configuration"],
            "-f", *[str(f) for f in information["folds"]], "-tr", model["trainer"], "-p", model["plans_identifier"],
            "-device", "cpu", "-npp", "1", "-nps", "1", *(["--save_probabilities"] if len(selected) > 1 else [])],
           env)
        parts.append(part)
    merged = parts[0]
    if len(selected) > 1:
        merged = out / "ensemble"
        sh(["nnUNetv2_ensemble", "-i", *[str(p) for p in parts], "-o", str(merged), "-np", "1"], env)
    final = out / "postprocessed"
    sh(["nnUNetv2_apply_postprocessing", "-i", str(merged), "-o", str(final), "-pp_pkl_file",
        best["postprocessing_file"], "-np", "1", "-plans_json", best["some_plans_file"]], env)
    target = OUT / FIND_BEST
    shutil.rmtree(target, ignore_errors=True)
    (target / "predictions").mkdir(parents=True)
    shutil.copy(dataset / "inference_information.json", target / "inference_information.json")
    source = Path(best["postprocessing_file"]).parent  # crossval_results_folds_0 of a model, or ensembles/<name>
    kept = target / source.relative_to(dataset)
    kept.mkdir(parents=True)
    for name in ("postprocessing.json", "summary.json"):
        shutil.copy(source / name, kept / name)
    for label_map in sorted(final.glob("*.nii.gz")):
        shutil.copy(label_map, target / "predictions" / label_map.name)


def add_cascade(plans_file: Path) -> None:
    """A 3d_lowres stage at 2 mm and the cascade's second stage, written into nnU-Net's plans by hand."""
    plans = json.loads(plans_file.read_text())
    configurations = plans["configurations"]
    configurations["3d_lowres"] = {"inherits_from": "3d_fullres", "data_identifier": "nnUNetPlans_3d_lowres",
                                   "spacing": [2.0, 2.0, 2.0], "patch_size": [24, 32, 24],
                                   "median_image_size_in_voxels": [18.0, 25.0, 18.0],
                                   "next_stage": "3d_cascade_fullres"}
    configurations["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    plans_file.write_text(json.dumps(plans, indent=2))


def cascade(work: Path, raw: Path, preprocessed: Path, results: Path, env: dict) -> None:
    """nnU-Net's cascade on dataset 994: five 3d_lowres folds, fold 0 of the second stage, both predicting."""
    folder = export(994, raw, env, regions=False)
    plans_file = preprocessed / folder.name / "nnUNetPlans.json"
    if not plans_file.is_file():
        sh(["nnUNetv2_plan_and_preprocess", "-d", "994", "-c", "3d_fullres", "-np", "2"], env)
    make_tiny(plans_file)
    add_cascade(plans_file)
    sh(["nnUNetv2_preprocess", "-d", "994", "-c", "3d_lowres", "-np", "2"], env)
    dataset = results / folder.name
    for configuration, folds in (("3d_lowres", range(5)), ("3d_cascade_fullres", [0])):
        for fold in folds:
            model = dataset / f"{TRAINER}__nnUNetPlans__{configuration}"
            if not (model / f"fold_{fold}" / "checkpoint_final.pth").is_file():
                sh(["nnUNetv2_train", "994", configuration, str(fold), "-tr", TRAINER, "-device", "cpu"], env)
    images = work / "images_994"
    if not images.is_dir():
        images.mkdir(parents=True)
        for image in sorted((folder / "imagesTs").glob("*_0000.*"))[:N_PREDICTED]:
            shutil.copy(image, images / image.name)
    lowres, final = work / "cascade_lowres_predictions", work / "cascade_predictions"
    for out, configuration, extra in ((lowres, "3d_lowres", []),
                                      (final, "3d_cascade_fullres", ["-prev_stage_predictions", str(lowres)])):
        shutil.rmtree(out, ignore_errors=True)
        sh(["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", "994", "-c", configuration, "-f", "0",
            "-tr", TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1", *extra], env)
    target = OUT / CASCADE
    shutil.rmtree(target, ignore_errors=True)
    for configuration in ("3d_lowres", "3d_cascade_fullres"):
        model = dataset / f"{TRAINER}__nnUNetPlans__{configuration}"
        kept = target / model.name
        (kept / "fold_0").mkdir(parents=True)
        for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            shutil.copy(model / name, kept / name)
        shutil.copy(model / "fold_0" / "checkpoint_final.pth", kept / "fold_0" / "checkpoint_final.pth")
    (target / "predictions").mkdir()
    for label_map in sorted(final.glob("*.nii.gz")):
        shutil.copy(label_map, target / "predictions" / label_map.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nnunet-bin", type=Path, required=True, help="the bin folder of a venv with nnunetv2 2.8.1")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nnunet_model_fixtures"))
    parser.add_argument("--kinds", nargs="+", default=[*KINDS, FIND_BEST, CASCADE],
                        choices=[*KINDS, FIND_BEST, CASCADE])
    args = parser.parse_args()
    raw, preprocessed, results = (args.work / name for name in ("raw", "preprocessed", "results"))
    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(preprocessed),
           "nnUNet_results": str(results), "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "2"}
    env["PATH"] = f"{os.environ['PATH']}:{args.nnunet_bin}"
    for kind in args.kinds:
        if kind == FIND_BEST:
            find_best(args.work, results, env)
            continue
        if kind == CASCADE:
            cascade(args.work, raw, preprocessed, results, env)
            continue
        dataset_id, configuration, planner, plans_name = KINDS[kind]
        folder = export(dataset_id, raw, env, regions=kind.startswith("regions"))
        plans_file = preprocessed / folder.name / f"{plans_name}.json"
        if not plans_file.is_file():
            sh(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-pl", planner, "-c", "2d", "3d_fullres",
                "-np", "2", "--verify_dataset_integrity"], env)
        make_tiny(plans_file)  # the same result when made again
        model = results / folder.name / f"{TRAINER}__{plans_name}__{configuration}"
        if not (model / "fold_0" / "checkpoint_final.pth").is_file():
            sh(["nnUNetv2_train", str(dataset_id), configuration, "0", "-tr", TRAINER, "-p", plans_name,
                "-device", "cpu"], env)
        images = args.work / f"images_{dataset_id}"
        if not images.is_dir():
            images.mkdir(parents=True)
            held_out = folder / "imagesTs" if (folder / "imagesTs").is_dir() else folder / "imagesTr"  # ISBI: none
            for image in sorted(held_out.glob("*_0000.*"))[:N_PREDICTED]:
                shutil.copy(image, images / image.name)
        if dataset_id != 993 and not (images / f"{WIDE}_0000.nii.gz").is_file():
            write_wide_image(images)
        target = OUT / kind
        shutil.rmtree(target, ignore_errors=True)
        (target / "fold_0").mkdir(parents=True)
        for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            shutil.copy(model / name, target / name)
        shutil.copy(model / "fold_0" / "checkpoint_final.pth", target / "fold_0" / "checkpoint_final.pth")
        for predictions, flags in (("predictions", []), ("predictions_no_mirroring", ["--disable_tta"])):
            out = args.work / f"{kind}_{predictions}"
            sh(["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(dataset_id), "-c", configuration,
                "-f", "0", "-tr", TRAINER, "-p", plans_name, "-device", "cpu", "-npp", "1", "-nps", "1",
                "--save_probabilities", *flags], env)
            (target / predictions).mkdir()
            for label_map in sorted([*out.glob("*.nii.gz"), *out.glob("*.png")]):
                shutil.copy(label_map, target / predictions / label_map.name)
            if (out / f"{WIDE}.npz").is_file():
                keep_probabilities(out / f"{WIDE}.npz", target / predictions / f"{WIDE}.npz")
    print("written:", OUT)


if __name__ == "__main__":
    main()
