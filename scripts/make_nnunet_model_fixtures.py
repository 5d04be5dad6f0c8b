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
   (``--disable_tta``).

``isbi_2d`` does the same with the shared ISBI 2012 slices (2D PNG images, ``../shared/data``; it has no held-out
images, so its first two training slices are predicted).

What it keeps, per kind, in ``tests/data/nnunet_models/<kind>/``: the results folder as nnU-Net wrote it
(``plans.json``, ``dataset.json``, ``dataset_fingerprint.json``, ``fold_0/checkpoint_final.pth``), and the label maps
nnU-Net predicted (``predictions/`` and ``predictions_no_mirroring/``). ``tests/test_nnunet_models.py`` imports each
model and checks tutorseg's predictions against these.
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
SOURCES = {991: SAMPLE, 992: SAMPLE, 993: ISBI}
# kind -> (dataset id, configuration, planner, plans name)
KINDS = {
    "isbi_2d": (993, "2d", "ExperimentPlanner", "nnUNetPlans"),
    "3d_fullres": (991, "3d_fullres", "ExperimentPlanner", "nnUNetPlans"),
    "2d": (991, "2d", "ExperimentPlanner", "nnUNetPlans"),
    "resenc_3d_fullres": (991, "3d_fullres", "nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans"),
    "regions_3d_fullres": (992, "3d_fullres", "ExperimentPlanner", "nnUNetPlans"),
}
TRAINER = "nnUNetTrainer_5epochs"
N_PREDICTED = 2


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
    """Cap the features at 4, 8, 16, 16...; one block per ResEnc stage; batch 2 (the topology's other fields kept)."""
    plans = json.loads(plans_file.read_text())
    for configuration in plans["configurations"].values():
        if "architecture" not in configuration:
            continue
        arch = configuration["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [min(4 * 2 ** i, 16) for i in range(arch["n_stages"])]
        if "n_blocks_per_stage" in arch:
            arch["n_blocks_per_stage"] = [1] * arch["n_stages"]
        configuration["batch_size"] = 2 if len(configuration["patch_size"]) == 3 else 12
    plans_file.write_text(json.dumps(plans, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nnunet-bin", type=Path, required=True, help="the bin folder of a venv with nnunetv2 2.8.1")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nnunet_model_fixtures"))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    args = parser.parse_args()
    raw, preprocessed, results = (args.work / name for name in ("raw", "preprocessed", "results"))
    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(preprocessed),
           "nnUNet_results": str(results), "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "2"}
    env["PATH"] = f"{os.environ['PATH']}:{args.nnunet_bin}"
    for kind in args.kinds:
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
        target = OUT / kind
        shutil.rmtree(target, ignore_errors=True)
        (target / "fold_0").mkdir(parents=True)
        for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            shutil.copy(model / name, target / name)
        shutil.copy(model / "fold_0" / "checkpoint_final.pth", target / "fold_0" / "checkpoint_final.pth")
        for predictions, flags in (("predictions", []), ("predictions_no_mirroring", ["--disable_tta"])):
            out = args.work / f"{kind}_{predictions}"
            sh(["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(dataset_id), "-c", configuration,
                "-f", "0", "-tr", TRAINER, "-p", plans_name, "-device", "cpu", "-npp", "1", "-nps", "1", *flags], env)
            (target / predictions).mkdir()
            for label_map in sorted([*out.glob("*.nii.gz"), *out.glob("*.png")]):
                shutil.copy(label_map, target / predictions / label_map.name)
    print("written:", OUT)


if __name__ == "__main__":
    main()
