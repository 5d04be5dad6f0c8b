"""The dataset layer: find the cases of a dataset folder, whatever its flavour, and load them lazily.

Two raw layouts are read (``docs/datasets.md`` describes both with examples):

nnU-Net v2 (``Dataset004_Hippocampus``)::

    dataset.json        {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, ...},
                         "numTraining": 208, "file_ending": ".nii.gz"}
    imagesTr/CASE_0000.nii.gz   one file per channel, numbered _0000, _0001, ...
    labelsTr/CASE.nii.gz
    imagesTs/CASE_0000.nii.gz   optional, unlabelled

Medical Segmentation Decathlon / nnU-Net v1 (``Task04_Hippocampus``)::

    dataset.json        {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "Anterior", ...},
                         "training": [{"image": "./imagesTr/CASE.nii.gz", "label": "./labelsTr/CASE.nii.gz"}],
                         "test": ["./imagesTs/CASE.nii.gz"]}
    imagesTr/CASE.nii.gz        no channel suffix; several channels are the 4th axis of one NIfTI

:func:`load_dataset` never stops at the first problem: whatever is wrong with the folder's structure is collected
in :attr:`Dataset.problems`, and :func:`tutorseg.inspect_dataset` adds what it finds inside the files.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tutorseg.data import problems as P
from tutorseg.data.imageio import (
    IMAGE_2D_ENDINGS,
    NIFTI_ENDINGS,
    SUPPORTED_ENDINGS,
    Geometry,
    file_ending,
    is_2d_format,
    read_geometry,
    read_image,
)
from tutorseg.data.limits import MAX_LABEL_VALUE, FileLimitError, read_json_file
from tutorseg.data.problems import DatasetError, Problem

LAYOUT_NNUNETV2 = "nnunetv2"
LAYOUT_MSD = "msd"

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def split_channel_suffix(stem: str) -> tuple[str, int] | None:
    """``(case id, channel)`` of a file name without its ending, by nnU-Net v2's ``CASE_0000`` naming, else ``None``.

    >>> split_channel_suffix("BRATS_001_0003")
    ('BRATS_001', 3)
    >>> split_channel_suffix("hippocampus_001") is None
    True
    """
    match = _CHANNEL_SUFFIX.match(stem)
    return (match["case"], int(match["channel"])) if match else None


def _is_junk(name: str) -> bool:
    """macOS resource forks (``._x.nii.gz``, shipped inside the MSD tar files) and other hidden files."""
    return name.startswith(".") or name in {"Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class Case:
    """One case: an image (one or more channel files) and, for training cases, its label map.

    Nothing is read until asked for: :meth:`geometry` reads headers only, :meth:`load_image` and
    :meth:`load_label` read voxels.

    Attributes:
        case_id: the identifier shared by the case's files (``"hippocampus_001"``).
        image_files: channel files in channel order (``CASE_0000``, ``CASE_0001``...), or the single MSD file.
        label_file: the label map, or ``None`` for an unlabelled (test) case.
        spacing_2d: spacing to use for 2D image formats, which store none (default 1.0 per axis).
    """

    case_id: str
    image_files: tuple[Path, ...]
    label_file: Path | None = None
    spacing_2d: tuple[float, ...] | None = None

    @property
    def has_label(self) -> bool:
        return self.label_file is not None

    def geometry(self) -> Geometry:
        """Geometry of the image from its headers: the first channel file's, with the channels of all files."""
        geometries = [read_geometry(f, spacing_2d=self.spacing_2d) for f in self.image_files]
        first = geometries[0]
        notes = tuple(note for g in geometries for note in g.notes)
        return Geometry(first.shape, sum(g.n_channels for g in geometries), first.spacing, first.affine,
                        first.dtype, notes)

    def label_geometry(self) -> Geometry:
        if self.label_file is None:
            raise DatasetError(f"case {self.case_id} has no label file")
        return read_geometry(self.label_file, spacing_2d=self.spacing_2d)

    def load_image(self, dtype=np.float32) -> np.ndarray:
        """All channels stacked: ``(C, *spatial)``, converted to ``dtype`` (float32 by default).

        Raises:
            DatasetError: channel files of different shapes.
            ImageReadError: a file is missing, truncated or corrupt.
        """
        arrays = [read_image(f, spacing_2d=self.spacing_2d).array for f in self.image_files]
        for file, array in zip(self.image_files, arrays):
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                raise DatasetError(f"case {self.case_id}: {file.name} holds {array.size - np.isfinite(array).sum():,} "
                                   "NaN/Inf voxel(s), which would make every prediction and network weight NaN. "
                                   "Replace them with a value that means 'nothing' for this image (e.g. "
                                   "np.nan_to_num(image, nan=image_min)) and save the file again.")
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) > 1:
            found = ", ".join(f"{f.name}: {a.shape[1:]}" for f, a in zip(self.image_files, arrays))
            raise DatasetError(f"case {self.case_id}: channel files have different shapes ({found}); "
                               "resample all channels of a case onto the same grid")
        return np.concatenate([a.astype(dtype, copy=False) for a in arrays], axis=0)

    def load_label(self) -> np.ndarray:
        """The label map, ``(*spatial)`` int16. Float-typed labels with integral values are converted.

        Raises:
            DatasetError: the case has no label, or the label holds non-integer values.
        """
        if self.label_file is None:
            raise DatasetError(f"case {self.case_id} has no label file")
        raw = read_image(self.label_file, spacing_2d=self.spacing_2d).array
        if raw.shape[0] != 1:
            raise DatasetError(f"case {self.case_id}: the label {self.label_file.name} has {raw.shape[0]} channels; "
                               "a label map must be a single-channel image of integer class values")
        raw = raw[0]
        if raw.dtype.kind == "f":
            if not np.all(np.isfinite(raw)) or not np.array_equal(raw, np.round(raw)):
                raise DatasetError(f"case {self.case_id}: the label {self.label_file.name} holds non-integer values; "
                                   "save labels as integer class indices (0, 1, 2, ...)")
        if raw.size and (raw.min() < 0 or raw.max() > MAX_LABEL_VALUE):
            raise DatasetError(f"case {self.case_id}: the label {self.label_file.name} holds values from {raw.min():g} "
                               f"to {raw.max():g}; label maps hold class indices 0..{MAX_LABEL_VALUE}, as dataset.json "
                               "numbers them. Save the labels as those indices.")
        return raw.astype(np.int16)

    def __repr__(self) -> str:
        files = ", ".join(f.name for f in self.image_files)
        label = self.label_file.name if self.label_file else "no label"
        return f"Case({self.case_id!r}: {files} | {label})"


