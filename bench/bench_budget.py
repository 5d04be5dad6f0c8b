"""The budget-aware plan against the memory-only plan, same budget, fold 0: see bench/budget.md.

    python bench/bench_budget.py anisotropic --budget 5m      # anisotropic 3-channel data built from real cases
    python bench/bench_budget.py sample --budget 5m     # the bundled 25-case sample (the demo's data)
    python bench/bench_budget.py hippocampus --budget 10m   # the shared 208 cases

For each dataset: the memory-only plan (``--preset cpu``, what tutorseg planned before budgets) and the budget plan
(``tutorseg.plan(fp, budget=...)``) each train fold 0 for the budget; one JSON line per run with the configuration,
patch, measured seconds per step, estimated and real steps, and the full-case validation Dice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # derived_datasets: the anisotropic dataset the tests build too
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Task04_Hippocampus"


def dataset_folder(name: str, out: Path) -> Path:
    import tutorseg

    if name == "sample":
        return tutorseg.sample_dataset_path()
    if name == "hippocampus":
        return HIPPOCAMPUS
    from derived_datasets import hippocampus_anisotropic

    root = out / "HippocampusAnisotropic"
    if not (root / "dataset.json").is_file():
        hippocampus_anisotropic(root)
    return root


def run(name: str, budget: str, out: Path, plans: list[str]) -> None:
    import tutorseg

    folder = dataset_folder(name, out)
    fingerprint = tutorseg.fingerprint(folder, progress=False)
    for which in plans:
        started = time.perf_counter()
        plan = (tutorseg.plan(fingerprint, budget=budget, cache_dir=out / "cache") if which == "budget"
                else tutorseg.plan(fingerprint, preset="cpu"))
        plan_seconds = time.perf_counter() - started
        configuration = plan.default_configuration
        decision = next((d for d in plan.decisions if d.name == "budget"), None)
        run_dir = out / f"{name}_{which}_{budget}"
        record = tutorseg.train_fold(folder, plan, fold=0, out_dir=run_dir, configuration=configuration,
                                     budget=budget, progress=False, verbose=False,
                                     preprocessed_dir=out / f"{name}_preprocessed_{which}")
        print(json.dumps({
            "dataset": name, "plan": which, "budget": budget, "configuration": configuration,
            "patch": list(plan[configuration].patch_size), "batch": plan[configuration].batch_size,
            "features": list(plan[configuration].features_per_stage), "plan_seconds": round(plan_seconds, 1),
            "estimated_steps": decision.value["estimated_steps"] if decision else None,
            "steps": record.iterations, "train_seconds": round(record.elapsed_seconds, 1),
            "dice_per_class": record.validation["mean_dice"] if record.validation else None,
            "mean_foreground_dice": record.mean_foreground_dice}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=("anisotropic", "sample", "hippocampus"))
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--plans", nargs="+", default=["memory", "budget"], choices=("memory", "budget"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorseg_bench_budget"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run(args.dataset, args.budget, args.out, args.plans)


if __name__ == "__main__":
    main()
