"""Build the bundled sample: a small real subset of the Medical Segmentation Decathlon's Task04_Hippocampus.

The sample ships inside the package (``tutorseg/data/sample_data/Task04_Hippocampus_sample``) so that the README's main
job, the notebooks and most tests run offline. It keeps the MSD layout and copies files byte-for-byte: no
resampling, no re-encoding, so every quirk of the real data is kept, including ``hippocampus_003``, whose label is
stored as float32 (one of the two such cases of the full set).

Usage::

    python scripts/make_sample.py                       # from ../shared/data/Task04_Hippocampus
    python scripts/make_sample.py /path/to/Task04_Hippocampus --out /tmp/sample

The selection is deterministic: every 9th labelled case in id order, plus ``hippocampus_003``, and the first 4 test
images in id order. Running the script twice gives identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nibabel as nib

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
DEFAULT_OUT = REPO / "tutorseg" / "data" / "sample_data" / "Task04_Hippocampus_sample"

EVERY_NTH_CASE = 9  # 208 cases -> 24, about 2 MB: small enough for a wheel, enough for a 5-fold split
ALWAYS_INCLUDED = ("hippocampus_003",)  # its label is float32 with values {0, 1, 2}: learners should meet this quirk
N_TEST_IMAGES = 4

CITATIONS = (
    'Antonelli, M., Reinke, A., Bakas, S. et al. "The Medical Segmentation Decathlon". '
    "Nature Communications 13, 4128 (2022). https://doi.org/10.1038/s41467-022-30695-9",
    'Simpson, A. L., Antonelli, M., Bakas, S. et al. "A large annotated medical image dataset for the development '
    'and evaluation of segmentation algorithms". arXiv:1902.09063 (2019).',
)


def case_id_of(relative_path: str) -> str:
    """``"./imagesTr/hippocampus_001.nii.gz"`` -> ``"hippocampus_001"``."""
    return Path(relative_path).name.removesuffix(".nii.gz")


def select_training(entries: list[dict]) -> list[dict]:
    """Every ``EVERY_NTH_CASE``-th entry in case-id order, plus the ``ALWAYS_INCLUDED`` cases, in id order."""
    by_id = {case_id_of(e["image"]): e for e in entries}
    ids = sorted(by_id)
    chosen = set(ids[::EVERY_NTH_CASE]) | {i for i in ALWAYS_INCLUDED if i in by_id}
    missing = [i for i in ALWAYS_INCLUDED if i not in by_id]
    if missing:
        raise SystemExit(f"the source dataset lacks {missing}; give the full Task04_Hippocampus folder")
    return [by_id[i] for i in sorted(chosen)]


def select_test(entries: list[str]) -> list[str]:
    """The first ``N_TEST_IMAGES`` test images in case-id order."""
    return sorted(entries, key=case_id_of)[:N_TEST_IMAGES]


def stored_dtype(path: Path) -> str:
    return str(nib.load(str(path)).header.get_data_dtype())


def readme_text(source_json: dict, training: list[dict], test: list[str], out: Path) -> str:
    """The sample's README: licence, attribution, citations, and what it holds."""
    rows = []
    for entry in training:
        image, label = out / entry["image"], out / entry["label"]
        shape = "x".join(str(s) for s in nib.load(str(image)).shape)
        rows.append(f"| {case_id_of(entry['image'])} | {shape} | {stored_dtype(image)} | {stored_dtype(label)} |")
    test_ids = ", ".join(case_id_of(t) for t in test)
    citations = "\n".join(f"- {c}" for c in CITATIONS)
    return f"""# Task04_Hippocampus_sample

A small real subset of the Medical Segmentation Decathlon (MSD) Task04 **Hippocampus** dataset, bundled with
tutorseg so that its notebooks, its main job and its tests run offline. 3D MRI, one channel ("MRI"), labels
0 background, 1 Anterior, 2 Posterior; voxels of 1 mm; about 35 x 50 x 35 voxels per case.

## Licence and attribution

- Licence: **{source_json.get("licence", "CC-BY-SA 4.0")}** (Creative Commons Attribution-ShareAlike 4.0
  International, https://creativecommons.org/licenses/by-sa/4.0/), as stated in the original `dataset.json`
  (release "{source_json.get("relase", "1.0 04/05/2018")}"). This subset is shared under the same licence.
- Source: Medical Segmentation Decathlon, Task04 Hippocampus, Vanderbilt University Medical Center
  (http://medicaldecathlon.com/).
- Please cite:
{citations}

## What was changed

Nothing inside the files: images and labels are byte-for-byte copies of the original MSD files. Only the
selection is smaller ({len(training)} of the labelled training cases, {len(test)} of the unlabelled test images),
and `dataset.json` lists exactly these files (`numTraining`, `numTest`, `training`, `test`; all other keys are the
original ones, including the misspelt `relase`). macOS `._*` files of the MSD archive are not included.

Made by `scripts/make_sample.py` (deterministic: every {EVERY_NTH_CASE}th labelled case in id order, plus
{", ".join(ALWAYS_INCLUDED)}, and the first {N_TEST_IMAGES} test images in id order).

## Quirks kept on purpose

- Images are stored as float32 in most cases and as uint8 in others: a real dataset mixes data types.
- The label of `hippocampus_003` is stored as **float32** (values 0.0, 1.0, 2.0), not as an integer type.
  `tutorseg inspect` reports it as a warning (`float_label`); tutorseg converts it to integers when loading.

## Cases

| case | shape (x, y, z) | image dtype | label dtype |
|---|---|---|---|
{chr(10).join(rows)}

Test images (`imagesTs/`, unlabelled): {test_ids}.
"""


def copy_file(source_root: Path, out: Path, relative: str) -> None:
    target = out / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source_root / relative, target)  # bytes only: no permissions or timestamps of the source


def build_sample(source: Path, out: Path) -> Path:
    """Write the sample into ``out`` (replaced as a whole, atomically) and return it."""
    source_json = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    training = select_training(source_json["training"])
    test = select_test(source_json.get("test", []))

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sample_", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the installed package must be readable by all
    try:
        for entry in training:
            copy_file(source, staging, entry["image"])
            copy_file(source, staging, entry["label"])
        for relative in test:
            copy_file(source, staging, relative)
        sample_json = {**source_json, "numTraining": len(training), "numTest": len(test),
                       "training": training, "test": test}
        (staging / "dataset.json").write_text(json.dumps(sample_json, indent=1) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(readme_text(source_json, training, test, staging), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE,
                        help=f"the full Task04_Hippocampus folder (default: {DEFAULT_SOURCE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if not (args.source / "dataset.json").is_file():
        print(f"error: {args.source} holds no dataset.json; give the Task04_Hippocampus folder", file=sys.stderr)
        return 2
    out = build_sample(args.source, args.out)
    n_files = sum(1 for p in out.rglob("*") if p.is_file())
    size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    print(f"wrote {out} ({n_files} files, {size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