@dataclass(frozen=True)
class Dataset:
    """A dataset folder, read: its description and its cases.

    Attributes:
        root: the dataset folder.
        name: a display name (``dataset.json``'s ``name``, else the folder name).
        layout: ``"nnunetv2"`` or ``"msd"``.
        channel_names: channel index -> name (``{0: "MRI"}``); nnU-Net picks the normalisation from the name.
        labels: label name -> integer value, background first (``{"background": 0, "Anterior": 1, ...}``). For
            region-based labels: the values the label files hold (see :func:`parse_regions`).
        file_ending: ``".nii.gz"``, ``".png"``...
        training: labelled cases, sorted by id.
        test: unlabelled cases (``imagesTs``), sorted by id.
        problems: structural problems found while reading the folder (missing files, malformed dataset.json...).
        metadata: the raw ``dataset.json``.
        regions: nnU-Net's region-based labels, region name -> label values (empty for plain labels).
        regions_class_order: the value prediction writes for each region, in order (empty for plain labels).
    """

    root: Path
    name: str
    layout: str
    channel_names: dict[int, str]
    labels: dict[str, int]
    file_ending: str
    training: tuple[Case, ...]
    test: tuple[Case, ...] = ()
    problems: tuple[Problem, ...] = ()
    metadata: dict = field(default_factory=dict, repr=False)
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    regions_class_order: tuple[int, ...] = ()

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(sorted(self.labels.values()))

    @property
    def foreground_labels(self) -> dict[str, int]:
        return {name: value for name, value in self.labels.items() if value != 0}

    @property
    def targets(self) -> dict[str, tuple[int, ...]]:
        """What a network learns and evaluation scores: the regions, or each foreground label (not ``ignore``)."""
        if self.regions:
            return dict(self.regions)
        return {name: (value,) for name, value in self.foreground_labels.items() if name != IGNORE_LABEL}

    @property
    def is_2d_format(self) -> bool:
        """True for PNG/TIFF datasets of single 2D slices (a dataset of multi-page TIFF stacks is 3D)."""
        if self.file_ending not in IMAGE_2D_ENDINGS:
            return False
        first = next((c.image_files[0] for c in self.training + self.test), None)
        return first is None or is_2d_format(first)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is P.Severity.ERROR)

    def case(self, case_id: str) -> Case:
        for case in self.training + self.test:
            if case.case_id == case_id:
                return case
        raise KeyError(f"no case {case_id!r} in {self.name}; cases are e.g. "
                       f"{', '.join(c.case_id for c in self.training[:3])}")

    def relative(self, path: Path | None) -> str | None:
        """A path relative to the dataset folder, for messages that do not reveal a user's home folder."""
        if path is None:
            return None
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, layout={self.layout}, {len(self.training)} training + "
                f"{len(self.test)} test cases, channels={list(self.channel_names.values())}, "
                f"labels={self.labels}, problems={len(self.problems)})")


