"""The bundled sample: a small real subset of the Medical Segmentation Decathlon's Task04_Hippocampus.

It ships inside the package so that the README's main job, the notebooks and most tests run offline. It is made
from the full dataset by ``scripts/make_sample.py``; ``tutorseg/data/sample_data/Task04_Hippocampus_sample/README.md``
gives its licence (CC-BY-SA 4.0) and attribution.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_NAME = "Task04_Hippocampus_sample"
NNUNET_REFERENCE = "nnunet_v2.8.1"  # nnU-Net's own fingerprint and plans of the sample, beside it


def sample_dataset_path() -> Path:
    """Folder of the bundled sample dataset (MSD layout, 3D MRI, labels background / Anterior / Posterior)."""
    path = Path(__file__).resolve().parent / "sample_data" / SAMPLE_NAME
    if not (path / "dataset.json").is_file():
        raise FileNotFoundError(f"the bundled sample is missing from {path}; reinstall tutorseg")
    return path


def sample_nnunet_reference() -> Path:
    """Folder of nnU-Net 2.8.1's own files for the bundled sample, as nnU-Net wrote them.

    ``dataset_fingerprint.json``, ``nnUNetPlans.json`` (the default planner) and ``nnUNetResEncUNetMPlans.json``
    (ResEnc M), made by ``nnUNetv2_extract_fingerprint`` and ``nnUNetv2_plan_experiment``; its ``README.md`` has the
    commands. Compare a plan of the sample with :func:`tutorseg.planning.compare_with_nnunet`.
    """
    path = Path(__file__).resolve().parent / "sample_data" / NNUNET_REFERENCE
    if not (path / "nnUNetPlans.json").is_file():
        raise FileNotFoundError(f"nnU-Net's plans of the bundled sample are missing from {path}; reinstall tutorseg")
    return path
