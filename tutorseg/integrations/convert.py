"""Turn your own images and masks into a dataset: two folders in, an nnU-Net v2 dataset folder out.

The input is what people usually have: a folder of images and a folder of masks, NIfTI or PNG/TIFF, a mask
named like its image (``liver_03.nii.gz`` and ``liver_03.nii.gz``, or ``cell7.png`` and ``cell7_mask.png``). The
output is the nnU-Net v2 layout every tutorseg step (and nnU-Net itself) reads::

    Dataset501_MyCells/
        dataset.json          {"channel_names": {"0": "image"}, "labels": {"background": 0, "class_1": 1},
                               "numTraining": 30, "file_ending": ".png"}
        imagesTr/CASE_0000.png    (the channel suffix _0000: nnU-Net's naming, one file per channel)
        labelsTr/CASE.png
        imagesTs/CASE_0000.png    images that had no mask

Masks are read as label maps: integer class values, 0 for background. A mask saved as 0/255 (black and white,
the usual export of drawing tools) becomes 0/1, and a mask with a few grey levels (0/128/255) becomes 0/1/2, each
with a note in the result. Notebook 05 uses this module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tutorseg.data.files import atomic_folder, write_json_atomic
from tutorseg.data.imageio import (
    IMAGE_2D_ENDINGS,
    ITK_ENDINGS,
    NIFTI_ENDINGS,
    file_ending,
    image_files_by_stem,
    is_2d_format,
    is_tiff_stack,
    read_geometry,
    read_image,
    spacing_sidecar,
    write_segmentation,
)
from tutorseg.data.problems import TutorsegError
from tutorseg.evaluation.instances import BORDER, INTERIOR, border_classes

# suffixes that tell a mask's file name from its image's: "cell7_mask.png" belongs to "cell7.png"
MASK_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_seg", "_segmentation", "_gt", "-mask", "-label", "_0000")
# mask values of 8-bit drawing tools that mean "foreground"
BINARY_WHITE = 255


class ConversionError(TutorsegError):
    """The folders cannot be turned into a dataset; the message lists every file concerned and what to do."""


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_folders` made.

    Attributes:
        dataset_dir: the new dataset folder.
        n_training: image/mask pairs written to ``imagesTr``/``labelsTr``.
        n_test: images without a mask, written to ``imagesTs``.
        labels: label name -> value written to ``dataset.json``.
        value_map: {value in the mask files: class value written} for the values that changed (``{255: 1}``).
        notes: what was done that a user should know (value conversions, unmatched files).
    """

    dataset_dir: Path
    n_training: int
    n_test: int
    labels: dict[str, int]
    value_map: dict[int, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"dataset folder: {self.dataset_dir.name} ({self.n_training} training cases, {self.n_test} test images)",
                 f"labels: {self.labels}"]
        return "\n".join(lines + [f"note: {note}" for note in self.notes])

    def __repr__(self) -> str:
        return f"ConversionResult({self.dataset_dir.name!r}, training={self.n_training}, test={self.n_test})"

    def _repr_html_(self) -> str:
        notes = "".join(f"<li>{n}</li>" for n in self.notes)
        return (f"<b>ConversionResult</b> <code>{self.dataset_dir.name}</code>: {self.n_training} training cases, "
                f"{self.n_test} test images; labels <code>{self.labels}</code>" + (f"<ul>{notes}</ul>" if notes else ""))


# --------------------------------------------------------------------------------------------------- matching