# --------------------------------------------------------------------------------------------------- dataset.json


def _read_json(path: Path, found: list[Problem]) -> dict:
    if not path.is_file():
        found.append(P.error(
            "missing_dataset_json", "dataset.json not found in the dataset folder",
            why="dataset.json names the channels and labels; without it tutorseg cannot tell which files belong together",
            fix='write a dataset.json: {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, '
                '"numTraining": N, "file_ending": ".nii.gz"} (see docs/datasets.md)',
            file="dataset.json"))
        return {}
    try:
        data = read_json_file(path)
    except FileLimitError as exc:
        found.append(P.error("malformed_dataset_json", str(exc), why="nothing in the dataset can be interpreted "
                             "without it", fix="write a dataset.json as docs/datasets.md shows", file="dataset.json"))
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        found.append(P.error("malformed_dataset_json", f"dataset.json is not valid JSON ({exc})",
                             why="nothing in the dataset can be interpreted without it",
                             fix="fix the syntax at the position given (a trailing comma or a missing quote is typical)",
                             file="dataset.json"))
        return {}
    if not isinstance(data, dict):
        found.append(P.error("malformed_dataset_json", "dataset.json must hold a JSON object ({...})",
                             why="tutorseg reads channels, labels and files from its keys",
                             fix="wrap the content in {...} with the keys channel_names, labels, numTraining, "
                                 "file_ending", file="dataset.json"))
        return {}
    return data


def _bad_key(key: str, expected: str, found_value, fix: str = "") -> Problem:
    shown = json.dumps(found_value)[:80] if found_value is not None else "nothing"
    return P.error("malformed_dataset_json",
                   f"dataset.json key '{key}': expected {expected}, found {shown}",
                   why="tutorseg reads channels, labels and files from these keys",
                   fix=fix or f"set '{key}' to {expected}", file="dataset.json")


def _parse_index_dict(data: dict, key: str, found: list[Problem]) -> dict[int, str]:
    """``{"0": "MRI", "1": "T2"}`` -> ``{0: "MRI", 1: "T2"}``, checking the indices are 0..N-1."""
    raw = data.get(key)
    expected = '{"0": "name", "1": "name", ...} (channel index -> name)'
    if not isinstance(raw, dict) or not raw:
        found.append(_bad_key(key, expected, raw))
        return {}
    parsed = {}
    for index, name in raw.items():
        if not str(index).isdigit() or not isinstance(name, str):
            found.append(_bad_key(key, expected, raw))
            return {}
        parsed[int(index)] = name
    if sorted(parsed) != list(range(len(parsed))):
        found.append(_bad_key(key, "consecutive indices starting at 0", raw))
    return dict(sorted(parsed.items()))


def _label_values_out_of_range(labels: dict[str, int], raw, found: list[Problem]) -> bool:
    """Reports label values a label map cannot hold (outside 0..MAX_LABEL_VALUE); True when there are any."""
    if all(0 <= v <= MAX_LABEL_VALUE for v in labels.values()):
        return False
    found.append(_bad_key("labels", f"values from 0 to {MAX_LABEL_VALUE}", raw,
                          fix=f"number the labels 0, 1, 2, ... (label maps hold values up to {MAX_LABEL_VALUE})"))
    return True


def _parse_labels_v2(data: dict, found: list[Problem]) -> dict[str, int]:
    raw = data.get("labels")
    expected = '{"background": 0, "name": 1, ...} (label name -> integer value)'
    if not isinstance(raw, dict) or not raw:
        found.append(_bad_key("labels", expected, raw))
        return {}
    if any(isinstance(v, (list, tuple)) for v in raw.values()):
        return _region_label_values(data, found)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        # an MSD-style {"0": "background"} in a v2 file is a common mix-up: say so
        if all(str(k).isdigit() for k in raw):
            found.append(_bad_key("labels", expected, raw,
                                  fix="nnU-Net v2 maps name -> value; this looks like the MSD form value -> name: "
                                      'swap keys and values, e.g. {"background": 0, "Anterior": 1}'))
        else:
            found.append(_bad_key("labels", expected, raw))
        return {}
    labels = dict(sorted(raw.items(), key=lambda item: item[1]))
    if _label_values_out_of_range(labels, raw, found):
        return {}
    if 0 not in labels.values():
        found.append(_bad_key("labels", "a background label with value 0", raw,
                              fix='add "background": 0 (nnU-Net requires it)'))
    if len(set(labels.values())) != len(labels):
        found.append(_bad_key("labels", "a distinct value for each label", raw))
    if IGNORE_LABEL in labels:
        found.extend(_ignore_label_problems(labels))
    return labels


