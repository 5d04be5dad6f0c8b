"""Seconds per Hippocampus case on CPU, with and without mirroring TTA: tutorseg.predict vs nnU-Net v2's predictor.

Both predict the same test images with the same plan (tutorseg's plan for the data, handed to nnU-Net through
``tutorseg.export.nnunet_plans``) and a network of the same architecture. Weights are freshly initialised: the
time does not depend on their values, and no trained nnU-Net checkpoint is needed. nnU-Net gets a real
``checkpoint_final.pth`` in a real results folder and runs its own ``nnUNetPredictor.predict_from_files``, the
function ``nnUNetv2_predict`` calls; its trainer class is imported directly instead of searched for, because the
search imports a trainer module that needs a torchvision build which does not import with CPU torch here (see
``shared/reference/README.md``).

Usage (nnU-Net v2 installed in a separate venv):

    python bench/bench_predict.py --nnunet-python /work/bench-venv/bin/python --cases 8 --out bench/predict.md
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

NNUNET_SCRIPT = textwrap.dedent(r"""
    import json, sys, time, torch
    from pathlib import Path
    results, images, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    import nnunetv2.inference.predict_from_raw_data as pfr
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    pfr.recursive_find_trainer_class_by_name = lambda name: nnUNetTrainer  # avoid importing every trainer module
    plans = json.loads((results / "plans.json").read_text())
    dataset_json = json.loads((results / "dataset.json").read_text())
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    network = nnUNetTrainer.build_network_architecture(
        manager, config, determine_num_input_channels(manager, config, dataset_json),
        manager.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    (results / "fold_0").mkdir(exist_ok=True)
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres"}, "inference_allowed_mirroring_axes": (0, 1, 2)},
               results / "fold_0" / "checkpoint_final.pth")
    cases = sorted(p for p in images.iterdir() if p.name.endswith("_0000.nii.gz"))
    timings = {}
    for tta in (False, True):
        start = time.perf_counter()
        predictor = pfr.nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                                        device=torch.device("cpu"), verbose=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(results), use_folds=(0,))
        startup = time.perf_counter() - start
        start = time.perf_counter()
        predictor.predict_from_files([[str(c)] for c in cases], str(out / f"tta_{tta}"), save_probabilities=False,
                                     overwrite=True, num_processes_preprocessing=1,
                                     num_processes_segmentation_export=1)
        timings[str(tta)] = {"per_case_s": (time.perf_counter() - start) / len(cases), "startup_s": startup}
    print("RESULT " + json.dumps(timings))
""")


def prepare_inputs(dataset_dir: Path, n_cases: int, folder: Path) -> list[Path]:
    """Copy the first test images as nnU-Net input files ``CASE_0000.nii.gz``."""
    from tutorseg import load_dataset

    folder.mkdir(parents=True)
    files = []
    for case in load_dataset(dataset_dir).test[:n_cases]:
        target = folder / f"{case.case_id}_0000.nii.gz"
        shutil.copy(case.image_files[0], target)
        files.append(target)
    return files


def time_tutorseg(the_plan, images: Path, out: Path) -> dict:
    from tutorseg.prediction import FoldModel, predict
    from tutorseg.training.network import build_network

    config = the_plan["3d_fullres"]
    network = build_network(config, len(the_plan.channel_names), len(the_plan.labels), deep_supervision=False).eval()
    fold = FoldModel(out, network, the_plan, "3d_fullres")
    n_cases = len(list(images.glob("*_0000.nii.gz")))
    timings = {}
    for tta in (False, True):
        start = time.perf_counter()
        predict([], images, out / f"tta_{tta}", tta=tta, progress=False, postprocess=False, folds=[fold])
        timings[str(tta)] = {"per_case_s": (time.perf_counter() - start) / n_cases}
    return timings


def time_nnunet(python: str, the_plan, dataset, work: Path, images: Path) -> dict:
    from tutorseg.export import nnunet_dataset_json, nnunet_plans

    results = work / "nnUNet_results" / "Dataset004_Hippocampus" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    results.mkdir(parents=True)
    (results / "plans.json").write_text(json.dumps(nnunet_plans(the_plan, "Dataset004_Hippocampus")))
    (results / "dataset.json").write_text(json.dumps(nnunet_dataset_json(dataset)))
    env = {"nnUNet_raw": str(work), "nnUNet_preprocessed": str(work), "nnUNet_results": str(work),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([python, "-c", NNUNET_SCRIPT, str(results), str(images), str(work / "nnunet_out")],
                          capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"nnU-Net run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
                        / "Task04_Hippocampus")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--nnunet-python", default="/work/bench-venv/bin/python")
    parser.add_argument("--out", type=Path, default=None, help="write the results as Markdown here")
    args = parser.parse_args()

    import torch
    from tutorseg import load_dataset
    from tutorseg.fingerprinting import fingerprint
    from tutorseg.planning import plan

    dataset = load_dataset(args.dataset)
    the_plan = plan(fingerprint(dataset, progress=False))  # nnU-Net's default planner settings (8 GB)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare_inputs(args.dataset, args.cases, work / "images")
        ours = time_tutorseg(the_plan, work / "images", work / "tutorseg_out")
        theirs = time_nnunet(args.nnunet_python, the_plan, dataset, work, work / "images")
    config = the_plan["3d_fullres"]
    rows = [f"| {'on' if tta == 'True' else 'off'} | {ours[tta]['per_case_s']:.2f} | {theirs[tta]['per_case_s']:.2f} "
            f"| {ours[tta]['per_case_s'] / theirs[tta]['per_case_s']:.2f} | {theirs[tta]['startup_s']:.1f} |"
            for tta in ("False", "True")]
    report = "\n".join([
        "| mirroring TTA | tutorseg s/case | nnU-Net v2 s/case | ratio | nnU-Net start-up s (not in s/case) |",
        "|---|---|---|---|---|", *rows, "",
        f"{args.cases} Hippocampus test cases, 3d_fullres, patch {list(config.patch_size)}, features "
        f"{list(config.features_per_stage)}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, python {sys.version.split()[0]}."])
    print(report)
    if args.out:
        args.out.write_text(args.out.read_text() + "\n" + report + "\n" if args.out.exists() else report + "\n")


if __name__ == "__main__":
    main()