def _case_key(stem: str) -> str:
    """The name a mask and its image share: the stem without a mask suffix or nnU-Net's ``_0000``."""
    lowered = stem.lower()
    for suffix in MASK_SUFFIXES:
        if lowered.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def match_files(images_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> tuple[dict, list[Path], list[Path]]:
    """Pair images with masks by name.

    Returns:
        ``({case_id: (image, mask)}, images without a mask, masks without an image)``.

    Raises:
        ConversionError: a folder is missing or empty, or two files map to the same case name.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for what, folder in (("images", images_dir), ("masks", masks_dir)):
        if not folder.is_dir():
            raise ConversionError(f"the {what} folder {folder} does not exist")
    images, masks = image_files_by_stem(images_dir), image_files_by_stem(masks_dir)
    if not images:
        raise ConversionError(f"no images in {images_dir}: expected .nii.gz, .nii, .png or .tif files")
    by_key: dict[str, dict[str, Path]] = {"image": {}, "mask": {}}
    for kind, files in (("image", images), ("mask", masks)):
        for stem, path in files.items():
            key = _case_key(stem)
            if key in by_key[kind]:
                raise ConversionError(f"{by_key[kind][key].name} and {path.name} both look like the {kind} of case "
                                      f"'{key}'; rename one of them")
            by_key[kind][key] = path
    pairs = {key: (path, by_key["mask"][key]) for key, path in by_key["image"].items() if key in by_key["mask"]}
    lonely_images = [p for key, p in by_key["image"].items() if key not in by_key["mask"]]
    lonely_masks = [p for key, p in by_key["mask"].items() if key not in by_key["image"]]
    return pairs, lonely_images, lonely_masks


# --------------------------------------------------------------------------------------------------- masks


def value_map(values: set[int]) -> dict[int, int]:
    """Decide, for the whole dataset, which class value each mask value becomes.

    Decided over all masks at once, so that a case in which class 1 is absent keeps its class 2 as 2:

    - values already 0, 1, 2, ... (consecutive from 0 over the dataset): kept (empty map);
    - 0/255 (binary masks from a drawing tool): 255 -> 1;
    - other sets (0/128/255, 0/10/20): the k-th smallest value -> k (0 stays background).

    Args:
        values: every value found in the masks.

    Returns:
        ``{old value: new value}`` for the values that change.
    """
    values = set(values) | {0}
    if values == set(range(max(values) + 1)):
        return {}
    if values == {0, BINARY_WHITE}:
        return {BINARY_WHITE: 1}
    return {old: new for new, old in enumerate(sorted(values)) if old != new}


def mask_values(mask: np.ndarray, *, case_id: str = "") -> set[int]:
    """The class values of a mask as read from a file.

    Raises:
        ConversionError: non-integer or negative values (a probability map, a smoothed or JPEG-compressed mask).
    """
    mask = np.asarray(mask)
    if mask.dtype.kind == "f":
        if not np.all(np.isfinite(mask)) or not np.array_equal(mask, np.round(mask)):
            raise ConversionError(f"case {case_id}: the mask holds non-integer values (a probability map or a "
                                  "smoothed image?); save masks as integer class values")
    values = {int(v) for v in np.unique(mask)}
    if values and min(values) < 0:
        raise ConversionError(f"case {case_id}: the mask holds negative values {sorted(values)[:5]}; "
                              "class values are 0 (background), 1, 2, ...")
    return values


def mask_to_labels(mask: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Apply a :func:`value_map` to a mask: ``(*spatial)`` -> ``(*spatial)`` uint8 (int16 beyond 255 classes)."""
    mask = np.asarray(mask).astype(np.int64)
    if mapping:
        lookup = np.arange(max(int(mask.max(initial=0)), max(mapping)) + 1)
        for old, new in mapping.items():
            lookup[old] = new
        mask = lookup[mask]
    return mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.int16)


def _read_mask(path: Path, case_id: str) -> np.ndarray:
    array = read_image(path).array
    if array.shape[0] == 3 and np.array_equal(array[0], array[1]) and np.array_equal(array[0], array[2]):
        array = array[:1]  # a grey mask saved as RGB
    if array.shape[0] != 1:
        raise ConversionError(f"case {case_id}: the mask {path.name} has {array.shape[0]} colour channels with "
                              "different values; save masks as single-channel (grey) images of class values")
    return array[0]


# --------------------------------------------------------------------------------------------------- the dataset