IGNORE_LABEL = "ignore"  # nnU-Net v2's name for the label of unannotated voxels (sparse annotations)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_regions(data: dict, found: list[Problem] | None = None) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
    """nnU-Net v2's region-based labels: ``{"whole tumour": [1, 2, 3], "core": [2, 3], ...}`` and their order.

    A region is a set of label values that may overlap other regions (BraTS: whole tumour contains tumour core
    contains enhancing tumour). The network predicts each region with its own sigmoid output; prediction writes
    region ``i``'s voxels with the value ``regions_class_order[i]``, region after region, so later (inner) regions
    overwrite earlier (outer) ones (nnU-Net's ``LabelManager`` and ``documentation/region_based_training.md``).

    Returns:
        region name -> label values (background excluded), and ``regions_class_order``; ``({}, ())`` for a dataset
        of plain labels or when the definition is wrong (the problems are added to ``found``).
    """
    found = [] if found is None else found
    raw = data.get("labels")
    if not isinstance(raw, dict) or not any(isinstance(v, (list, tuple)) for v in raw.values()):
        return {}, ()
    regions: dict[str, tuple[int, ...]] = {}
    bad = []
    for name, value in raw.items():
        if name == IGNORE_LABEL:
            continue  # one value, not a region: unannotated voxels (checked below)
        values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if not values or not all(_is_int(v) for v in values):
            bad.append(name)
        elif values != (0,):
            regions[str(name)] = tuple(int(v) for v in values)
    order = data.get("regions_class_order")
    where = "dataset.json"
    if bad:
        found.append(P.error("bad_region", f"region(s) {bad} are not lists of integer label values",
                             why="a region is the set of label values it covers", fix='e.g. "tumour core": [2, 3]',
                             file=where))
    if raw.get("background") != 0:
        found.append(_bad_key("labels", '"background": 0 beside the regions', raw))
    ignore = raw.get(IGNORE_LABEL)
    highest = max((v for region in regions.values() for v in region), default=0)
    if ignore is not None and (not _is_int(ignore) or ignore <= highest):
        found.append(P.error("ignore_label_not_highest", f"the label 'ignore' has value {ignore}, not above every "
                             f"region's values (up to {highest})",
                             why="nnU-Net requires the ignore label to be the largest value",
                             fix=f"renumber it to {highest + 1} in dataset.json and in the label files", file=where))
    if not isinstance(order, list) or len(order) != len(regions) or not all(_is_int(v) and v > 0 for v in order):
        found.append(P.error(
            "missing_regions_class_order",
            f"region-based labels need 'regions_class_order': one label value per region ({len(regions)})",
            why="prediction writes each region's voxels with that value, region after region, to get a label map",
            fix=f"add \"regions_class_order\": [{', '.join(str(max(v)) for v in regions.values())}] (the value "
                "written for each region, in the order of 'labels'; later regions overwrite earlier ones)",
            file=where))
        return {}, ()
    if len(set(order)) != len(order):
        found.append(_bad_key("regions_class_order", "distinct values, one per region", order))
        return {}, ()
    if bad or (ignore is not None and (not _is_int(ignore) or ignore <= highest)):
        return {}, ()
    return regions, tuple(int(v) for v in order)


def labels_from_dataset_json(data: dict) -> tuple[dict[str, int], dict[str, tuple[int, ...]], tuple[int, ...]]:
    """The labels, regions and ``regions_class_order`` of an nnU-Net v2 ``dataset.json`` (e.g. of a trained model).

    Raises:
        TutorsegError: the labels are malformed (every problem named).
    """
    found: list[Problem] = []
    labels = _parse_labels_v2(data, found)
    regions, order = parse_regions(data, found)
    errors = [p for p in found if p.severity is P.Severity.ERROR]
    if errors or not labels:
        raise P.TutorsegError("dataset.json's labels cannot be read: " + "; ".join(p.message for p in errors))
    return labels, regions, order


