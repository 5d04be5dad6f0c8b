"""Datasets derived from REAL cases on which nnU-Net's GPU-memory estimate decides the plan.

The two shared datasets are too small for it: their patches are whole images and their batch sizes come from the
5 % dataset cap. These builders enlarge real cases (nearest-neighbour upsampling with ``np.repeat``, tiling), re-space
them (anisotropic slices) or re-pack them (two channels, RGB), a handful of cases each, in nnU-Net v2's raw layout
(``DatasetNNN_Name/imagesTr/CASE_0000.nii.gz``...), so that nnU-Net itself can plan them too.

``scripts/make_nnunet_plan_fixtures.py`` runs nnU-Net v2 on them and stores its plans in
``tests/data/nnunet_plans/``; ``tests/test_planning_nnunet.py`` rebuilds the same datasets and compares tutorseg's plan
with those fixtures. The builders are deterministic: the same real cases give the same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
from PIL import Image

from tutorseg import sample_dataset_path

SAMPLE = sample_dataset_path()
LABELS = {"background": 0, "Anterior": 1, "Posterior": 2}
# Cases of the bundled sample used here (integer labels; hippocampus_003's float label is tested elsewhere).
SAMPLE_IDS = ("hippocampus_001", "hippocampus_017", "hippocampus_035", "hippocampus_045")


def _load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _save_nifti(array: np.ndarray, path: Path, spacing) -> None:
    """A NIfTI with a plain diagonal affine (the voxel size), so SimpleITK and nibabel read the same spacing."""
    image = nib.Nifti1Image(array, np.diag([*[float(s) for s in spacing], 1.0]))
    image.header.set_data_dtype(array.dtype)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def _write_dataset_json(root: Path, name: str, channel_names: dict, n: int, ending: str) -> None:
    data = {"name": name, "channel_names": channel_names, "labels": LABELS, "numTraining": n, "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(data, indent=1), encoding="utf-8")


def _folders(root: Path) -> None:
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)


def _real_case(case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled Hippocampus case: image (x, y, z) uint8 and label (x, y, z) uint8."""
    return (_load(SAMPLE / "imagesTr" / f"{case_id}.nii.gz"),
            _load(SAMPLE / "labelsTr" / f"{case_id}.nii.gz").astype(np.uint8))


def _upsample(array: np.ndarray, factors) -> np.ndarray:
    """Nearest-neighbour upsampling by integer factors per axis."""
    for axis, factor in enumerate(factors):
        array = np.repeat(array, factor, axis=axis)
    return array


def hippocampus_upsampled(root: Path, *, name: str, n: int, factors, spacings,
                          channel_names: dict | None = None, case_ids=SAMPLE_IDS) -> Path:
    """Real Hippocampus cases upsampled by ``factors`` (x, y, z), each case with its own voxel size.

    Args:
        factors: integer upsampling factor per axis (x, y, z).
        spacings: one (x, y, z) voxel size per case, in mm (cycled when shorter than ``n``).
        channel_names: dataset.json's channels; a second channel (the image inverted) is written when two are named.
        case_ids: the bundled sample's cases to take the first ``n`` of.
    """
    channel_names = channel_names or {"0": "MRI"}
    _folders(root)
    for i, case_id in enumerate(case_ids[:n]):
        image, label = _real_case(case_id)
        image, label = _upsample(image, factors), _upsample(label, factors)
        spacing = spacings[i % len(spacings)]
        _save_nifti(image, root / "imagesTr" / f"{case_id}_0000.nii.gz", spacing)
        if len(channel_names) > 1:
            _save_nifti((255 - image).astype(np.uint8), root / "imagesTr" / f"{case_id}_0001.nii.gz", spacing)
        _save_nifti(label, root / "labelsTr" / f"{case_id}.nii.gz", spacing)
    _write_dataset_json(root, name, channel_names, n, ".nii.gz")
    return root


def hippocampus_rgb_slices(root: Path, *, name: str, n: int, factor: int) -> Path:
    """RGB PNGs (R: the slice, G: its inverse, B: the slice) of real Hippocampus middle slices, upsampled."""
    _folders(root)
    for case_id in SAMPLE_IDS[:n]:
        image, label = _real_case(case_id)
        middle = image.shape[2] // 2
        grey = _upsample(image[:, :, middle], (factor, factor)).astype(np.uint8)
        rgb = np.stack([grey, 255 - grey, grey], axis=-1)
        Image.fromarray(rgb, mode="RGB").save(root / "imagesTr" / f"{case_id}_0000.png")
        Image.fromarray(_upsample(label[:, :, middle], (factor, factor))).save(root / "labelsTr" / f"{case_id}.png")
    channels = {"0": "rgb_to_0_1", "1": "rgb_to_0_1", "2": "rgb_to_0_1"}
    _write_dataset_json(root, name, channels, n, ".png")
    return root


def isbi_tiled(root: Path, isbi_dir: Path, *, name: str, n: int, tiles: int) -> Path:
    """Real ISBI 2012 EM slices (512x512 grey PNGs), each tiled ``tiles`` x ``tiles`` into one larger image."""
    _folders(root)
    ids = sorted(p.name.removesuffix(".png") for p in (isbi_dir / "labelsTr").glob("*.png"))[:n]
    for case_id in ids:
        image = np.asarray(Image.open(isbi_dir / "imagesTr" / f"{case_id}_0000.png"))
        label = np.asarray(Image.open(isbi_dir / "labelsTr" / f"{case_id}.png"))
        Image.fromarray(np.tile(image, (tiles, tiles))).save(root / "imagesTr" / f"{case_id}_0000.png")
        Image.fromarray(np.tile(label, (tiles, tiles))).save(root / "labelsTr" / f"{case_id}.png")
    data = json.loads((isbi_dir / "dataset.json").read_text(encoding="utf-8"))
    (root / "dataset.json").write_text(json.dumps({
        "name": name, "channel_names": data["channel_names"], "labels": data["labels"], "numTraining": len(ids),
        "file_ending": ".png"}, indent=1), encoding="utf-8")
    return root


