"""Short-run reliability (issue #35): the same plan and fold, equal steps, several seeds; see bench/seeds.md.

    python bench/bench_seeds.py --steps 1250 --seeds 1 2 3 4 5                     # tutorseg as it trains now
    python bench/bench_seeds.py --steps 1250 --seeds 1 2 3 4 5 --momentum 0.99     # nnU-Net's recipe
    python bench/bench_seeds.py --steps 1250 --seeds 1 2 3 4 5 --momentum 0.99 --warmup-steps 250  # candidates
    python bench/bench_seeds.py --steps 1250 --seeds 1 2 3 4 5 --momentum 0.99 --batch-dice

The plan is the cpu preset's 3d_fullres for the 208 Task04_Hippocampus cases (the plan issue #35 measured nnU-Net
2.8.1 on, through ``tutorseg export-nnunet``), fold 0 (nnU-Net's splits: 166 training, 42 validation cases), epochs
of 250 steps as nnU-Net's, then the fold's full-case validation with mirroring. Each run prints one JSON line, with
the per-epoch pseudo-Dice of each class, and appends it to ``--out``/runs.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
ITERATIONS_PER_EPOCH = 250  # nnU-Net's


def _plan(out: Path, *, batch_dice: bool = False):
    """The cpu preset's plan (kept in ``out``); ``batch_dice``: its 3d_fullres Dice over the whole batch instead."""
    from dataclasses import replace

    import tutorseg

    path = out / "plan_cpu.json"
    if path.is_file():
        plan = tutorseg.Plan.load(path)
    else:
        plan = tutorseg.plan(tutorseg.fingerprint(HIPPOCAMPUS, progress=False), preset="cpu")
        plan.save(path)
    if batch_dice:
        plan = replace(plan, configurations={**plan.configurations,
                                             "3d_fullres": replace(plan["3d_fullres"], batch_dice=True)})
    return plan


def run(seed: int, steps: int, out: Path, *, warmup_steps: int = 0, batch_dice: bool = False,
        momentum: float | None = None, threads: int | None = None) -> dict:
    """Train fold 0 for ``steps`` steps with ``seed`` (a learning-rate ramp over ``warmup_steps``, batch Dice).

    A finished run of the same steps, seed and warm-up in ``out`` is read instead of trained again, so an interrupted
    benchmark goes on where it stopped.
    """
    from tutorseg import train_fold
    from tutorseg.training.runs.record import TrainingRecord

    if steps % ITERATIONS_PER_EPOCH:
        raise SystemExit(f"--steps must be a multiple of {ITERATIONS_PER_EPOCH} (nnU-Net's epoch)")
    # nnU-Net's momentum has no tag (the runs measured before tutorseg chose the momentum by the run's length)
    momentum_tag = {None: "_tutorseg", 0.99: ""}.get(momentum, f"_momentum{momentum}")
    tag = (f"steps{steps}_seed{seed}" + (f"_warmup{warmup_steps}" if warmup_steps else "")
           + ("_batchdice" if batch_dice else "") + momentum_tag)
    finished = sorted(out.glob(f"{tag}_*/training_record.json"))
    clock = time.perf_counter()
    if finished:
        record = TrainingRecord.load(finished[-1])
    else:
        record = train_fold(HIPPOCAMPUS, _plan(out, batch_dice=batch_dice), fold=0, out_dir=out / f"{tag}_{int(time.time())}",
                            epochs=steps // ITERATIONS_PER_EPOCH, iterations_per_epoch=ITERATIONS_PER_EPOCH,
                            preprocessed_dir=out / "preprocessed", seed=seed, warmup=warmup_steps / steps,
                            momentum=momentum, num_threads=threads, progress=False, verbose=False)
    return {"what": "tutorseg short run", "steps": record.iterations, "seed": seed, "warmup_steps": warmup_steps,
            "batch_dice": batch_dice,
            "momentum": json.loads((record.run_dir / "config.json").read_text()).get("momentum", 0.99),
            "device": record.device,
            "pseudo_dice_per_epoch": [[round(d, 3) for d in epoch] for epoch in record.history["pseudo_dice"]],
            "validation_mean_foreground_dice": round(record.mean_foreground_dice, 4),
            "validation_per_class": {name: round(d, 4) for name, d in record.validation["mean_dice"].items()},
            "seconds": round(time.perf_counter() - clock, 1), "run_dir": str(record.run_dir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1250)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--batch-dice", action="store_true", help="3d_fullres Dice over the batch (nnU-Net: per case)")
    parser.add_argument("--momentum", type=float, default=None, help="SGD momentum (nnU-Net: 0.99, Nesterov; default: what "
                        "tutorseg chooses for the run's length, 0.9 below 5,000 steps)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: from the load)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorseg_bench_seeds"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        result = run(seed, args.steps, args.out, warmup_steps=args.warmup_steps, batch_dice=args.batch_dice,
                     momentum=args.momentum, threads=args.threads)
        print(json.dumps(result), flush=True)
        with open(args.out / "runs.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