def _region_label_values(data: dict, found: list[Problem]) -> dict[str, int]:
    """The label values of a region-based dataset, named after the region each value stands for in predictions.

    ``regions_class_order[i]`` is the value prediction writes for region ``i``, so that value takes the region's name;
    other values the label files hold are named ``label_V``. Inspection checks the label files against these values.
    """
    regions, order = parse_regions(data, found)
    if not regions:
        return {}
    names = {value: name for name, value in zip(regions, order)}
    values = sorted({v for region in regions.values() for v in region} | set(order))
    labels = {"background": 0, **{names.get(v, f"label_{v}"): v for v in values}}
    if IGNORE_LABEL in data["labels"]:  # sparse annotations: checked in parse_regions, explained once
        labels[IGNORE_LABEL] = int(data["labels"][IGNORE_LABEL])
        found.extend(p for p in _ignore_label_problems(labels) if p.severity is not P.Severity.ERROR)
    return labels


def _ignore_label_problems(labels: dict[str, int]) -> list[Problem]:
    """nnU-Net's rule (``LabelManager``): the ignore label has the highest value. And what it does, said once."""
    value = labels[IGNORE_LABEL]
    if value != max(labels.values()):
        return [P.error("ignore_label_not_highest", f"the label 'ignore' has value {value}, not the highest "
                        f"({max(labels.values())})", why="nnU-Net requires the ignore label to be the largest value",
                        fix=f"renumber it to {max(labels.values()) + 1} in dataset.json and in the label files",
                        file="dataset.json")]
    return [P.info("ignore_label", f"label 'ignore' (value {value}) marks unannotated voxels (sparse annotations)",
                   why="they are left out of the loss and the metrics, never sampled as foreground, and never "
                       "predicted, as nnU-Net's ignore label", file="dataset.json")]


def _parse_labels_msd(data: dict, found: list[Problem]) -> dict[str, int]:
    raw = data.get("labels")
    expected = '{"0": "background", "1": "name", ...} (label value -> name)'
    if not isinstance(raw, dict) or not raw:
        found.append(_bad_key("labels", expected, raw))
        return {}
    if not all(str(k).isdigit() and isinstance(v, str) for k, v in raw.items()):
        found.append(_bad_key("labels", expected, raw))
        return {}
    labels = {name: int(value) for value, name in sorted(raw.items(), key=lambda item: int(item[0]))}
    if _label_values_out_of_range(labels, raw, found):
        return {}
    if 0 not in labels.values():
        found.append(_bad_key("labels", 'a background label with value 0 ("0": "background")', raw))
    return labels


def _detect_layout(data: dict, root: Path, found: list[Problem]) -> str:
    v2_keys = {"channel_names", "file_ending"} & data.keys()
    msd_keys = {"modality", "training"} & data.keys()
    if v2_keys:
        return LAYOUT_NNUNETV2
    if msd_keys:
        return LAYOUT_MSD
    if data:
        found.append(P.error(
            "malformed_dataset_json",
            "dataset.json has neither 'channel_names' + 'file_ending' (nnU-Net v2) nor 'modality' + 'training' (MSD)",
            why="tutorseg cannot tell how the files are organised", file="dataset.json",
            fix='for nnU-Net v2 add "channel_names" and "file_ending"; for the MSD layout add "modality" and "training"'))
    # without a usable dataset.json, guess from the files so that the other checks can still run
    images = root / "imagesTr"
    names = [f.name for f in images.iterdir()] if images.is_dir() else []
    suffixed = [n for n in names if split_channel_suffix(n[: -len(file_ending(n))] if file_ending(n) else n)]
    return LAYOUT_NNUNETV2 if suffixed else LAYOUT_MSD


# --------------------------------------------------------------------------------------------------- cases


def _list_files(folder: Path) -> tuple[list[Path], int]:
    """Image files in a folder, sorted, and the number of hidden / resource-fork files skipped."""
    if not folder.is_dir():
        return [], 0
    files, junk = [], 0
    for entry in sorted(folder.iterdir()):
        if _is_junk(entry.name):
            junk += 1
        elif entry.is_file():
            files.append(entry)
    return files, junk