def hippocampus_anisotropic(root: Path, *, n: int = 10, in_plane: int = 5) -> Path:
    """Real Hippocampus cases re-sampled like clinical brain MRI: fine in-plane pixels, thicker slices, 3 channels.

    The shape of the data in issue #18's first row (a 4-channel brain MRI with slices much thicker than its pixels
    and large in-plane images), built from the bundled sample's first ``n`` cases, since no such public dataset is
    here: the x and y axes upsampled ``in_plane`` times (nearest neighbour: 1/in_plane mm pixels, ~175 x 250), the
    1 mm slices kept (35 of them), so the slices are ``in_plane`` times thicker than the pixels (anisotropic for
    nnU-Net from 3x). Channels by intensity transforms of the image: the image, its inverse, its square root (as
    T1 / T2 / FLAIR differ in brightness, not in anatomy).
    """
    channel_names = {"0": "T1", "1": "T2", "2": "FLAIR"}
    _folders(root)
    case_ids = sorted(p.name.removesuffix(".nii.gz") for p in (SAMPLE / "labelsTr").glob("*.nii.gz"))[:n]
    spacing = (1.0 / in_plane, 1.0 / in_plane, 1.0)
    for case_id in case_ids:
        image, label = _real_case(case_id)
        image = _upsample(image, (in_plane, in_plane, 1)).astype(np.float32)
        label = _upsample(label, (in_plane, in_plane, 1))
        channels = (image, image.max() - image, np.sqrt(image))
        for c, channel in enumerate(channels):
            _save_nifti(channel.astype(np.float32), root / "imagesTr" / f"{case_id}_{c:04d}.nii.gz", spacing)
        _save_nifti(label, root / "labelsTr" / f"{case_id}.nii.gz", spacing)
    _write_dataset_json(root, "HippocampusAnisotropic", channel_names, len(case_ids), ".nii.gz")
    return root


@dataclass(frozen=True)
class DerivedDataset:
    """One derived dataset: its nnU-Net folder name, what it tests, and how to build it.

    Attributes:
        folder: ``DatasetNNN_Name`` (nnU-Net's raw folder name; the fixture file is ``<folder>.json``).
        what: what about the plan it exercises.
        build: ``build(root, isbi_dir)`` writes the dataset into ``root`` (an empty folder) and returns it.
        needs_isbi: built from the shared ISBI data (skipped without it) rather than the bundled sample.
    """

    folder: str
    what: str
    build: Callable[[Path, Path | None], Path]
    needs_isbi: bool = False


DERIVED = (
    DerivedDataset(
        "Dataset901_HippoIso4",
        "3 cases upsampled x4 (~140x200x140 voxels, 0.25 mm): the memory estimate shrinks the 3d_fullres patch",
        lambda root, _: hippocampus_upsampled(root, name="HippoIso4", n=3, factors=(4, 4, 4),
                                              spacings=[(0.25, 0.25, 0.25)])),
    DerivedDataset(
        "Dataset902_HippoLarge",
        "2 cases upsampled x6 (~210x300x210 voxels): the fullres patch covers < 25 %, so 3d_lowres is searched, "
        "then dropped (its images would be less than 2x smaller)",
        lambda root, _: hippocampus_upsampled(root, name="HippoLarge", n=2, factors=(6, 6, 6),
                                              spacings=[(0.2, 0.2, 0.2)])),
    DerivedDataset(
        "Dataset903_HippoAniso",
        "4 cases upsampled x6 in-plane only (~210x300x42), slices 1.0-1.6 mm vs 0.2 mm in-plane: anisotropic target "
        "spacing (10th percentile), kernels 1 along z, the memory estimate shrinks the 3d_fullres patch",
        lambda root, _: hippocampus_upsampled(root, name="HippoAniso", n=4, factors=(6, 6, 1),
                                              spacings=[(0.2, 0.2, 1.0), (0.2, 0.2, 1.2),
                                                        (0.2, 0.2, 1.6), (0.2, 0.2, 1.4)])),
    DerivedDataset(
        "Dataset904_HippoTwoChannel",
        "2 cases upsampled x4 with two channels named CT and noNorm: per-channel schemes, memory-limited patch",
        lambda root, _: hippocampus_upsampled(root, name="HippoTwoChannel", n=2, factors=(4, 4, 4),
                                              spacings=[(0.5, 0.5, 0.5)], channel_names={"0": "CT", "1": "noNorm"})),
    DerivedDataset(
        "Dataset905_HippoRGB",
        "2 RGB PNGs of middle slices upsampled x40 (~1400x2000): 2D data, rgb_to_0_1, memory-limited 2d patch",
        lambda root, _: hippocampus_rgb_slices(root, name="HippoRGB", n=2, factor=40)),
    DerivedDataset(
        "Dataset906_IsbiTiled",
        "3 ISBI slices tiled 3x3 (1536x1536): the 2d patch shrinks from the median image to fit 8 GB",
        lambda root, isbi: isbi_tiled(root, isbi, name="IsbiTiled", n=3, tiles=3),
        needs_isbi=True),
    DerivedDataset(
        "Dataset907_HippoHuge",
        "1 case upsampled x8 (~280x400x280 voxels): the fullres patch covers < 13 %, so 3d_lowres + cascade",
        lambda root, _: hippocampus_upsampled(root, name="HippoHuge", n=1, factors=(8, 8, 8),
                                              spacings=[(0.125, 0.125, 0.125)])),
)
