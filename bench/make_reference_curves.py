"""Keep recorded training runs as reference curves that notebook 03 draws beside a learner's run.

    python bench/make_reference_curves.py hippocampus_sample_5m_cpu2 /tmp/demo2_s12345 /tmp/demo2_s1 /tmp/demo2_s2 \\
        --title "5-minute budget on the bundled sample, 2 CPU cores" --command "tutorseg demo --seed S" \\
        --code 692ed34 --date 2026-12-07 --machine "the project's 2-core CPU machine, idle"

Each argument after the name is the output folder of one ``tutorseg demo`` run (or a run folder with
``history.json``); its seed is read from the run's config.json, its validation Dice from the demo's summary.json.
The per-epoch values kept: steps and minutes at each epoch's end, train loss, pseudo-Dice per class and its EMA.
Written to ``tutorseg/viz/reference_runs/<name>.json`` (shipped with the package; ``tutorseg.viz.reference_runs``).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tutorseg" / "viz" / "reference_runs"


def _run(folder: Path) -> dict:
    run_dir = folder if (folder / "history.json").is_file() else next(folder.glob("runs/*/*/fold_*"))
    history = json.loads((run_dir / "history.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    summary = folder / "summary.json"
    dice = json.loads(summary.read_text())["foreground_mean"]["dice"] if summary.is_file() else None

    def rounded(values, digits=4):
        return [None if v is None else round(float(v), digits) for v in values]

    return {"seed": config.get("seed"), "validation_dice": None if dice is None else round(dice, 4),
            "steps": list(itertools.accumulate(history["iterations"])),
            "minutes": rounded([s / 60 for s in history["elapsed_seconds"]], 3),
            "train_loss": rounded(history["train_loss"]),
            "pseudo_dice": [rounded(v, 3) for v in history["pseudo_dice"]],
            "ema_pseudo_dice": rounded(history["ema_pseudo_dice"]),
            "class_names": history.get("class_names")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--title", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--code", required=True, help="the commit whose training made the runs")
    parser.add_argument("--date", required=True)
    parser.add_argument("--machine", required=True)
    args = parser.parse_args()
    record = {"name": args.name, "title": args.title, "command": args.command, "code": args.code,
              "date": args.date, "machine": args.machine, "runs": [_run(folder) for folder in args.runs]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print("written:", OUT / f"{args.name}.json")


if __name__ == "__main__":
    main()