def _group_channel_files(files: list[Path], ending: str, folder_name: str,
                         found: list[Problem]) -> dict[str, dict[int, Path]]:
    """Group ``CASE_0000<ending>`` files by case; report files that do not follow the pattern."""
    groups: dict[str, dict[int, Path]] = {}
    unsuffixed, other_ending = [], []
    for path in files:
        if not path.name.endswith(ending):
            if file_ending(path):
                other_ending.append(path.name)
            continue
        suffix = split_channel_suffix(path.name[: -len(ending)])
        if suffix is None:
            unsuffixed.append(path.name)
            continue
        case_id, channel = suffix
        groups.setdefault(case_id, {})[channel] = path
    if unsuffixed:
        shown = ", ".join(unsuffixed[:3]) + (" ..." if len(unsuffixed) > 3 else "")
        found.append(P.error(
            "layout_mismatch",
            f"{len(unsuffixed)} file(s) in {folder_name}/ have no channel suffix _0000 ({shown}), "
            "but dataset.json is in nnU-Net v2 form",
            why="nnU-Net v2 finds a case's channel files by the suffixes _0000, _0001...; these belong to no case",
            fix="rename CASE.nii.gz to CASE_0000.nii.gz (one suffix per channel), or use an MSD-style dataset.json "
                "with 'modality' and a 'training' list"))
    if other_ending:
        shown = ", ".join(other_ending[:3]) + (" ..." if len(other_ending) > 3 else "")
        found.append(P.warning(
            "other_file_ending", f"{len(other_ending)} file(s) in {folder_name}/ do not end in '{ending}' "
            f"({shown}) and are ignored",
            why="dataset.json's file_ending decides which files are read",
            fix=f"convert them to {ending} or remove them"))
    return groups


def _discover_v2(root: Path, data: dict, spacing_2d, found: list[Problem], n_declared_channels: int = 0):
    ending = data.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        if data:  # without a usable dataset.json that problem is reported already
            found.append(_bad_key("file_ending", 'the files\' ending, e.g. ".nii.gz" or ".png"', ending))
        ending = _guess_ending(root)
    elif ending not in SUPPORTED_ENDINGS:
        found.append(P.error("unsupported_format", f"file_ending '{ending}' is not supported",
                             why="tutorseg reads NIfTI (3D) and PNG/TIFF (2D) files only",
                             fix=f"convert the images to one of {', '.join(SUPPORTED_ENDINGS)}", file="dataset.json"))

    image_files, junk = _list_files(root / "imagesTr")
    label_files, junk_labels = _list_files(root / "labelsTr")
    _report_junk(junk + junk_labels, found)
    groups = _group_channel_files(image_files, ending, "imagesTr", found)
    labels_by_id = {p.name[: -len(ending)]: p for p in label_files if p.name.endswith(ending)}

    most_common = Counter(len(g) for g in groups.values()).most_common(1)
    typical_channels = most_common[0][0] if most_common else 0
    if ending in NIFTI_ENDINGS and n_declared_channels:
        # one NIfTI file per declared channel; a 2D RGB file holds 3 channels, so there the files' own count rules
        typical_channels = n_declared_channels
    training = []
    for case_id in sorted(groups):
        channels = groups[case_id]
        expected = range(max(typical_channels, max(channels) + 1))
        missing = [i for i in expected if i not in channels]
        if missing:
            names = ", ".join(f"{case_id}_{i:04d}{ending}" for i in missing)
            found.append(P.error("missing_channel", f"channel file(s) missing: {names}", case_id=case_id,
                                 why="every case needs the same channels, in the same order",
                                 fix="add the missing channel file(s) or remove the case from imagesTr/labelsTr",
                                 file=f"imagesTr/{case_id}_{missing[0]:04d}{ending}"))
            continue
        label = labels_by_id.get(case_id)
        if label is None:
            found.append(P.error("missing_label", f"no label file labelsTr/{case_id}{ending} for this training image",
                                 case_id=case_id, why="a training case needs its reference segmentation",
                                 fix=f"add labelsTr/{case_id}{ending}, or move the image to imagesTs/ if it is "
                                     "unlabelled", file=f"labelsTr/{case_id}{ending}"))
            continue
        files = tuple(channels[i] for i in sorted(channels))
        training.append(Case(case_id, files, label, spacing_2d))
    for case_id in sorted(set(labels_by_id) - set(groups)):
        found.append(P.error("missing_image", f"label labelsTr/{case_id}{ending} has no image "
                             f"imagesTr/{case_id}_0000{ending}", case_id=case_id,
                             why="a label without its image cannot be used for training",
                             fix="add the image, or remove the label", file=f"labelsTr/{case_id}{ending}"))

    test_files, junk_test = _list_files(root / "imagesTs")
    _report_junk(junk_test, found)
    test_groups = _group_channel_files(test_files, ending, "imagesTs", found)
    test = tuple(Case(cid, tuple(ch[i] for i in sorted(ch)), None, spacing_2d) for cid, ch in sorted(test_groups.items()))

    n_declared = data.get("numTraining")
    if n_declared is not None and (not isinstance(n_declared, int) or n_declared != len(groups)):
        found.append(P.warning("num_training_mismatch",
                               f"dataset.json says numTraining={n_declared}, imagesTr/ holds {len(groups)} case(s)",
                               why="nnU-Net checks this number; a mismatch often means files were lost in a copy",
                               fix=f"set numTraining to {len(groups)}, or find the missing cases", file="dataset.json"))
    return ending, tuple(training), test