def _case_names(keys: list[str], case_ids: str | None) -> dict[str, str]:
    """Shared file name -> case name, through the ``case_ids`` format; the names must stay distinct."""
    if case_ids is None:
        return {key: key for key in keys}
    try:
        names = {key: case_ids.format(stem=key) for key in keys}
    except (KeyError, IndexError, ValueError) as exc:
        raise ConversionError(f"case_ids {case_ids!r} is not a format with {{stem}} ({exc}); "
                              "e.g. 'case_{stem}' or 'isbi2012_{stem:0>3}'") from None
    if len(set(names.values())) < len(names):
        raise ConversionError(f"case_ids {case_ids!r} gives two files the same case name; include {{stem}}")
    return names


def _output_ending(path: Path) -> str:
    ending = file_ending(path)
    return ".png" if ending in IMAGE_2D_ENDINGS and is_2d_format(path) else ending  # TIFF stacks stay TIFF


def _copy_image(source: Path, target: Path) -> None:
    """Copy an image, converting 2D formats to PNG (what nnU-Net's 2D reader expects)."""
    if is_tiff_stack(source):  # the stack and its spacing file
        shutil.copyfile(source, target)
        if spacing_sidecar(source).is_file():
            shutil.copyfile(spacing_sidecar(source), spacing_sidecar(target))
        return
    if file_ending(source) in NIFTI_ENDINGS + ITK_ENDINGS or file_ending(source) == ".png":
        shutil.copyfile(source, target)
        return
    from PIL import Image

    Image.open(source).save(target)


