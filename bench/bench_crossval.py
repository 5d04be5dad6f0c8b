"""Five-fold cross-validation on Task04_Hippocampus against nnU-Net's own five-fold numbers: see bench/crossval.md.

    python bench/bench_crossval.py --budget 6m          # cpu preset, 3d_fullres, folds 0-4, one after another

Trains the five folds with ``tutorseg.train_folds`` (each its own process, resumable: run the same line again after
an interruption), then pools the five folds' full-case validations (every one of the 208 labelled cases predicted
once, by the model that did not see it) into the cross-validation Dice per class, as nnU-Net's
``crossval_results_folds_0_1_2_3_4/summary.json`` does, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
# nnU-Net's five-fold CV on Task04 with its full 1000-epoch schedule, as MONAI's DynUNet tutorial reports it
# (Project-MONAI/tutorials, modules/dynunet_pipeline/README.md, table "nnU-Net" row for task 04)
NNUNET_CV = {"Anterior": 0.8975, "Posterior": 0.8807}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="6m", help="wall-clock budget per fold")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorseg_bench_crossval"))
    args = parser.parse_args()

    import tutorseg
    from tutorseg.training.folds import train_folds

    args.out.mkdir(parents=True, exist_ok=True)
    plan_file = args.out / f"plan_{args.preset}.json"
    if not plan_file.is_file():
        tutorseg.plan(tutorseg.fingerprint(HIPPOCAMPUS, progress=False), preset=args.preset).save(plan_file)
    clock = time.perf_counter()
    outcomes = train_folds(HIPPOCAMPUS, plan_file, folds=range(5), out_dir=args.out / args.configuration,
                           devices=["cpu"], configuration=args.configuration,
                           train_arguments=["--budget", args.budget])
    seconds = time.perf_counter() - clock
    result = tutorseg.find_best_configuration(args.out, configurations=[args.configuration], verbose=False)
    score = result.candidates[0]
    print(json.dumps({
        "what": "tutorseg five-fold cross-validation", "preset": args.preset, "configuration": args.configuration,
        "budget_per_fold": args.budget, "wall_seconds_all_folds": round(seconds, 1),
        "iterations_per_fold": [json.loads((o.run_dir / "training_record.json").read_text())["iterations"]
                                for o in outcomes],
        "fold_mean_foreground_dice": [o.mean_dice for o in outcomes],
        "cv_dice_per_class": score.dice_per_class, "cv_mean_foreground_dice": score.mean_dice,
        "nnunet_cv_dice_per_class_1000_epochs": NNUNET_CV}), flush=True)


if __name__ == "__main__":
    main()