def _guess_ending(root: Path) -> str:
    files, _ = _list_files(root / "imagesTr")
    endings = Counter(file_ending(f) for f in files if file_ending(f))
    return endings.most_common(1)[0][0] if endings else ".nii.gz"


def _report_junk(count: int, found: list[Problem]) -> None:
    if count:
        found.append(P.info("hidden_files_ignored", f"{count} hidden file(s) ignored (e.g. macOS '._*' resource forks)",
                            why="they are not images, though their names look like it",
                            fix="nothing to do; delete them to silence this note"))


def _msd_path(root: Path, entry) -> Path | None:
    if not isinstance(entry, str):
        return None
    return root / entry


def _msd_case_id(path: Path) -> str:
    ending = file_ending(path) or path.suffix
    return path.name[: -len(ending)] if ending else path.name


def _discover_msd(root: Path, data: dict, spacing_2d, found: list[Problem]):
    entries = data.get("training")
    if not data:  # no usable dataset.json (reported already): pair the files by name so the cases can be checked
        entries = [{"image": f"./imagesTr/{p.name}", "label": f"./labelsTr/{p.name}"}
                   for p in _list_files(root / "imagesTr")[0] if file_ending(p)]
    elif not isinstance(entries, list):
        found.append(_bad_key("training", 'a list of {"image": "./imagesTr/CASE.nii.gz", '
                              '"label": "./labelsTr/CASE.nii.gz"}', entries))
        entries = []
    ending = ""
    training: list[Case] = []
    seen: Counter[str] = Counter()
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) \
                or not isinstance(entry.get("label"), str):
            found.append(_bad_key(f"training[{position}]", '{"image": "./imagesTr/CASE.nii.gz", '
                                  '"label": "./labelsTr/CASE.nii.gz"}', entry))
            continue
        image, label = root / entry["image"], root / entry["label"]
        case_id = _msd_case_id(image)
        ending = ending or file_ending(image)
        seen[case_id] += 1
        if seen[case_id] > 1:
            found.append(P.error("duplicate_case", f"case listed {seen[case_id]} times in dataset.json 'training'",
                                 case_id=case_id, why="a case counted twice weighs double and can leak between "
                                 "training and validation folds", fix="remove the repeated entries",
                                 file="dataset.json"))
            continue
        problem = False
        if not image.is_file():
            problem = True
            suffixed = image.with_name(f"{case_id}_0000{file_ending(image)}")
            if suffixed.is_file():
                found.append(P.error(
                    "layout_mismatch", f"dataset.json (MSD form) lists {entry['image']}, but the folder holds "
                    f"{suffixed.name} (nnU-Net v2 naming)", case_id=case_id,
                    why="the MSD layout has no channel suffix; nnU-Net v2 names need a v2 dataset.json",
                    fix='write a v2 dataset.json ("channel_names", "labels" name->value, "numTraining", '
                        '"file_ending") or rename the files back without _0000', file=entry["image"]))
            else:
                found.append(P.error("missing_image", f"image {entry['image']} listed in dataset.json does not exist",
                                     case_id=case_id, why="the case cannot be loaded",
                                     fix="add the file or remove the entry from dataset.json", file=entry["image"]))
        if not label.is_file():
            problem = True
            found.append(P.error("missing_label", f"label {entry['label']} listed in dataset.json does not exist",
                                 case_id=case_id, why="a training case needs its reference segmentation",
                                 fix="add the label file or remove the entry from dataset.json", file=entry["label"]))
        if not problem:
            training.append(Case(case_id, (image,), label, spacing_2d))

    listed = {c.case_id for c in training} | set(seen)
    image_files, junk = _list_files(root / "imagesTr")
    _report_junk(junk, found)
    unlisted = [p for p in image_files if _msd_case_id(p) not in listed and file_ending(p)]
    suffixed = [p for p in unlisted if split_channel_suffix(_msd_case_id(p))]
    others = [p for p in unlisted if p not in suffixed]
    if others:
        shown = ", ".join(p.name for p in others[:3]) + (" ..." if len(others) > 3 else "")
        found.append(P.warning("unlisted_file", f"{len(others)} image(s) in imagesTr/ are not listed in dataset.json "
                               f"'training' and are ignored ({shown})",
                               why="in the MSD layout only listed cases are used",
                               fix="add them to 'training' with their labels, or remove them"))

    test = []
    test_entries = data.get("test", [])
    if not isinstance(test_entries, list):
        found.append(_bad_key("test", 'a list of "./imagesTs/CASE.nii.gz" paths', test_entries))
        test_entries = []
    for entry in test_entries:
        path = _msd_path(root, entry.get("image") if isinstance(entry, dict) else entry)  # "./x" or {"image": "./x"}
        if path is None:
            found.append(_bad_key("test", 'a list of "./imagesTs/CASE.nii.gz" paths', test_entries))
            break
        if path.is_file():
            test.append(Case(_msd_case_id(path), (path,), None, spacing_2d))
        else:
            found.append(P.warning("missing_image", f"test image {entry} listed in dataset.json does not exist",
                                   case_id=_msd_case_id(path), why="the test case cannot be predicted",
                                   fix="add the file or remove the entry from dataset.json 'test'",
                                   file=str(entry)))
    if not test_entries:  # some MSD copies leave 'test' empty: take imagesTs/ as it is
        for path in _list_files(root / "imagesTs")[0]:
            if file_ending(path):
                test.append(Case(_msd_case_id(path), (path,), None, spacing_2d))
    return ending or _guess_ending(root), tuple(sorted(training, key=lambda c: c.case_id)), \
        tuple(sorted(test, key=lambda c: c.case_id))


