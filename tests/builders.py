"""Build small datasets in a temporary folder from REAL cases, to break one thing at a time.

Every dataset starts from real Task04_Hippocampus cases of the bundled sample (always present): files are copied
byte-for-byte, or re-saved with their own header (a v2 layout, a multi-channel stack, a 2D slice as PNG). A test then
corrupts exactly one thing (truncates a file, crops a label, writes a NaN) and checks that the inspection reports
it with the right code, case id and severity.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from tutorseg import sample_dataset_path

SAMPLE = sample_dataset_path()
LABELS_MSD = {"0": "background", "1": "Anterior", "2": "Posterior"}
LABELS_V2 = {"background": 0, "Anterior": 1, "Posterior": 2}


def sample_ids(n: int) -> list[str]:
    """The first ``n`` labelled case ids of the bundled sample whose labels are stored as integers."""
    ids = sorted(p.name.removesuffix(".nii.gz") for p in (SAMPLE / "labelsTr").glob("*.nii.gz"))
    ids = [i for i in ids if i != "hippocampus_003"]  # its float label is tested on purpose, elsewhere
    return ids[:n]


def write_json(root: Path, data: dict) -> None:
    (root / "dataset.json").write_text(json.dumps(data, indent=1), encoding="utf-8")


def read_json(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text(encoding="utf-8"))


def msd_dataset(root: Path, n: int = 3, *, ids: list[str] | None = None, test: int = 0) -> Path:
    """Medical Segmentation Decathlon layout: ``n`` real cases copied byte-for-byte, plus ``test`` test images."""
    ids = ids or sample_ids(n)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for case_id in ids:
        shutil.copyfile(SAMPLE / "imagesTr" / f"{case_id}.nii.gz", root / "imagesTr" / f"{case_id}.nii.gz")
        shutil.copyfile(SAMPLE / "labelsTr" / f"{case_id}.nii.gz", root / "labelsTr" / f"{case_id}.nii.gz")
    test_files = sorted((SAMPLE / "imagesTs").glob("*.nii.gz"))[:test]
    for path in test_files:
        shutil.copyfile(path, root / "imagesTs" / path.name)
    write_json(root, {
        "name": "Hippocampus", "modality": {"0": "MRI"}, "labels": LABELS_MSD,
        "numTraining": len(ids), "numTest": len(test_files),
        "training": [{"image": f"./imagesTr/{i}.nii.gz", "label": f"./labelsTr/{i}.nii.gz"} for i in ids],
        "test": [f"./imagesTs/{p.name}" for p in test_files],
    })
    return root


def v2_dataset(root: Path, n: int = 3, *, ids: list[str] | None = None) -> Path:
    """nnU-Net v2 layout: the same real cases, images renamed ``CASE_0000.nii.gz`` (bytes unchanged)."""
    ids = ids or sample_ids(n)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for case_id in ids:
        shutil.copyfile(SAMPLE / "imagesTr" / f"{case_id}.nii.gz", root / "imagesTr" / f"{case_id}_0000.nii.gz")
        shutil.copyfile(SAMPLE / "labelsTr" / f"{case_id}.nii.gz", root / "labelsTr" / f"{case_id}.nii.gz")
    write_json(root, {"name": "Hippocampus", "channel_names": {"0": "MRI"}, "labels": LABELS_V2,
                      "numTraining": len(ids), "file_ending": ".nii.gz"})
    return root


def second_channel(image: np.ndarray) -> np.ndarray:
    """A second "modality" derived from a real image: its intensities inverted within their range."""
    image = image.astype(np.float32)
    return image.max() - image


def v2_two_channel_dataset(root: Path, n: int = 2) -> Path:
    """nnU-Net v2 layout with two channel files per case (``_0000`` real, ``_0001`` derived from it)."""
    v2_dataset(root, n)
    for path in sorted((root / "imagesTr").glob("*_0000.nii.gz")):
        img = nib.load(str(path))
        save_nifti(second_channel(np.asanyarray(img.dataobj)), path.with_name(path.name.replace("_0000", "_0001")),
                   img)
    data = read_json(root)
    write_json(root, {**data, "channel_names": {"0": "MRI", "1": "MRI_inverted"}})
    return root


def msd_four_d_dataset(root: Path, n: int = 2) -> Path:
    """MSD multi-modal layout: each image a 4D NIfTI ``(x, y, z, 2)`` stacking a real image and a derived one."""
    msd_dataset(root, n)
    for path in sorted((root / "imagesTr").glob("*.nii.gz")):
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj).astype(np.float32)
        stacked = np.stack([data, second_channel(data)], axis=-1)
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        nib.save(nib.Nifti1Image(stacked, img.affine, header), str(path))
    data = read_json(root)
    write_json(root, {**data, "modality": {"0": "MRI", "1": "MRI_inverted"}})
    return root


def save_nifti(array: np.ndarray, path: Path, reference: nib.Nifti1Image, *, affine=None, zooms=None) -> Path:
    """Save ``array`` with the header of a real image (optionally another affine or voxel size)."""
    header = reference.header.copy()
    header.set_data_dtype(array.dtype)
    header.set_data_shape(array.shape)
    img = nib.Nifti1Image(array, reference.affine if affine is None else affine, header)
    if zooms is not None:
        img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


def load_nifti(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img


def middle_slice(volume: np.ndarray) -> np.ndarray:
    """The axial (last-axis) slice through the middle of a volume."""
    return volume[..., volume.shape[-1] // 2]


def to_uint8(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float64)
    low, high = image.min(), image.max()
    return np.round((image - low) / max(high - low, 1e-9) * 255).astype(np.uint8)


def png_dataset(root: Path, n: int = 3, *, mode: str = "L", channel_names: dict | None = None) -> Path:
    """nnU-Net v2 layout of 2D PNGs: the middle slice of real Hippocampus cases.

    Args:
        mode: ``"L"`` grey, ``"RGB"`` (the grey slice in R, its inverse in G, the slice again in B) or ``"RGBA"``
            (RGB + an opaque alpha channel).
        channel_names: dataset.json's channels (default: one "grey" channel for L, R/G/B for RGB and RGBA).
    """
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = sample_ids(n)
    for case_id in ids:
        image = to_uint8(middle_slice(load_nifti(SAMPLE / "imagesTr" / f"{case_id}.nii.gz")[0]))
        label = middle_slice(load_nifti(SAMPLE / "labelsTr" / f"{case_id}.nii.gz")[0]).astype(np.uint8)
        if mode == "L":
            pixels = image
        else:
            planes = [image, 255 - image, image] + ([np.full_like(image, 255)] if mode == "RGBA" else [])
            pixels = np.stack(planes, axis=-1)
        Image.fromarray(pixels).save(root / "imagesTr" / f"{case_id}_0000.png")
        Image.fromarray(label).save(root / "labelsTr" / f"{case_id}.png")
    default_channels = {"0": "grey"} if mode == "L" else {"0": "R", "1": "G", "2": "B"}
    write_json(root, {"name": "HippocampusSlices", "channel_names": channel_names or default_channels,
                      "labels": LABELS_V2, "numTraining": len(ids), "file_ending": ".png"})
    return root


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Cut a file to a fraction of its size, as an interrupted download or copy does."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path
