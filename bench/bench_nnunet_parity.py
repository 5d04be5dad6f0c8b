"""Same weights, same predictions? tutorseg's and nnU-Net 2.8.1's, case by case (issue #33): see bench/nnunet_parity.md.

    # a model nnU-Net trained, imported into tutorseg; both predict the shared Hippocampus test images
    python bench/bench_nnunet_parity.py import --model RESULTS/Dataset991_Hippocampus/nnUNetTrainer_5epochs__nnUNetPlans__3d_fullres \\
        --images ../shared/data/Task04_Hippocampus/imagesTs --nnunet-bin /work/bench-venv/bin
    # a tutorseg run exported with --format nnunet; nnU-Net predicts with it, tutorseg with the run itself
    python bench/bench_nnunet_parity.py export --run RUN_DIR --images IMAGES --nnunet-bin /work/bench-venv/bin

Each direction predicts every image with mirroring and without (nnU-Net's ``--disable_tta``), on the CPU, both
tools saving probabilities, and reports per case: the share of voxels with the same label, the Dice between the two
label maps per foreground class, and the largest and mean absolute difference of the class probabilities. One JSON
line per case and setting, and a summary, go to stdout and ``--out``/parity.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np


def _nnunet_images(images: Path, out: Path) -> Path:
    """``images`` as nnU-Net names them (``CASE_0000.ext``): MSD-style ``CASE.nii.gz`` files linked under that name."""
    files = sorted(p for p in images.iterdir() if p.name.endswith((".nii.gz", ".png")) and not p.name.startswith("."))
    if all("_0000." in p.name for p in files):
        return images
    out.mkdir(parents=True, exist_ok=True)
    for p in files:
        stem, ending = p.name.split(".", 1)
        target = out / f"{stem}_0000.{ending}"
        if not target.exists():
            os.symlink(p.resolve(), target)
    return out


def _read_label(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        from PIL import Image

        return np.asarray(Image.open(path))
    import nibabel as nib

    return np.asarray(nib.load(path).dataobj)


def _nnunet_probabilities(npz: Path, is_png: bool) -> np.ndarray:
    """nnU-Net's saved probabilities (K, z, y, x) in tutorseg's axis order (K, x, y, z); PNG: (K, 1, r, c) -> (K, r, c)."""
    probabilities = np.load(npz)["probabilities"].astype(np.float32)
    if is_png:
        return probabilities[:, 0]
    return probabilities.transpose(0, 3, 2, 1)


def compare(ours: Path, theirs: Path, case: str, ending: str, classes: list[int]) -> dict:
    a, b = _read_label(ours / f"{case}{ending}"), _read_label(theirs / f"{case}{ending}")
    row: dict = {"case": case, "voxels": int(a.size), "agreement": float((a == b).mean())}
    dice = {}
    for value in classes:
        x, y = a == value, b == value
        total = int(x.sum() + y.sum())
        dice[str(value)] = 1.0 if total == 0 else float(2 * (x & y).sum() / total)
    row["dice_between_label_maps"] = dice
    p_ours = np.load(ours / f"{case}.npz")["probabilities"].astype(np.float32)
    p_theirs = _nnunet_probabilities(theirs / f"{case}.npz", ending == ".png")
    if p_ours.shape == p_theirs.shape:
        difference = np.abs(p_ours - p_theirs)
        row.update(max_abs_probability_difference=float(difference.max()),
                   mean_abs_probability_difference=float(difference.mean()))
    else:
        row["probability_shapes"] = [list(p_ours.shape), list(p_theirs.shape)]
    return row


def nnunet_predict(bin_dir: Path, model: Path, images: Path, out: Path, *, tta: bool) -> None:
    folds = sorted(p.name.removeprefix("fold_") for p in model.glob("fold_*"))
    command = [str(bin_dir / "nnUNetv2_predict_from_modelfolder"), "-m", str(model), "-i", str(images), "-o",
               str(out), "-f", *folds, "-device", "cpu", "-npp", "1", "-nps", "1", "--save_probabilities"]
    if not tta:
        command.append("--disable_tta")
    subprocess.run(command, check=True, env={**os.environ, "nnUNet_raw": "", "nnUNet_preprocessed": "",
                                             "nnUNet_results": str(model.parent.parent)})


def run(direction: str, model: Path, run_dirs: list[Path], images: Path, bin_dir: Path, out: Path, *,
        keep_nnunet: bool = False) -> None:
    import tutorseg
    from tutorseg.planning import Plan

    nnunet_images = _nnunet_images(images, out / "images")
    plan = Plan.load(run_dirs[0] / "plan.json")
    ending = ".png" if plan.is_2d_data else ".nii.gz"
    classes = sorted(v for v in plan.labels.values() if v != 0)
    rows = []
    for tta in (True, False):
        setting = "mirroring" if tta else "no mirroring"
        ours, theirs = out / f"tutorseg_{'tta' if tta else 'notta'}", out / f"nnunet_{'tta' if tta else 'notta'}"
        shutil.rmtree(ours, ignore_errors=True)
        tutorseg.predict(run_dirs, nnunet_images, ours, tta=tta, save_probabilities=True, progress=False,
                         postprocess=False, device="cpu")
        if not (keep_nnunet and theirs.is_dir()):
            shutil.rmtree(theirs, ignore_errors=True)
            nnunet_predict(bin_dir, model, nnunet_images, theirs, tta=tta)
        for case in sorted(p.name.removesuffix(ending) for p in theirs.glob(f"*{ending}")):
            row = {"direction": direction, "setting": setting, **compare(ours, theirs, case, ending, classes)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(out / "parity.jsonl", "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    for setting in ("mirroring", "no mirroring"):
        chosen = [r for r in rows if r["setting"] == setting]
        agreement = [r["agreement"] for r in chosen]
        dice = [d for r in chosen for d in r["dice_between_label_maps"].values()]
        differences = [r.get("max_abs_probability_difference", float("nan")) for r in chosen]
        print(json.dumps({"summary": direction, "setting": setting, "cases": len(chosen),
                          "worst_agreement": min(agreement), "mean_agreement": float(np.mean(agreement)),
                          "cases_below_99.9%": sum(a < 0.999 for a in agreement), "worst_dice": min(dice),
                          "max_abs_probability_difference": float(np.nanmax(differences)),
                          "mean_abs_probability_difference": float(np.nanmean(
                              [r.get("mean_abs_probability_difference", float("nan")) for r in chosen]))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("direction", choices=("import", "export"))
    parser.add_argument("--model", type=Path, help="import: nnU-Net's results folder of one configuration")
    parser.add_argument("--run", type=Path, nargs="+", help="export: tutorseg fold run folders")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--nnunet-bin", type=Path, required=True, help="bin folder of a venv with nnunetv2 2.8.1")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorseg_bench_parity"))
    parser.add_argument("--keep-nnunet", action="store_true",
                        help="reuse nnU-Net's predictions of an earlier run in --out (same model, same images)")
    args = parser.parse_args()
    out = args.out / args.direction
    out.mkdir(parents=True, exist_ok=True)
    if args.direction == "import":
        from tutorseg.integrations.nnunet_models import import_nnunet_model

        shutil.rmtree(out / "model", ignore_errors=True)
        imported = import_nnunet_model(args.model, out / "model")
        run(args.direction, args.model, list(imported.run_dirs), args.images, args.nnunet_bin, out,
            keep_nnunet=args.keep_nnunet)
    else:
        from tutorseg.integrations.nnunet_models import export_nnunet_model

        shutil.rmtree(out / "nnUNet_results", ignore_errors=True)
        model = export_nnunet_model(args.run, out / "nnUNet_results", dataset_id=990)
        run(args.direction, model, list(args.run), args.images, args.nnunet_bin, out, keep_nnunet=args.keep_nnunet)


if __name__ == "__main__":
    main()