def convert_folders(images_dir: str | os.PathLike, masks_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                    name: str = "Dataset500_MyData", channel_names: Mapping[int, str] | None = None,
                    labels: Mapping[str, int] | None = None, overwrite: bool = False,
                    value_mapping: Mapping[int, int] | None = None, case_ids: str | None = None,
                    description: str | None = None, instances: bool = False,
                    border_width: int = 1) -> ConversionResult:
    """Turn a folder of images and a folder of masks into an nnU-Net v2 dataset folder ``out_dir/name``.

    Images and masks are matched by name (:func:`match_files`); images without a mask go to ``imagesTs``. Masks
    are converted to consecutive class values (:func:`value_map`, decided over all masks) and must have their image's
    shape.

    An images folder holding one sub-folder per case, each with a DICOM series, is read first: every series becomes
    a NIfTI volume with the geometry of its slices (:mod:`tutorseg.integrations.dicom`), named like its folder, and
    the masks are matched to the folder names. Every folder that cannot be read is reported at once.

    Args:
        images_dir: folder of images (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.png``, ``.tif``), one file per
            case; or a folder of DICOM series, one sub-folder per case.
        masks_dir: folder of masks named like the images (optionally with ``_mask``, ``_label``, ``_seg``...).
        out_dir: where to create the dataset folder.
        name: the dataset folder's name; nnU-Net wants ``Dataset500_Name`` with a three-digit id.
        channel_names: channel index -> name; ``None``: ``{0: "image"}`` (``{0: "R", 1: "G", 2: "B"}`` for colour
            images). The name chooses the normalisation: ``"CT"`` gets CT clipping, anything else z-scoring.
        labels: label name -> value; ``None``: ``background`` and ``class_1``, ``class_2``... for the values found.
        overwrite: replace an existing dataset folder of that name.
        value_mapping: ``{mask value: class value}`` for every value the masks hold, instead of the automatic
            :func:`value_map`; e.g. ``{0: 1, 255: 0}`` where black (0) marks the structure, as in ISBI 2012's
            membrane masks.
        case_ids: a format for the case names, with ``{stem}`` the shared file name (``"isbi2012_{stem:0>3}"``
            turns ``7.png`` into ``isbi2012_007``); ``None``: the file name itself.
        description: the ``description`` written into ``dataset.json``.
        instances: the masks are instance maps (``instancesTr`` style: 0 background, each object its own
            integer). The labels become background / interior / border (0 / 1 / 2,
            :func:`~tutorseg.evaluation.instances.border_classes`), so that a network learns to separate touching
            objects; the instance maps are kept in ``instancesTr/``, and ``dataset.json`` records both
            (``"instances"``), from which ``tutorseg evaluate`` scores instances by default.
        border_width: with ``instances``: how many voxels deep each object's border class reaches.

    Returns:
        a :class:`ConversionResult`. Check the new folder with :func:`tutorseg.inspect_dataset`.

    Raises:
        ConversionError: listing every unusable file (mask without image, shape mismatch, bad mask values),
            or the output folder exists and ``overwrite`` is False.
    """
    from tutorseg.integrations import dicom

    if Path(images_dir).is_dir() and dicom.holds_case_folders(images_dir):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tutorseg-dicom-", dir=out_dir) as volumes:
            try:
                written, problems = dicom.series_to_nifti(images_dir, volumes)
            except dicom.DicomError as exc:
                raise ConversionError(str(exc)) from None
            if problems:
                raise ConversionError(f"{len(problems)} DICOM case folder(s) cannot be converted:\n  "
                                      + "\n  ".join(problems))
            result = convert_folders(volumes, masks_dir, out_dir, name=name, channel_names=channel_names,
                                     labels=labels, overwrite=overwrite, value_mapping=value_mapping,
                                     case_ids=case_ids, description=description or (
                                         f"converted by tutorseg.integrations.convert from the DICOM series in "
                                         f"{Path(images_dir).name}/ and the masks in {Path(masks_dir).name}/"))
        note = f"{len(written)} DICOM series read as volumes (spacing, origin and direction from the slices' tags)"
        return replace(result, notes=(note, *result.notes))
    pairs, lonely_images, lonely_masks = match_files(images_dir, masks_dir)
    if not pairs:
        raise ConversionError(f"no image in {images_dir} has a mask of the same name in {masks_dir}; "
                              "name each mask like its image (cell7.png and cell7.png or cell7_mask.png)")
    target = Path(out_dir) / name
    if target.exists() and not overwrite:
        raise ConversionError(f"{target} already exists; choose another name or pass overwrite=True")
    endings = {_output_ending(image) for image, _ in pairs.values()} | {_output_ending(p) for p in lonely_images}
    if len(endings) > 1:
        raise ConversionError(f"the images mix file types {sorted(endings)}; convert them all to one type")
    ending = endings.pop()

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    problems, values_seen, n_channels = [], set(), None
    for case_id, (image_path, mask_path) in sorted(pairs.items()):  # first pass: check every pair, collect values
        geometry = read_geometry(image_path)  # header only
        n_channels = n_channels or geometry.n_channels
        try:
            mask = _read_mask(mask_path, case_id)
            if mask.shape != geometry.shape:
                raise ConversionError(f"case {case_id}: the mask {mask_path.name} has shape {mask.shape}, its image "
                                      f"{image_path.name} {geometry.shape}; masks must cover their image voxel for voxel")
            values_seen |= mask_values(mask, case_id=case_id)
        except ConversionError as exc:
            problems.append(str(exc))
    if instances and (value_mapping is not None or labels is not None):
        problems.append("instance masks become the classes background, interior and border: give neither "
                        "value_mapping nor labels with instances=True")
    if value_mapping is not None:
        unmapped = sorted(values_seen - set(value_mapping))
        if unmapped:
            problems.append(f"the masks hold values {unmapped} that value_mapping {dict(value_mapping)} does not map")
    if problems:
        raise ConversionError(f"{len(problems)} case(s) cannot be converted:\n  " + "\n  ".join(problems))
    if instances:
        mapping = {}
    elif value_mapping is None:
        mapping = value_map(values_seen)
    else:
        mapping = {int(old): int(new) for old, new in value_mapping.items() if int(old) != int(new)}
    names = _case_names(list(pairs) + [_case_key(p.name[: -len(file_ending(p))]) for p in lonely_images], case_ids)

    n_objects = 0
    with atomic_folder(target) as staging:
        for folder in ("imagesTr", "labelsTr", "imagesTs") + (("instancesTr",) if instances else ()):
            (staging / folder).mkdir()
        for key, (image_path, mask_path) in sorted(pairs.items()):  # second pass: write
            case_id = names[key]
            _copy_image(image_path, staging / "imagesTr" / f"{case_id}_0000{ending}")
            mask = _read_mask(mask_path, key)
            reference = None if ending == ".png" else image_path
            if instances:
                write_segmentation(mask, staging / "instancesTr" / f"{case_id}{ending}", reference=reference)
                classes = border_classes(mask, width=border_width)
                n_objects += int(np.count_nonzero(np.unique(mask)))  # the ids but 0
            else:
                classes = mask_to_labels(mask, mapping)
            write_segmentation(classes, staging / "labelsTr" / f"{case_id}{ending}", reference=reference)
        for image_path in lonely_images:
            case_id = names[_case_key(image_path.name[: -len(file_ending(image_path))])]
            _copy_image(image_path, staging / "imagesTs" / f"{case_id}_0000{ending}")

        if instances:
            labels = {"background": 0, "interior": INTERIOR, "border": BORDER}
        elif labels is None:
            new_values = {mapping.get(v, v) for v in values_seen} - {0}
            labels = {"background": 0, **{f"class_{v}": v for v in sorted(new_values)}}
        if channel_names is None:
            channel_names = ({0: "R", 1: "G", 2: "B"} if n_channels == 3
                             else {c: "image" for c in range(n_channels or 1)})
        meta = {"channel_names": {str(k): v for k, v in channel_names.items()}, "labels": dict(labels),
                "numTraining": len(pairs), "file_ending": ending,
                "description": description or f"converted by tutorseg.integrations.convert from "
                                              f"{Path(images_dir).name}/ and {Path(masks_dir).name}/"}
        if instances:  # nnU-Net ignores keys it does not know
            meta["instances"] = {"folder": "instancesTr", "interior_label": INTERIOR, "border_label": BORDER,
                                 "border_width": int(border_width)}
        write_json_atomic(staging / "dataset.json", meta)

    notes = []
    if instances:
        notes.append(f"instance masks ({n_objects} objects): labels background 0 / interior 1 / border 2 (borders "
                     f"{border_width} voxel(s) deep), the instance maps kept in instancesTr/")
    if mapping:
        notes.append(f"mask values changed to class values {mapping} (old: new)"
                     + ("; 0/255 masks become 0/1, as nnU-Net needs consecutive classes" if mapping == {255: 1} else ""))
    if lonely_images:
        notes.append(f"{len(lonely_images)} image(s) without a mask went to imagesTs: "
                     + ", ".join(p.name for p in lonely_images[:5]))
    if lonely_masks:
        notes.append(f"{len(lonely_masks)} mask(s) without an image were left out: "
                     + ", ".join(p.name for p in lonely_masks[:5]))
    return ConversionResult(target, len(pairs), len(lonely_images), dict(labels), mapping, tuple(notes))


def make_example_folders(out_dir: str | os.PathLike, *, n_cases: int | None = None,
                         source: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/images`` and ``out_dir/masks`` from a dataset's training cases, as a user's folders look.

    Notebook 05 uses it to have something to convert when you have not given your own folders: images keep their
    names, masks get a ``_mask`` suffix.

    Args:
        out_dir: where to create ``images/`` and ``masks/``.
        n_cases: how many training cases (default: all).
        source: the dataset to take them from (default: the bundled sample).

    Returns:
        ``(images folder, masks folder)``.
    """
    from tutorseg.data.dataset import load_dataset
    from tutorseg.data.sample import sample_dataset_path

    dataset = load_dataset(source or sample_dataset_path())
    images, masks = Path(out_dir) / "images", Path(out_dir) / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for case in dataset.training[:n_cases]:
        assert case.label_file is not None  # training cases are labelled
        ending = file_ending(case.image_files[0])
        shutil.copyfile(case.image_files[0], images / f"{case.case_id}{ending}")
        shutil.copyfile(case.label_file, masks / f"{case.case_id}_mask{file_ending(case.label_file)}")
    return images, masks