def _spacing_2d(data: dict, found: list[Problem]) -> tuple[float, ...] | None:
    """Optional tutorseg extension: ``"spacing": [row_mm, col_mm]`` for 2D formats, which store no spacing."""
    raw = data.get("spacing")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(v, (int, float)) and v > 0 for v in raw):
        found.append(_bad_key("spacing", "a list of positive numbers, one per axis of the 2D images", raw))
        return None
    return tuple(float(v) for v in raw)


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read a dataset folder (nnU-Net v2 or MSD layout) and list its cases, without reading any voxels.

    Structural problems (malformed dataset.json, missing files, files of the other layout) do not raise: they are
    collected in :attr:`Dataset.problems` so that :func:`tutorseg.inspect_dataset` can report them all at once.

    Args:
        path: the dataset folder, the one holding ``dataset.json`` and ``imagesTr/``.

    Raises:
        DatasetError: the folder does not exist.

    Example:
        >>> ds = load_dataset(tutorseg.sample_dataset_path())
        >>> ds.labels
        {'background': 0, 'Anterior': 1, 'Posterior': 2}
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}. Give the folder that holds dataset.json and imagesTr/")
    root = root.resolve()
    found: list[Problem] = []
    if not (root / "dataset.json").exists() and not (root / "imagesTr").exists():
        inner = [d for d in root.iterdir() if d.is_dir() and (d / "dataset.json").is_file()]
        hint = f" It contains {inner[0].name}/ with a dataset.json: use that folder." if len(inner) == 1 else ""
        raise DatasetError(f"{root} is not a dataset folder: no dataset.json and no imagesTr/.{hint}")

    data = _read_json(root / "dataset.json", found)
    layout = _detect_layout(data, root, found)
    if not (root / "imagesTr").is_dir():
        found.append(P.error("missing_folder", "the folder imagesTr/ is missing",
                             why="training images are read from imagesTr/",
                             fix="put the training images in imagesTr/ (and their labels in labelsTr/)"))
    spacing_2d = _spacing_2d(data, found)
    if layout == LAYOUT_NNUNETV2:
        channel_names = _parse_index_dict(data, "channel_names", found) if data else {}
        labels = _parse_labels_v2(data, found) if data else {}
        ending, training, test = _discover_v2(root, data, spacing_2d, found, len(channel_names))
    else:
        channel_names = _parse_index_dict(data, "modality", found) if data else {}
        labels = _parse_labels_msd(data, found) if data else {}
        ending, training, test = _discover_msd(root, data, spacing_2d, found)
    regions, order = parse_regions(data) if layout == LAYOUT_NNUNETV2 and data else ({}, ())
    if regions:
        found.append(P.info("region_based", f"region-based labels: {', '.join(f'{n} {list(v)}' for n, v in regions.items())}; "
                            f"regions_class_order {list(order)}",
                            why="the network predicts each region with its own sigmoid output (regions may "
                                "overlap), trained with Dice + binary cross-entropy per region; predictions are "
                                "turned back into a label map region by region, and evaluated per region",
                            file="dataset.json"))
    declared_name = data.get("name")
    name = declared_name if isinstance(declared_name, str) and declared_name else root.name
    return Dataset(root, name, layout, channel_names, labels, ending, training, test, tuple(found), data,
                   regions=regions, regions_class_order=order)


def as_dataset(dataset: "Dataset | str | os.PathLike") -> Dataset:
    """Accept a :class:`Dataset` or a path to one; step functions take either."""
    return dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
