"""The budget-aware plan against the memory-only plan, same budget, fold 0: see bench/budget.md.

    python bench/bench_budget.py anisotropic --budget 5m      # anisotropic 3-channel data built from real cases
    python bench/bench_budget.py sample --budget 5m     # the bundled 25-case sample (the demo's data)
    python bench/bench_budget.py hippocampus --budget 10m   # the shared 208 cases
    python bench/bench_budget.py isbi --budget 5m           # the shared ISBI 2012 stack (2D EM, 30 slices)
    python bench/bench_budget.py hippocampus --budget 10m --plans budget --seeds 12345 1 2 --momentum 0.99

For each dataset: the memory-only plan (``--preset cpu``, what tutorseg planned before budgets) and the budget plan
(``tutorseg.plan(fp, budget=...)``) each train fold 0 for the budget; one JSON line per run with the configuration,
patch, measured seconds per step, estimated and real steps, and the full-case validation Dice. For ISBI also the
challenge's membrane score, the foreground-restricted Rand F-score of the cells the predicted membranes enclose
(:func:`tutorseg.evaluation.instances.rand_f_score`).
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
ISBI = REPO.parent / "shared" / "data" / "ISBI2012_EM_membrane"


def dataset_folder(name: str, out: Path) -> Path:
    import tutorseg

    if name == "sample":
        return tutorseg.sample_dataset_path()
    if name == "hippocampus":
        return HIPPOCAMPUS
    if name == "isbi":
        return ISBI
    from derived_datasets import hippocampus_anisotropic

    root = out / "HippocampusAnisotropic"
    if not (root / "dataset.json").is_file():
        hippocampus_anisotropic(root)
    return root


def run(name: str, budget: str, out: Path, plans: list[str], *, seed: int | None = None,
        momentum: float | None = None) -> None:
    """Plan and train fold 0 of ``name`` for ``budget`` with each of ``plans``; ``seed``/``momentum``: as given, or
    tutorseg's defaults (12345; the momentum its rule chooses for the run's length)."""
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
        tag = (f"_seed{seed}" if seed is not None else "") + (f"_momentum{momentum}" if momentum is not None else "")
        run_dir = out / f"{name}_{which}_{budget}{tag}"
        record = tutorseg.train_fold(folder, plan, fold=0, out_dir=run_dir, configuration=configuration,
                                     budget=budget, progress=False, verbose=False,
                                     preprocessed_dir=out / f"{name}_preprocessed_{which}",
                                     **({"seed": seed} if seed is not None else {}), momentum=momentum)
        print(json.dumps({
            "dataset": name, "plan": which, "budget": budget, "configuration": configuration,
            "seed": seed, "momentum": json.loads((run_dir / "config.json").read_text())["momentum"],
            "patch": list(plan[configuration].patch_size), "batch": plan[configuration].batch_size,
            "features": list(plan[configuration].features_per_stage), "plan_seconds": round(plan_seconds, 1),
            "estimated_steps": decision.value["estimated_steps"] if decision else None,
            "steps": record.iterations, "train_seconds": round(record.elapsed_seconds, 1),
            "dice_per_class": record.validation["mean_dice"] if record.validation else None,
            "mean_foreground_dice": record.mean_foreground_dice,
            **(membrane_scores(run_dir / "validation", folder / "labelsTr") if name == "isbi" else {})}), flush=True)


def membrane_scores(predictions: Path, references: Path) -> dict:
    """The Rand F-score of the cells (connected non-membrane pixels), all validation slices' pixel pairs pooled.

    Two readings of the predicted membrane pixels that fall inside reference cells: ``as_predicted`` counts them as
    one object (scikit-image's convention), which a membrane drawn thicker than the reference's punishes as a merge;
    ``thinned`` gives each to its nearest predicted cell first, as the challenge thinned the borders before scoring.
    """
    import numpy as np

    from tutorseg.data.imageio import read_image
    from tutorseg.evaluation.instances import instances_from_border_classes, label_instances, rand_f_score

    slices = []
    for path in sorted(predictions.glob("*.png")):
        membrane_predicted = read_image(path).array[0] == 1
        membrane_reference = read_image(references / path.name).array[0] == 1
        cells = label_instances(~membrane_predicted)[0]
        thinned = instances_from_border_classes(np.where(membrane_predicted, 2, 1))[0]  # cells grown over membrane
        slices.append((cells, thinned, label_instances(~membrane_reference)[0]))

    def pooled(which: int) -> float:  # each slice's ids offset so that objects of different slices never share one
        offset, predicted, reference = 0, [], []
        for row in slices:
            p, r = row[which], row[2]
            predicted.append(np.where(p > 0, p + offset, 0))
            reference.append(np.where(r > 0, r + offset, 0))
            offset += int(max(p.max(), r.max())) + 1
        return round(rand_f_score(np.stack(predicted), np.stack(reference))["rand_f_score"], 4)

    return {"rand_f_score_as_predicted": pooled(0), "rand_f_score_thinned": pooled(1),
            "validation_slices": len(slices)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=("anisotropic", "sample", "hippocampus", "isbi"))
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--plans", nargs="+", default=["memory", "budget"], choices=("memory", "budget"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[None], help="one run per seed (default 12345)")
    parser.add_argument("--momentum", type=float, default=None,
                        help="SGD momentum (default: tutorseg's choice for the run's length)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorseg_bench_budget"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        run(args.dataset, args.budget, args.out, args.plans, seed=seed, momentum=args.momentum)


if __name__ == "__main__":
    main()
