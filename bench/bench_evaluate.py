"""Peak memory and time of ``tutorseg evaluate`` on one CT-sized case with many classes (issue #36); bench/evaluate.md.

    python bench/bench_evaluate.py --classes 14            # this checkout
    PYTHONPATH=/path/to/older/checkout python bench/bench_evaluate.py --classes 6   # another version, same case

The case is built from real labels: 512 x 512 x 300 voxels, filled with Task04_Hippocampus label maps (each
upsampled 3x, nearest neighbour) on a grid, each map's Anterior and Posterior renumbered so that the volume holds
``--classes`` foreground classes; the prediction is the reference shifted by two voxels with every other class
eroded once (a prediction's typical mistakes). ``tutorseg evaluate PRED REF`` runs in a child process; its peak
resident memory (ru_maxrss) and wall time are printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
SHAPE = (512, 512, 300)


def build_case(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction label maps of SHAPE with ``n_classes`` foreground classes, from real labels."""
    labels = sorted((HIPPOCAMPUS / "labelsTr").glob("hippocampus_*.nii.gz"))
    reference = np.zeros(SHAPE, np.uint8)
    pieces = (n_classes + 1) // 2
    cell = (170, 170, 150)  # a 3 x 3 x 2 grid of cells: up to 18 maps, 36 classes
    for index in range(pieces):
        label = np.asarray(nib.load(labels[index]).dataobj).astype(np.uint8)
        big = ndimage.zoom(label, 3, order=0)[: cell[0], : cell[1], : cell[2]]
        corner = (index % 3 * cell[0], index // 3 % 3 * cell[1], index // 9 * cell[2])
        region = tuple(slice(c, c + s) for c, s in zip(corner, big.shape))
        renumbered = np.where(big > 0, big + 2 * index, 0).astype(np.uint8)
        renumbered[renumbered > n_classes] = 0  # an odd count: the last map keeps one class
        reference[region] = np.maximum(reference[region], renumbered)
    prediction = np.roll(reference, 2, axis=0)
    for value in range(2, n_classes + 1, 2):
        mask = prediction == value
        prediction[mask ^ ndimage.binary_erosion(mask)] = 0
    return reference, prediction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=14)
    args = parser.parse_args()
    reference, prediction = build_case(args.classes)
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: Path(tmp) / name for name in ("pred", "ref")}
        for name, array in (("pred", prediction), ("ref", reference)):
            folders[name].mkdir()
            nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 1.5, 1.0])), folders[name] / "ct_000.nii.gz")
        clock = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "tutorseg", "evaluate", str(folders["pred"]),
                                 str(folders["ref"]), "-o", str(Path(tmp) / "summary.json")],
                                capture_output=True, text=True, env=dict(os.environ))
        seconds = time.perf_counter() - clock
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        summary = json.loads((Path(tmp) / "summary.json").read_text()) if result.returncode == 0 else {}
    print(json.dumps({"what": "tutorseg evaluate, one case", "shape": SHAPE, "classes": args.classes,
                      "returncode": result.returncode, "seconds": round(seconds, 1), "peak_rss_gb": round(peak_gb, 2),
                      "mean": summary.get("mean"), "tutorseg": os.environ.get("PYTHONPATH", str(REPO)),
                      "error": result.stderr[-500:] if result.returncode else None}))


if __name__ == "__main__":
    main()
