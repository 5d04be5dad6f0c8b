"""Training benchmarks on Task04_Hippocampus (208 cases): see bench/train.md for the results and the machine.

    python bench/bench_train.py throughput --preset nnunet-default --iterations 6   # it/s and data-wait share
    python bench/bench_train.py throughput --preset cpu --iterations 20
    python bench/bench_train.py nnunet --iterations 6      # nnU-Net v2's own trainer, run in /work/bench-venv
    python bench/bench_train.py budget --budget 10m        # cpu preset, fold 0, full-case validation Dice

Each prints one JSON line; ``--out`` keeps the runs (default /tmp/tutorseg_bench_train).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
BENCH_VENV_PYTHON = Path("/work/bench-venv/bin/python")


def _plan(preset: str, out: Path, settings: dict | None = None):
    import tutorseg

    tag = "" if not settings else "_" + "_".join(f"{k}{v}" for k, v in sorted(settings.items()))
    path = out / f"plan_{preset}{tag}.json"
    if path.is_file():
        return tutorseg.Plan.load(path)
    plan = tutorseg.plan(tutorseg.fingerprint(HIPPOCAMPUS, progress=False), preset=preset, settings=settings)
    plan.save(path)
    return plan


def throughput(preset: str, iterations: int, out: Path, threads: int | None = None) -> dict:
    """Training iterations per second and the share of the step spent getting the batch (sample + augment).

    Two epochs of ``iterations`` steps; the second is reported, so the first steps' one-off costs (memory being
    allocated, oneDNN choosing kernels) are left out, as the nnU-Net measurement below leaves out its first step.
    """
    from tutorseg import train_fold

    plan = _plan(preset, out)
    run_dir = out / f"throughput_{preset}_{int(time.time())}"
    record = train_fold(HIPPOCAMPUS, plan, fold=0, out_dir=run_dir, epochs=2, iterations_per_epoch=iterations,
                        val_iterations=1, preprocessed_dir=out / f"preprocessed_{preset}", validate=False,
                        num_threads=threads, progress=False, verbose=False)
    h = record.history
    config = plan["3d_fullres"]
    seconds, steps = h["train_seconds"][-1], h["iterations"][-1]
    return {"what": "tutorseg throughput", "preset": preset, "patch": list(config.patch_size),
            "batch": config.batch_size, "iterations": steps, "device": record.device,
            "threads": threads or "from the load", "seconds": round(seconds, 2),
            "iterations_per_second": round(steps / seconds, 4), "seconds_per_iteration": round(seconds / steps, 3),
            "data_share": round(h["data_seconds"][-1] / seconds, 4)}


NNUNET_SCRIPT = r"""
import json, os, sys, time, torch
# nnU-Net's own trainer class, imported directly (nnUNetv2_train imports every trainer, one of which needs a
# torchvision that does not import with CPU torch; see ../shared/reference/README.md)
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from batchgenerators.utilities.file_and_folder_operations import load_json
iterations = int(sys.argv[1])
pre = os.environ["nnUNet_preprocessed"]
plans = load_json(os.path.join(pre, "Dataset004_Hippocampus", "nnUNetPlans.json"))
plans["continue_training"] = False  # nnU-Net 2.8's run_training passes this through the plans dict
dataset_json = load_json(os.path.join(pre, "Dataset004_Hippocampus", "dataset.json"))
trainer = nnUNetTrainer(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
trainer.num_iterations_per_epoch = iterations
trainer.num_val_iterations_per_epoch = 1
trainer.num_epochs = 1
trainer.on_train_start()
trainer.on_epoch_start(); trainer.on_train_epoch_start()
times = []
for _ in range(iterations):
    t0 = time.perf_counter()
    batch = next(trainer.dataloader_train)
    t1 = time.perf_counter()
    trainer.train_step(batch)
    times.append((t1 - t0, time.perf_counter() - t0))
trainer.on_train_end() if False else None
steady = times[1:] if len(times) > 1 else times
total = sum(t for _, t in steady); data = sum(d for d, _ in steady)
print(json.dumps({"what": "nnU-Net v2 throughput", "iterations": len(steady), "seconds": round(total, 2),
                  "iterations_per_second": round(len(steady) / total, 4),
                  "seconds_per_iteration": round(total / len(steady), 3), "data_share": round(data / total, 4),
                  "batch": trainer.configuration_manager.batch_size,
                  "patch": trainer.configuration_manager.patch_size}), flush=True)
import multiprocessing
for worker in multiprocessing.active_children():  # nnU-Net's augmentation workers would outlive os._exit
    worker.terminate()
os._exit(0)
"""


def nnunet(iterations: int, out: Path) -> dict:
    """nnU-Net v2's trainer on its own default 3d_fullres plan (preprocessed by nnU-Net), in /work/bench-venv."""
    import os

    env = dict(os.environ, nnUNet_raw=str(out / "nnunet_raw"), nnUNet_preprocessed=str(out / "nnunet_preprocessed"),
               nnUNet_results=str(out / "nnunet_results"), nnUNet_n_proc_DA="2")
    raw = out / "nnunet_raw" / "Dataset004_Hippocampus"
    if not (out / "nnunet_preprocessed" / "Dataset004_Hippocampus" / "nnUNetPlans_3d_fullres").is_dir():
        _nnunet_raw(raw)
        bin_dir = BENCH_VENV_PYTHON.parent
        subprocess.run([bin_dir / "nnUNetv2_plan_and_preprocess", "-d", "4", "-c", "3d_fullres", "-np", "2"],
                       env=env, check=True, capture_output=True)
    log = out / "nnunet_throughput.log"
    with open(log, "w") as f:  # a file, not a pipe: a stray worker holding a pipe would block the read
        subprocess.run([BENCH_VENV_PYTHON, "-c", NNUNET_SCRIPT, str(iterations)], env=env, check=True, stdout=f,
                       stderr=subprocess.STDOUT)
    return json.loads(log.read_text().strip().splitlines()[-1])


def _nnunet_raw(raw: Path) -> None:
    """Task04_Hippocampus in nnU-Net v2's layout (links, images renamed CASE_0000.nii.gz)."""
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(exist_ok=True)
    for label in sorted((HIPPOCAMPUS / "labelsTr").glob("hippocampus_*.nii.gz")):
        case = label.name[: -len(".nii.gz")]
        for src, dst in ((HIPPOCAMPUS / "imagesTr" / label.name, raw / "imagesTr" / f"{case}_0000.nii.gz"),
                         (label, raw / "labelsTr" / label.name)):
            if not dst.exists():
                dst.symlink_to(src)
    n = len(list((raw / "labelsTr").iterdir()))
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {
        "background": 0, "Anterior": 1, "Posterior": 2}, "numTraining": n, "file_ending": ".nii.gz"}))


