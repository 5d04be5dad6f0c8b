"""Benchmark: fingerprinting the 208 Task04_Hippocampus cases, tutorseg vs nnU-Net v2's nnUNetv2_extract_fingerprint.

Both run in the same invocation, on the same machine, with 2 processes. nnU-Net runs from a separate
benchmark-only virtual environment (never a tutorseg dependency), on a scratch nnUNet_raw prepared as
../shared/reference/README.md describes (images renamed CASE_0000.nii.gz, the reference v2 dataset.json).

    python bench/bench_fingerprint.py --nnunet-venv /work/bench-venv
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
REFERENCE = REPO.parent / "shared" / "reference" / "nnunet" / "Task04_Hippocampus"


def prepare_nnunet_raw(root: Path) -> None:
    """nnUNet_raw/Dataset004_Hippocampus with symlinked, renamed images and the reference dataset.json."""
    target = root / "nnUNet_raw" / "Dataset004_Hippocampus"
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir()
    meta = json.loads((DATA / "dataset.json").read_text())
    for entry in meta["training"]:
        name = Path(entry["image"]).name
        (target / "imagesTr" / name.replace(".nii.gz", "_0000.nii.gz")).symlink_to(DATA / entry["image"])
        (target / "labelsTr" / name).symlink_to(DATA / entry["label"])
    shutil.copy(REFERENCE / "dataset.json", target / "dataset.json")


def time_tutorseg() -> float:
    start = time.perf_counter()
    subprocess.run([str(Path(os.sys.executable)), "-m", "tutorseg", "fingerprint", str(DATA), "-o",
                    str(Path(tempfile.gettempdir()) / "bench_fp.json"),
                    "--workers", "2", "-q"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_nnunet(venv: Path, root: Path) -> float:
    env = {**os.environ, "nnUNet_raw": str(root / "nnUNet_raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "results")}
    start = time.perf_counter()
    subprocess.run([str(venv / "bin" / "nnUNetv2_extract_fingerprint"), "-d", "4", "-np", "2", "--clean"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nnunet-venv", type=Path, default=Path("/work/bench-venv"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare_nnunet_raw(root)
        ours, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so that load from other work hits both alike
            ours.append(time_tutorseg())
            theirs.append(time_nnunet(args.nnunet_venv, root))
    print(f"tutorseg fingerprint (2 workers): {min(ours):.1f} s (runs: {', '.join(f'{t:.1f}' for t in ours)})")
    print(f"nnUNetv2_extract_fingerprint -np 2: {min(theirs):.1f} s (runs: {', '.join(f'{t:.1f}' for t in theirs)})")
    print(f"ratio tutorseg / nnU-Net: {min(ours) / min(theirs):.2f}")


if __name__ == "__main__":
    main()
