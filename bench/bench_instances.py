"""Instances on the ISBI 2012 stack, with and without a border class, the same budget each: see bench/instances.md.

    python bench/bench_instances.py --budget 5m         # cpu preset, 2d, fold 0 (24 training / 6 validation slices)

The cells of the ISBI stack are separated by membranes, so the reference instances are the connected components of
the non-membrane pixels (face connectivity). Two runs, each trained for the same budget on the same split:

1. **membrane** (the dataset as published): background / membrane. Instances: connected components of the
   predicted non-membrane pixels. A gap in a predicted membrane merges two cells.
2. **border class**: the reference instances converted by ``tutorseg convert --instances`` into membrane (0) /
   cell interior (1) / cell border (2); instances: the interior's components grown back into the border
   (:func:`tutorseg.evaluation.instances.instances_from_border_classes`). Also reported: plain connected
   components of the same predictions' cells, which the border step replaces.

Both are scored against the reference instances of the six validation slices (matched F1 at IoU 0.5, panoptic
quality) and the membrane's pixel Dice (for the border run: its background class). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO.parent / "shared" / "data" / "ISBI2012_EM_membrane"


def reference_instances(isbi: Path) -> dict[str, np.ndarray]:
    """Case id -> the cells of its reference: connected components of the non-membrane pixels."""
    from tutorseg.data.imageio import read_image
    from tutorseg.evaluation.instances import label_instances

    return {path.name[: -len(".png")]: label_instances(read_image(path).array[0] == 0)[0]
            for path in sorted((isbi / "labelsTr").glob("*.png"))}


def border_dataset(isbi: Path, instances: dict[str, np.ndarray], work: Path) -> Path:
    """The ISBI stack with the cells as instance masks, converted into background / interior / border."""
    from PIL import Image

    from tutorseg.integrations.convert import convert_folders

    target = work / "Dataset912_IsbiBorder"
    if (target / "dataset.json").is_file():
        return target
    images, masks = work / "raw" / "images", work / "raw" / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for case_id, cells in instances.items():
        stem = case_id.split("_")[-1]
        (images / f"{stem}.png").write_bytes((isbi / "imagesTr" / f"{case_id}_0000.png").read_bytes())
        Image.fromarray(cells.astype(np.uint16)).save(masks / f"{stem}.png")
    convert_folders(images, masks, work, name=target.name, channel_names={0: "EM"}, case_ids="isbi2012_{stem}",
                    instances=True)
    return target


def train_and_predict(dataset: Path, work: Path, name: str, budget: str, preset: str) -> tuple[dict, Path, dict]:
    """Fold 0 of ``dataset`` for ``budget``; its validation slices predicted (with mirroring, as nnU-Net)."""
    import tutorseg
    from tutorseg.training.batches.splits import validation_case_ids

    run = work / name / "fold_0"
    if not (run / "checkpoint_final.pt").is_file():
        the_plan = tutorseg.plan(tutorseg.fingerprint(dataset, progress=False), preset=preset)
        tutorseg.train_fold(dataset, the_plan, fold=0, out_dir=run, budget=budget, progress=False, verbose=False,
                            validate=False)
    record = json.loads((run / "training_record.json").read_text())
    loaded = tutorseg.load_dataset(dataset)
    cases = [loaded.case(c) for c in validation_case_ids(run)]
    predictions = work / name / "predictions"
    tutorseg.predict(run, cases, predictions, progress=False, postprocess=False)
    from tutorseg.data.imageio import read_image

    return record, predictions, {c.case_id: read_image(predictions / f"{c.case_id}.png").array[0] for c in cases}


def scores(predicted: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """Matched F1 and panoptic quality over the slices (counts summed)."""
    from tutorseg.evaluation.instances import aggregate_instance_scores, match_instances

    rows = [match_instances(predicted[c], reference[c]).to_dict() for c in predicted]
    total = aggregate_instance_scores(rows)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in total.items()}


def membrane_dice(predicted: dict[str, np.ndarray], membrane: dict[str, np.ndarray], value: int) -> float:
    both = sum(int(((p == value) & membrane[c]).sum()) for c, p in predicted.items())
    total = sum(int((p == value).sum()) + int(membrane[c].sum()) for c, p in predicted.items())
    return round(2 * both / total, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="5m", help="wall-clock training budget of each run")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--isbi", type=Path, default=ISBI)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorseg_bench_instances"))
    args = parser.parse_args()

    from tutorseg.data.imageio import read_image
    from tutorseg.evaluation.instances import instances_from_border_classes, label_instances

    args.out.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    reference = reference_instances(args.isbi)
    membrane = {c: read_image(args.isbi / "labelsTr" / f"{c}.png").array[0] == 1 for c in reference}
    border_dir = border_dataset(args.isbi, reference, args.out)

    plain_record, _, plain = train_and_predict(args.isbi, args.out, "membrane", args.budget, args.preset)
    border_record, _, border = train_and_predict(border_dir, args.out, "border_class", args.budget, args.preset)
    validation = {c: reference[c] for c in plain}
    assert set(plain) == set(border), "the two runs must validate the same slices"

    result = {
        "what": "ISBI 2012 cells as instances, with and without a border class", "preset": args.preset,
        "budget_per_run": args.budget, "validation_slices": sorted(plain),
        "reference_cells": int(sum(int(r.max()) for r in validation.values())),
        "membrane": {
            "iterations": plain_record["iterations"],
            "membrane_dice": membrane_dice(plain, membrane, 1),
            "instances_connected_components": scores({c: label_instances(p == 0)[0] for c, p in plain.items()},
                                                     validation)},
        "border_class": {
            "iterations": border_record["iterations"],
            "membrane_dice": membrane_dice(border, membrane, 0),
            "instances_connected_components": scores({c: label_instances(p != 0)[0] for c, p in border.items()},
                                                     validation),
            "instances_border": scores({c: instances_from_border_classes(p)[0] for c, p in border.items()},
                                       validation)},
        "wall_seconds": round(time.perf_counter() - clock, 1)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
