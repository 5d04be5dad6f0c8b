"""The GPU path, measured: one script for a machine with a GPU (about 8 minutes), and a CPU dry run for the tests.

    python bench/gpu.py --out bench/results/gpu                  # on a GPU machine; writes gpu.json and gpu.md
    python bench/gpu.py --dry-run --out /tmp/gpu_dry             # anywhere: tiny sizes on the CPU, every part runs

What it records (bench/gpu.md keeps the results with the device's name):

1. ``device``: name, compute capability, memory.
2. ``steps``: training steps per second of nnU-Net's default Hippocampus plan (3d_fullres, batch and patch of the
   plan) on random tensors, for each precision the GPU has (fp16 with loss scaling; bf16 from compute capability
   8.0) and each memory layout (contiguous, channels-last), with the peak GPU memory.
3. ``training``: a real ``train_fold`` on Hippocampus fold 0 under a budget (the ``colab-t4-15min`` schedule,
   shortened to ``--budget``), with 2 CPU threads as on Colab: steps per second, the share of each step spent
   getting the batch (the GPU's idle share), the validation Dice; and one minute with the batches cut in the
   loop instead of prefetched (``training_without_prefetch``).
4. ``resume``: that run resumed on the GPU for one more epoch, then on the CPU (a Colab session whose GPU quota
   ran out), and a CPU-made run resumed on the GPU.
5. ``tta_memory``: peak GPU memory and seconds of sliding-window prediction with mirroring, for the default plan
   on a Hippocampus case and for a 128^3 patch plan on a 256^3 volume.
6. ``nnunet``: whether nnU-Net v2 is importable here (its trainer's epoch is timed by bench/bench_train.py).

Data: ``../shared/data/Task04_Hippocampus`` beside the repository, else the bundled 25-case sample.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Task04_Hippocampus"


def _device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"name": "CPU (dry run)", "type": "cpu"}
    properties = torch.cuda.get_device_properties(device)
    return {"name": properties.name, "type": "cuda", "capability": f"{properties.major}.{properties.minor}",
            "memory_gb": round(properties.total_memory / 2**30, 1), "torch": torch.__version__,
            "cuda": torch.version.cuda}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _dataset(dry_run: bool) -> Path:
    import tutorseg

    return SHARED_HIPPOCAMPUS if SHARED_HIPPOCAMPUS.is_dir() and not dry_run else tutorseg.sample_dataset_path()


def _plan(dataset: Path, dry_run: bool):
    import tutorseg
    from tutorseg.training.budget.smoke import smoke_plan

    plan = tutorseg.plan(tutorseg.fingerprint(dataset, progress=False, num_workers=1 if dry_run else None))
    return smoke_plan(plan) if dry_run else plan


def measure_steps(plan, device: torch.device, steps: int) -> list[dict]:
    """Steps per second and peak memory for each precision the device has and each memory layout."""
    from tutorseg.training.hardware.device import gpu_supports_bf16

    precisions = ["fp32"] if device.type == "cpu" else ["fp16"] + (["bf16"] if gpu_supports_bf16(str(device)) else [])
    return [_time_steps(plan, device, precision, layout, steps)
            for precision in precisions for layout in ("contiguous", "channels-last")]


def _time_steps(plan, device: torch.device, precision: str, layout: str, steps: int) -> dict:
    """Forward, deep-supervision loss, backward, clipping and SGD on random data of the plan's batch and patch.

    One function call per setting, so that one setting's network and tensors are freed before the next is measured.
    """
    from tutorseg.training.budget.schedule import GRAD_CLIP, make_optimizer
    from tutorseg.training.hardware.device import choose_device, configure_backends
    from tutorseg.training.model.loss import DeepSupervisionLoss
    from tutorseg.training.model.network import build_network

    config = plan["3d_fullres"]
    setup = choose_device(str(device), precision)
    configure_backends(setup)
    torch.manual_seed(0)
    network = build_network(config, 1, len(plan.labels)).to(device)
    if layout == "channels-last":
        network = network.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    loss_fn = DeepSupervisionLoss(network.n_outputs, batch_dice=config.batch_dice)
    optimizer, scaler = make_optimizer(network), setup.grad_scaler()
    images = torch.randn(config.batch_size, 1, *config.patch_size, device=device)
    labels = torch.randint(0, len(plan.labels), (config.batch_size, 1, *config.patch_size), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with setup.autocast():
            outputs = network(images)
        scaler.scale(loss_fn(outputs, labels)).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
        scaler.step(optimizer)
        scaler.update()

    _reset_peak(device)
    for _ in range(2):  # warm-up: cuDNN autotuning, the allocator's pools
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    return {"precision": precision, "layout": layout, "batch": config.batch_size, "patch": list(config.patch_size),
            "seconds_per_step": round(seconds, 4), "steps_per_second": round(1 / seconds, 2),
            "peak_memory_gb": _peak_gb(device)}


def measure_training(dataset: Path, plan, out: Path, device: torch.device, budget: str, dry_run: bool,
                     prefetch: bool | None = None, name: str = "run_budget") -> dict:
    """A real fold under a budget with 2 CPU threads (Colab's 2 vCPUs): speed, the data-wait share, the Dice.

    ``prefetch=None`` is training's default (batches prefetched on a GPU); ``False`` samples in the loop.
    """
    from tutorseg import train_fold

    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    extra = dict(iterations_per_epoch=2, val_iterations=1, validate=False) if dry_run else {}
    start = time.perf_counter()
    record = train_fold(dataset, plan, fold=0, out_dir=run_dir, preprocessed_dir=out / "preprocessed",
                        schedule=None if dry_run else "colab-t4-15min", budget=budget, device=str(device),
                        num_threads=2, prefetch=prefetch, progress=False, verbose=False,
                        validation_tta=not dry_run, **extra)
    history = record.history
    data = sum(history["data_seconds"])
    train = sum(history["train_seconds"])
    return {"budget": budget, "schedule": None if dry_run else "colab-t4-15min", "prefetch": prefetch,
            "epochs": record.epochs,
            "iterations": record.iterations, "steps_per_second": round(record.iterations / max(train, 1e-9), 2),
            "data_wait_share": round(data / max(train, 1e-9), 3), "validation_dice": record.mean_foreground_dice,
            "wall_seconds": round(time.perf_counter() - start, 1), "run_dir": str(run_dir)}


def _extend_by_one_epoch(run_dir: Path) -> None:
    """Make a finished run's config ask for one more (short) epoch, so that resume has something to train."""
    from tutorseg.training.runs.checkpoint import latest_checkpoints
    from tutorseg.training.runs.config import TrainingConfig

    config = TrainingConfig.load(run_dir)
    latest = torch.load(latest_checkpoints(run_dir)[0], map_location="cpu", weights_only=True)
    # a short epoch: on the CPU an epoch of the default plan's 250 steps would take half an hour
    config.replace(budget_seconds=None, budget=None, schedule=None, epochs=latest["epoch"] + 1, iterations_per_epoch=5,
                   val_iterations=2).save(run_dir / "config.json")
    (run_dir / "checkpoint_final.pt").unlink(missing_ok=True)


def measure_resume(dataset: Path, plan, out: Path, device: torch.device) -> dict:
    """Resume on the GPU, then on the CPU; and a CPU-made run on the GPU. Each must finish with one more epoch."""
    from tutorseg import resume, train_fold
    from tutorseg.training.runs.checkpoint import latest_checkpoints

    results = {}
    source = Path(out / "run_budget")
    for name, first, then in (("gpu_then_gpu", None, str(device)), ("gpu_then_cpu", None, "cpu"),
                              ("cpu_then_gpu", "cpu", str(device))):
        run_dir = out / f"resume_{name}"
        shutil.rmtree(run_dir, ignore_errors=True)
        if first is None:
            shutil.copytree(source, run_dir)
        else:
            train_fold(dataset, plan, fold=0, out_dir=run_dir, preprocessed_dir=out / "preprocessed", epochs=1,
                       iterations_per_epoch=2, val_iterations=1, device=first, validate=False, progress=False,
                       verbose=False)
        _extend_by_one_epoch(run_dir)
        before = torch.load(latest_checkpoints(run_dir)[0], map_location="cpu", weights_only=True)["epoch"]
        start = time.perf_counter()
        try:
            record = resume(run_dir, progress=False, device=then)
            outcome = {"ok": record.epochs == before + 1, "epochs": f"{before} -> {record.epochs}"}
        except Exception as exc:  # a benchmark records failures instead of stopping at the first
            outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        log = (run_dir / "log.txt").read_text(encoding="utf-8").splitlines()
        outcome.update(seconds=round(time.perf_counter() - start, 1),
                       notes=[line.split("  ", 1)[-1] for line in log if "resumed on" in line])
        results[name] = outcome
    return results


def measure_tta_memory(plan, device: torch.device, dataset: Path, dry_run: bool) -> list[dict]:
    """Peak memory and time of mirrored sliding-window prediction: the default plan on a real case, and a 128^3
    patch plan (a large CT-like configuration) on a 256^3 volume."""
    from dataclasses import replace

    import tutorseg
    from tutorseg.training.model.network import build_network
    from tutorseg.training.model.sliding_window import predict_probabilities

    config = plan["3d_fullres"]
    case = tutorseg.load_dataset(dataset).training[0]
    image = case.load_image().astype(np.float32)
    image = (image - image.mean()) / max(float(image.std()), 1e-6)
    if dry_run:
        image = image[:, :32, :32, :32]
    large_patch = (32, 32, 32) if dry_run else (128, 128, 128)
    large = replace(config, patch_size=large_patch)
    size = [p + p // 2 if dry_run else 2 * p for p in large_patch]
    volume = np.random.default_rng(0).standard_normal((1, *size)).astype(np.float32)
    results = []
    for name, configuration, data in (("default plan, Hippocampus case", config, image),
                                      (f"patch {large_patch[0]}^3 on {size[0]}^3", large, volume)):
        network = build_network(configuration, 1, len(plan.labels)).to(device).eval()
        _reset_peak(device)
        _synchronize(device)
        start = time.perf_counter()
        probabilities = predict_probabilities(network, data, patch_size=configuration.patch_size, tta=True,
                                              device=device)
        _synchronize(device)
        results.append({"case": name, "input": list(data.shape[1:]), "patch": list(configuration.patch_size),
                        "seconds": round(time.perf_counter() - start, 2), "peak_memory_gb": _peak_gb(device),
                        "output_shape": list(probabilities.shape)})
        del network
    return results


def _nnunet_available() -> dict:
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        return {"installed": False, "note": "nnunetv2 is not installed here; bench/bench_train.py nnunet times it"}
    return {"installed": True, "note": "time one epoch with: python bench/bench_train.py nnunet --iterations 250"}


def to_markdown(results: dict) -> str:
    """The results as the tables of bench/gpu.md."""
    device = results["device"]
    lines = [f"### {device['name']}" + (f" (compute capability {device['capability']}, {device['memory_gb']} GB)"
                                         if device.get("type") == "cuda" else ""), "",
             "| precision | layout | batch x patch | s / step | steps / s | peak GB |", "|---|---|---|---|---|---|"]
    for row in results["steps"]:
        lines.append(f"| {row['precision']} | {row['layout']} | {row['batch']} x {row['patch']} | "
                     f"{row['seconds_per_step']} | {row['steps_per_second']} | {row['peak_memory_gb']} |")
    lines += ["", "| budget run, 2 CPU threads | batches | steps | steps / s | waiting for data | validation Dice |",
              "|---|---|---|---|---|---|"]
    for key, how in (("training", "prefetched (default)"), ("training_without_prefetch", "cut in the loop")):
        row = results[key]
        lines.append(f"| {row['budget']} | {how} | {row['iterations']} | {row['steps_per_second']} | "
                     f"{100 * row['data_wait_share']:.1f} % | {row['validation_dice']} |")
    lines += ["", "| resume | ok | epochs | notes |", "|---|---|---|---|"]
    for name, row in results["resume"].items():
        lines.append(f"| {name} | {row['ok']} | {row.get('epochs', row.get('error', ''))} | "
                     f"{'; '.join(row['notes']) or '-'} |")
    lines += ["", "| TTA prediction | input | s | peak GB |", "|---|---|---|---|"]
    for row in results["tta_memory"]:
        lines.append(f"| {row['case']} | {row['input']} | {row['seconds']} | {row['peak_memory_gb']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorseg_bench_gpu"))
    parser.add_argument("--budget", default="3m", help="training budget of part 3 (default 3m; the schedule's is 15m)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting in part 2")
    parser.add_argument("--dry-run", action="store_true", help="the CPU, tiny sizes: checks that every part runs")
    args = parser.parse_args(argv)

    if not args.dry_run and not torch.cuda.is_available():
        print("no GPU here: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = _dataset(args.dry_run)
    plan = _plan(dataset, args.dry_run)
    results: dict = {"device": _device_info(device), "dataset": dataset.name, "dry_run": args.dry_run}
    results["steps"] = measure_steps(plan, device, 2 if args.dry_run else args.steps)
    results["training"] = measure_training(dataset, plan, args.out, device, "6s" if args.dry_run else args.budget,
                                           args.dry_run)
    results["training_without_prefetch"] = measure_training(
        dataset, plan, args.out, device, "4s" if args.dry_run else "1m", args.dry_run, prefetch=False,
        name="run_no_prefetch")
    results["resume"] = measure_resume(dataset, plan, args.out, device)
    results["tta_memory"] = measure_tta_memory(plan, device, dataset, args.dry_run)
    results["nnunet"] = _nnunet_available()
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (args.out / "gpu.md").write_text(to_markdown(results), encoding="utf-8")
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
