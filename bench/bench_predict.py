"""Seconds per Hippocampus case on CPU, with and without mirroring TTA: tutorseg.predict vs nnUNetv2_predict.

Both predict the same test images with the same plan (tutorseg's plan for the data, handed to nnU-Net through
``tutorseg.integrations.export.nnunet_plans``) and a network of the same architecture. Weights are freshly initialised:
the time does not depend on their values, and no trained nnU-Net checkpoint is needed. nnU-Net gets a real
``checkpoint_final.pth`` in a real results folder and runs as the command ``nnUNetv2_predict -i ... -o ... -d ... -c
3d_fullres -f 0 -device cpu``: its own entry point parses the arguments, so its defaults hold (3 preprocessing and 3
export workers), and a second run gives it 1 + 1 workers, which can suit 2 cores better. Two things differ from typing
the command, neither touching what it computes: its trainer class is imported directly instead of searched for (the
search imports a trainer module that needs a torchvision build which does not import with CPU torch here, see
``shared/reference/README.md``), and ``predict_from_files`` is timed so that the start-up (imports, reading the
checkpoint) is listed apart. Per case = that call's time / cases for nnU-Net, and ``tutorseg.predict``'s time / cases
for tutorseg (in this process, no start-up).

Usage (nnU-Net v2 installed in a separate venv):

    python bench/bench_predict.py --nnunet-python /work/bench-venv/bin/python --cases 40 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

NNUNET_CHECKPOINT = textwrap.dedent(r"""
    import json, sys, torch
    from pathlib import Path
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    results = Path(sys.argv[1])
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
""")

# nnUNetv2_predict itself (its entry point, parsing the same arguments), with two changes that do not touch what it
# computes: the trainer class is imported directly (the search imports every trainer module, one of which needs a
# torchvision build that does not load with CPU torch here), and predict_from_files is timed, so that the start-up
# (imports, reading the checkpoint) can be listed apart from the time per case.
NNUNET_PREDICT = textwrap.dedent(r"""
    import functools, json, sys, time
    import nnunetv2.inference.predict_from_raw_data as pfr
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    pfr.recursive_find_trainer_class_by_name = lambda name: nnUNetTrainer
    predict_from_files = pfr.nnUNetPredictor.predict_from_files
    seconds = {}
    @functools.wraps(predict_from_files)  # it reads its own signature
    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        predict_from_files(self, *args, **kwargs)
        seconds["predict_from_files"] = time.perf_counter() - start
    pfr.nnUNetPredictor.predict_from_files = timed
    sys.argv = ["nnUNetv2_predict", *sys.argv[1:]]
    pfr.predict_entry_point()
    print("RESULT " + json.dumps(seconds))
