"""Shared set-up of the training tests: tiny plans of real datasets, and a derived 2-channel dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

TINY = dict(epochs=2, iterations_per_epoch=2, val_iterations=1, progress=False, verbose=False)


def tiny_plan(dataset_dir, configuration=None, **shrink):
    """Fingerprint + cpu-preset plan of a real dataset, shrunk to a network that trains in seconds."""
    import tutorseg
    from tutorseg.training.budget.smoke import smoke_plan

    fp = tutorseg.fingerprint(dataset_dir, progress=False, num_workers=0)
    return smoke_plan(tutorseg.plan(fp, preset="cpu"), configuration, **shrink)


def two_channel_dataset(sample_dir: Path, out: Path, n_cases: int = 6) -> Path:
    """nnU-Net v2 dataset with 2 channels from real Hippocampus cases: the MRI and its smoothed gradient magnitude."""
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    images = sorted((sample_dir / "imagesTr").glob("hippocampus_*.nii.gz"))[:n_cases]
    for path in images:
        case = path.name[: -len(".nii.gz")]
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
        gradient = ndimage.gaussian_gradient_magnitude(data, sigma=1.0).astype(np.float32)
        nib.save(nib.Nifti1Image(data, img.affine), out / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(gradient, img.affine), out / "imagesTr" / f"{case}_0001.nii.gz")
        shutil.copy(sample_dir / "labelsTr" / path.name, out / "labelsTr" / f"{case}.nii.gz")
    meta = {"name": "HippocampusTwoChannel", "channel_names": {"0": "MRI", "1": "gradient"},
            "labels": {"background": 0, "Anterior": 1, "Posterior": 2}, "numTraining": len(images),
            "file_ending": ".nii.gz"}
    (out / "dataset.json").write_text(json.dumps(meta, indent=1))
    return out