def budget(budget_text: str, out: Path, settings: dict | None = None, threads: int | None = None) -> dict:
    """cpu preset, fold 0, wall-clock budget, then the fold's full-case validation (42 cases, mirroring TTA).

    ``settings``: planner overrides on top of the cpu preset (to try a cheaper network).
    """
    from tutorseg import train_fold

    plan = _plan("cpu", out, settings)
    run_dir = out / f"budget_{budget_text}_{int(time.time())}"
    clock = time.perf_counter()
    record = train_fold(HIPPOCAMPUS, plan, fold=0, out_dir=run_dir, budget=budget_text, schedule="cpu-10min",
                        preprocessed_dir=out / "preprocessed_cpu", num_threads=threads, progress=False)
    c = plan["3d_fullres"]
    return {"what": "tutorseg budget run", "budget": budget_text, "run_dir": str(run_dir), "preset": "cpu",
            "settings": settings or {}, "threads": threads or "from the load", "patch": list(c.patch_size), "batch": c.batch_size,
            "features": list(c.features_per_stage),
            "epochs": record.epochs, "iterations": record.iterations,
            "training_seconds": round(record.elapsed_seconds, 1),
            "total_seconds_with_validation": round(time.perf_counter() - clock, 1),
            "best_ema_pseudo_dice": record.best_ema_pseudo_dice,
            "validation_mean_dice": record.validation["mean_dice"],
            "validation_mean_foreground_dice": record.mean_foreground_dice}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("throughput", "nnunet", "budget"))
    parser.add_argument("--preset", default="nnunet-default")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for tutorseg (default: from the load)")
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorseg_bench_train"))
    parser.add_argument("--settings", type=json.loads, default=None,
                        help='planner overrides for budget, e.g. \'{"max_batch_size": 2, "base_num_features": 8}\'')
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "throughput":
        result = throughput(args.preset, args.iterations, args.out, args.threads)
    elif args.what == "nnunet":
        result = nnunet(args.iterations, args.out)
    else:
        result = budget(args.budget, args.out, args.settings, args.threads)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