""")


def prepare_inputs(dataset_dir: Path, n_cases: int, folder: Path) -> None:
    """Copy the first test images as nnU-Net input files ``CASE_0000.nii.gz``."""
    from tutorseg import load_dataset

    folder.mkdir(parents=True)
    for case in load_dataset(dataset_dir).test[:n_cases]:
        shutil.copy(case.image_files[0], folder / f"{case.case_id}_0000.nii.gz")


def time_tutorseg(fold, images: Path, out: Path, tta: bool) -> dict:
    """``tutorseg.predict`` on every image of the folder: seconds per case."""
    from tutorseg.prediction.predictor import predict

    n_cases = len(list(images.glob("*_0000.nii.gz")))
    start = time.perf_counter()
    predict([], images, out, tta=tta, progress=False, postprocess=False, folds=[fold])
    return {"per_case_s": (time.perf_counter() - start) / n_cases}


def nnunet_results_folder(python: str, the_plan, dataset, work: Path) -> dict:
    """An nnU-Net results folder with the plan, dataset.json and a fresh fold-0 checkpoint; returns the environment."""
    from tutorseg.integrations.export import nnunet_dataset_json, nnunet_plans

    results = work / "nnUNet_results" / "Dataset004_Hippocampus" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    results.mkdir(parents=True)
    (results / "plans.json").write_text(json.dumps(nnunet_plans(the_plan, "Dataset004_Hippocampus")))
    (results / "dataset.json").write_text(json.dumps(nnunet_dataset_json(dataset)))
    env = {"nnUNet_raw": str(work), "nnUNet_preprocessed": str(work), "nnUNet_results": str(work / "nnUNet_results"),
           "PATH": "/usr/bin:/bin"}
    subprocess.run([python, "-c", NNUNET_CHECKPOINT, str(results)], env=env, check=True)
    return env


def time_nnunet(python: str, env: dict, images: Path, out: Path, tta: bool, workers: int) -> dict:
    """``nnUNetv2_predict -i IMAGES -o OUT -d Dataset004_Hippocampus -c 3d_fullres -f 0 -device cpu``.

    ``workers`` is passed as ``-npp`` and ``-nps`` (the command's default is 3 each). Returns the seconds per case
    (predict_from_files / cases) and the start-up (the rest of the command's wall time).
    """
    n_cases = len(list(images.glob("*_0000.nii.gz")))
    command = [python, "-c", NNUNET_PREDICT, "-i", str(images), "-o", str(out), "-d", "Dataset004_Hippocampus",
               "-c", "3d_fullres", "-f", "0", "-device", "cpu", "-npp", str(workers), "-nps", str(workers),
               "--disable_progress_bar"] + ([] if tta else ["--disable_tta"])
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    whole = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"nnU-Net run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    predicting = json.loads(lines[-1][len("RESULT "):])["predict_from_files"]
    return {"per_case_s": predicting / n_cases, "startup_s": whole - predicting}


def _seconds(values: list[float]) -> str:
    """Median of the repeats, with their range when there are several."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
                        / "Task04_Hippocampus")
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2,
                        help="interleaved rounds (tutorseg, then each nnU-Net setting); the table gives medians")
    parser.add_argument("--nnunet-python", default="/work/bench-venv/bin/python")
    parser.add_argument("--nnunet-workers", type=int, nargs="+", default=[3, 1],
                        help="nnUNetv2_predict's -npp/-nps, one run each (3 is the command's default)")
    parser.add_argument("--out", type=Path, default=None, help="append the results as Markdown here")
    args = parser.parse_args()

    import torch

    from tutorseg import load_dataset
    from tutorseg.fingerprinting import fingerprint
    from tutorseg.planning import plan
    from tutorseg.prediction.predictor import FoldModel
    from tutorseg.training.model.network import build_network

    dataset = load_dataset(args.dataset)
    the_plan = plan(fingerprint(dataset, progress=False))  # nnU-Net's default planner settings (8 GB)
    config = the_plan["3d_fullres"]
    tools = ["tutorseg"] + [f"nnunet-{workers}" for workers in args.nnunet_workers]
    seconds = {(tool, tta): [] for tool in tools for tta in (False, True)}
    startup = {(tool, tta): [] for tool in tools for tta in (False, True)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = work / "images"
        prepare_inputs(args.dataset, args.cases, images)
        network = build_network(config, len(the_plan.channel_names), len(the_plan.labels), deep_supervision=False)
        fold = FoldModel(work, network.eval(), the_plan, "3d_fullres")
        env = nnunet_results_folder(args.nnunet_python, the_plan, dataset, work)
        for repeat in range(args.repeats):
            for tta in (False, True):
                out = work / f"out_{repeat}_{tta}"
                seconds["tutorseg", tta].append(time_tutorseg(fold, images, out / "tutorseg", tta)["per_case_s"])
                for workers in args.nnunet_workers:
                    result = time_nnunet(args.nnunet_python, env, images, out / f"nnunet_{workers}", tta, workers)
                    seconds[f"nnunet-{workers}", tta].append(result["per_case_s"])
                    startup[f"nnunet-{workers}", tta].append(result["startup_s"])
                print(f"round {repeat + 1}, TTA {tta}: " + ", ".join(
                    f"{tool} {seconds[tool, tta][-1]:.2f} s/case" for tool in tools), flush=True)

    header = ["mirroring TTA", "tutorseg s/case"]
    for workers in args.nnunet_workers:
        header += [f"nnUNetv2_predict -npp {workers} -nps {workers}: s/case", "ratio", "its start-up s"]
    rows = []
    for tta in (False, True):
        ours = statistics.median(seconds["tutorseg", tta])
        row = ["on" if tta else "off", _seconds(seconds["tutorseg", tta])]
        for workers in args.nnunet_workers:
            theirs = seconds[f"nnunet-{workers}", tta]
            row += [_seconds(theirs), f"**{ours / statistics.median(theirs):.2f}**",
                    f"{statistics.median(startup[f'nnunet-{workers}', tta]):.1f}"]
        rows.append("| " + " | ".join(row) + " |")
    report = "\n".join([
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows, "",
        f"{args.cases} Hippocampus test cases, {args.repeats} interleaved round(s), median (range); ratio = tutorseg's "
        f"median / nnU-Net's median. 3d_fullres, patch {list(config.patch_size)}, features "
        f"{list(config.features_per_stage)}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, python {sys.version.split()[0]}."])
    print(report)
    if args.out:
        args.out.write_text(args.out.read_text() + "\n" + report + "\n" if args.out.exists() else report + "\n")


if __name__ == "__main__":
    main()
