"""Step 1 of the pipeline: inspect a dataset folder and report everything that is wrong with it, at once.

``inspect_dataset(path)`` reads every case (each file once: its header, then its voxels; in threads) and returns a
:class:`DatasetReport`: what the dataset holds (cases, channels, labels, shapes, spacings, intensity ranges, label
values present) and a list of :class:`~tutorseg.data.problems.Problem` objects, each naming the case, what is wrong, why
it matters for training and how to fix it. Nothing stops at the first problem, and bad data never shows a raw
traceback: a file that cannot be read becomes a problem of its case.

The checks follow what nnU-Net v2 verifies before training (``nnunetv2/experiment_planning/
verify_dataset_integrity.py``: matching shapes and spacings of images and labels, the number of channels, NaN
values, label values declared in ``dataset.json``) and add the mistakes its users meet most often (float labels,
0/255 PNG masks, files of the other layout, empty labels). ``docs/datasets.md`` lists every problem code with its
fix; notebook ``01_inspect_dataset.ipynb`` teaches what to look for.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tutorseg.data import problems as P
from tutorseg.data.dataset import Case, Dataset, as_dataset
from tutorseg.data.files import display_path
from tutorseg.data.imageio import MISSING_SPACING_NOTE, Geometry, read_image, spacing_sidecar
from tutorseg.data.jobs import default_workers, run_per_case
from tutorseg.data.problems import ImageReadError, Problem
from tutorseg.inspection.report import CaseSummary, DatasetReport, format_spacing

# Tolerances for comparing an image's geometry with its label's. nnU-Net compares spacings with np.allclose
# (relative 1e-5) and affines with np.allclose too; exports from different tools differ in the 6th-7th digit
# (float32 headers), so tutorseg allows a little more before it calls two grids different.
SPACING_RTOL = 1e-4  # relative difference of voxel sizes
AFFINE_ATOL_MM = 1e-3  # absolute difference of affine entries (origin in mm, direction x spacing)

MAX_LABEL_VALUES_KEPT = 32  # a non-integer "label" can hold thousands of values: keep the first few in the summary
MIN_CASES_FOR_POOL = 16  # fewer cases are read one after the other: a pool would not pay for itself
MAX_WORKERS = 8  # reading is partly bound by disk; more threads than this rarely help



@dataclass(frozen=True)
class _Expectations:
    """What every case should look like, from dataset.json: passed to the workers (small and picklable)."""

    n_channels: int  # 0 when dataset.json declares no usable channels
    label_values: tuple[int, ...]
    spatial_ndim: int  # 3 for NIfTI, 2 for PNG/TIFF
    spacing_rtol: float
    affine_atol: float


# --------------------------------------------------------------------------------------------------- per-case checks


def _unreadable(exc: ImageReadError, case_id: str, relative: str) -> Problem:
    why = {"unsupported_dimensionality": "the network is built for one number of spatial dimensions for the "
                                         "whole dataset",
           "unsupported_format": "tutorseg cannot read this file type"}.get(
        exc.code, "the case cannot be loaded for training or prediction")
    return P.error(exc.code, f"{relative}: {exc.reason}", why=why,
                   fix=exc.fix or "export the file again", case_id=case_id, file=relative)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _check_dimensionality(geometry: Geometry, expected_ndim: int, case_id: str, relative: str) -> list[Problem]:
    if geometry.ndim == expected_ndim:
        return []
    kind = "3D volumes" if expected_ndim == 3 else "2D images"
    return [P.error("unsupported_dimensionality",
                    f"{relative} has {geometry.ndim} spatial dimensions (shape {geometry.shape}); "
                    f"this dataset's files are {kind}",
                    why="one network is trained per dimensionality: every case must have the same number of axes",
                    fix="save 3D volumes as NIfTI (x, y, z[, channels]) and 2D slices as PNG/TIFF; "
                        "split 4D time series into one 3D file per time point",
                    case_id=case_id, file=relative)]


def _check_channel_files(geometries: list[Geometry], relatives: list[str], case_id: str,
                         rtol: float) -> list[Problem]:
    """Channel files of one case (nnU-Net v2 ``_0000``, ``_0001``...) must share one voxel grid."""
    found = []
    first, first_name = geometries[0], relatives[0]
    for geometry, name in zip(geometries[1:], relatives[1:]):
        if geometry.shape != first.shape:
            found.append(P.error("channel_shape_mismatch",
                                 f"channel files differ in shape: {first_name} {first.shape}, {name} {geometry.shape}",
                                 why="channels are stacked voxel by voxel into one array; they must share a grid",
                                 fix="resample every channel onto the grid of the first (e.g. with SimpleITK or "
                                     "3D Slicer's 'Resample Image (BRAINS)') before training",
                                 case_id=case_id, file=name))
        elif not np.allclose(geometry.spacing, first.spacing, rtol=rtol):
            found.append(P.error("channel_spacing_mismatch",
                                 f"channel files differ in spacing: {first_name} {format_spacing(first.spacing)}, "
                                 f"{name} {format_spacing(geometry.spacing)}",
                                 why="voxels at the same index would show different places in the body",
                                 fix="resample every channel onto the grid of the first before training",
                                 case_id=case_id, file=name))
    return found


def _check_channel_count(n_found: int, notes: tuple[str, ...], expected: int, case_id: str,
                         relative: str) -> list[Problem]:
    found = []
    if any("alpha" in note for note in notes):
        found.append(P.info("alpha_dropped", f"{relative}: {notes[0]}",
                            why="the alpha (transparency) channel carries no image information",
                            fix="nothing to do; save the image without alpha to silence this note",
                            case_id=case_id, file=relative))
    if expected and n_found != expected:
        what = {1: "a grey image", 3: "an RGB image"}.get(n_found, f"{n_found} channels")
        found.append(P.error("channel_count_mismatch",
                             f"the image has {n_found} channel(s) ({what}), dataset.json declares {expected}",
                             why="the network's first layer takes exactly the declared number of channels",
                             fix=f"declare {n_found} channel(s) in dataset.json, or convert the image to "
                                 f"{expected} channel(s) (e.g. grey -> RGB by repeating the channel); RGBA is read "
                                 "as RGB (alpha dropped)",
                             case_id=case_id, file=relative))
    return found


def _intensity_checks(image: np.ndarray, case_id: str, relative: str
                      ) -> tuple[tuple[tuple[float, float] | None, ...], list[Problem]]:
    """Per channel (min, max) of the finite values; NaN/Inf and constant channels as problems.

    Args:
        image: ``(C, *spatial)`` in the stored dtype.
        case_id: the case, for the problems' messages.
        relative: the file's path as shown to the user.
    """
    ranges: list[tuple[float, float] | None] = []
    found: list[Problem] = []
    for channel, values in enumerate(image):
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            n_bad = int(values.size - np.count_nonzero(finite))
            if n_bad:
                found.append(P.error("non_finite_values",
                                     f"channel {channel} holds {n_bad} NaN/Inf voxel(s) of {values.size}",
                                     why="a single NaN turns the normalised image, the loss and then every "
                                         "network weight into NaN",
                                     fix="replace them with a value that means 'nothing' for this image, e.g. "
                                         "np.nan_to_num(image, nan=image_min) before saving",
                                     case_id=case_id, file=relative))
                values = values[finite]
        if values.size == 0:
            ranges.append(None)
            continue
        low, high = float(values.min()), float(values.max())
        ranges.append((low, high))
        if low == high:
            found.append(P.warning("constant_image",
                                   f"channel {channel} is constant (every voxel is {low:g})",
                                   why="an empty image teaches the network nothing, and z-score normalisation "
                                       "divides by a standard deviation of 0",
                                   fix="check the export (a blank or failed conversion is typical) and replace "
                                       "the file, or remove the case",
                                   case_id=case_id, file=relative))
    return tuple(ranges), found


def _check_pair(image: Geometry, label: Geometry, case_id: str, image_name: str, label_name: str,
                expect: _Expectations) -> list[Problem]:
    """Image and label must lie on the same voxel grid (nnU-Net's verify_dataset_integrity checks the same)."""
    if image.shape != label.shape:
        return [P.error("shape_mismatch",
                        f"image {image_name} has shape {image.shape}, label {label_name} has shape {label.shape}",
                        why="every voxel of the image needs exactly one label value",
                        fix="export the label on the image's grid (same size, spacing and orientation); "
                            "if one of them was cropped or resampled, redo it for both",
                        case_id=case_id, file=label_name)]
    if not np.allclose(image.spacing, label.spacing, rtol=expect.spacing_rtol):
        return [P.error("spacing_mismatch",
                        f"image spacing {format_spacing(image.spacing)} mm differs from label spacing "
                        f"{format_spacing(label.spacing)} mm",
                        why="the label would be resampled to a different physical size than its image",
                        fix="write the label with the image's header (e.g. nibabel.Nifti1Image(label, "
                            "image.affine, image.header)), or resample it onto the image's grid",
                        case_id=case_id, file=label_name)]
    if image.affine is not None and label.affine is not None \
            and not np.allclose(image.affine, label.affine, atol=expect.affine_atol):
        return [P.warning("affine_mismatch",
                          "image and label have the same shape and spacing but different affines "
                          "(origin or orientation)",
                          why="predictions are written with the image's affine; if the label's differs it "
                              "may be flipped or shifted relative to its image (nnU-Net warns about this too)",
                          fix="overlay image and label in a viewer (ITK-SNAP, 3D Slicer) or with "
                              "tutorseg.viz.plot_case; if they align, copy the image's affine into the label",
                          case_id=case_id, file=label_name)]
    return []


def _label_value_checks(label: np.ndarray, declared: tuple[int, ...], case_id: str, relative: str,
                        ) -> tuple[tuple[float, ...], list[Problem]]:
    """Values present in a label map; float types, non-integers, undeclared values, 0/255 masks, no foreground.

    Args:
        label: ``(*spatial)`` label map in its stored dtype.
        declared: the label values dataset.json declares.
        case_id: the case, for the problems' messages.
        relative: the file's path as shown to the user.
    """
    found = []
    is_float = label.dtype.kind == "f"
    if is_float:
        finite = np.isfinite(label)
        if not finite.all() or not np.array_equal(label[finite], np.round(label[finite])):
            odd = label[finite][label[finite] != np.round(label[finite])]
            examples = ", ".join(f"{v:g}" for v in np.unique(odd)[:4])
            found.append(P.error("non_integer_label",
                                 f"the label ({label.dtype}) holds non-integer values"
                                 + (f" (e.g. {examples})" if examples else " (NaN/Inf)"),
                                 why="each voxel must hold one class index; fractional values usually mean the "
                                     "label was resampled with linear interpolation, or a probability map was "
                                     "saved instead of a segmentation",
                                 fix="resample labels with nearest-neighbour interpolation, or threshold / "
                                     "np.rint() the map and save it as uint8",
                                 case_id=case_id, file=relative))
            values = np.unique(label[finite])
            return tuple(float(v) for v in values[:MAX_LABEL_VALUES_KEPT]), found
        found.append(P.warning("float_label",
                               f"the label is stored as {label.dtype} (its values are whole numbers)",
                               why="labels are class indices; a float type works (tutorseg converts it, as "
                                   "nnU-Net does) but often hides a resampling mistake in other cases",
                               fix="save labels as an integer type: "
                                   "nib.save(nib.Nifti1Image(np.rint(lab).astype(np.uint8), img.affine), path)",
                               case_id=case_id, file=relative))
    values = np.unique(label)
    present = tuple(int(v) for v in values[:MAX_LABEL_VALUES_KEPT])
    undeclared = sorted(set(int(v) for v in values) - set(declared))
    if declared and undeclared:
        if set(int(v) for v in values) <= {0, 255} and 255 not in declared:
            found.append(P.error("mask_0_255",
                                 "the mask stores its foreground as 255 (values 0/255), dataset.json declares "
                                 f"{list(declared)}",
                                 why="255 is read as class 255, which does not exist: training fails or learns "
                                     "nonsense (image editors save binary masks as 0/255)",
                                 fix="divide by 255 (or set mask > 0 to 1), e.g. Image.fromarray((np.asarray("
                                     "Image.open(f)) > 0).astype(np.uint8)).save(f)",
                                 case_id=case_id, file=relative))
        else:
            shown = ", ".join(str(v) for v in undeclared[:8]) + (" ..." if len(undeclared) > 8 else "")
            found.append(P.error("undeclared_label_values",
                                 f"label values {shown} are not declared in dataset.json (declared: "
                                 f"{list(declared)})",
                                 why="the network has one output per declared label; other values cannot be learnt",
                                 fix="add the values to dataset.json 'labels', or map them to declared values "
                                     "(e.g. 0 for structures you do not want to segment)",
                                 case_id=case_id, file=relative))
    if values.size and set(int(v) for v in values) == {0}:
        found.append(P.warning("empty_label", "the label holds no foreground (only background, 0)",
                               why="the case teaches only what background looks like; many such cases make the "
                                   "network predict background everywhere",
                               fix="check whether the annotation is missing; keep the case only if the structure "
                                   "is truly absent",
                               case_id=case_id, file=relative))
    return present, found


def _inspect_case(case: Case, split: str, root: Path, expect: _Expectations) -> tuple[CaseSummary, list[Problem]]:
    """Every check of one case. Never raises for bad data: what goes wrong becomes a problem of the case.

    Each file is opened once: :func:`tutorseg.data.imageio.read_image` reads the header first (and refuses unsupported
    dimensionalities before decoding any voxel), then the voxels, which the intensity and label checks need.
    """
    cid = case.case_id
    image_names = [_relative(f, root) for f in case.image_files]
    images = []
    try:
        for path in case.image_files:
            images.append(read_image(path, spacing_2d=case.spacing_2d))
    except ImageReadError as exc:
        return _summary_of(cid, split, images), [_unreadable(exc, cid, _relative(Path(exc.path), root))]
    geometries = [image.geometry for image in images]
    found = [p for g, name in zip(geometries, image_names)
             for p in _check_dimensionality(g, expect.spatial_ndim, cid, name)]
    if found:
        return _summary_of(cid, split, images), found
    found += _check_channel_files(geometries, image_names, cid, expect.spacing_rtol)
    notes = tuple(note for g in geometries for note in g.notes)
    found += [P.warning("missing_spacing", f"{name}: {MISSING_SPACING_NOTE}",
                        why="the spacing decides the target spacing, the resampling and the network's shape; "
                            "a TIFF stack's voxels are rarely cubes",
                        fix=f'write the voxel size next to the file, {spacing_sidecar(Path(name)).name}: '
                            '{"spacing": [z, y, x]} (e.g. micrometres), or save it in the TIFF\'s ImageJ tags',
                        case_id=cid, file=name)
              for g, name in zip(geometries, image_names) if MISSING_SPACING_NOTE in g.notes]
    found += _check_channel_count(sum(g.n_channels for g in geometries), notes, expect.n_channels, cid,
                                  image_names[0])
    ranges: list[tuple[float, float] | None] = []
    for image, name in zip(images, image_names):
        channel_ranges, problems = _intensity_checks(image.array, cid, name)
        ranges += channel_ranges
        found += problems
    summary = _summary_of(cid, split, images, tuple(ranges))
    if case.label_file is None:
        return summary, found

    label_name = _relative(case.label_file, root)
    try:
        label = read_image(case.label_file, spacing_2d=case.spacing_2d)
    except ImageReadError as exc:
        return summary, found + [_unreadable(exc, cid, label_name)]
    summary = replace(summary, label_dtype=label.geometry.dtype)
    if label.geometry.n_channels != 1:
        return summary, found + [P.error(
            "label_not_single_channel", f"the label {label_name} has {label.geometry.n_channels} channels",
            why="a label map holds one class index per voxel",
            fix="save the label as a single-channel integer image (an RGB mask must be turned into class indices: "
                "one value per colour)", case_id=cid, file=label_name)]
    dimensionality = _check_dimensionality(label.geometry, expect.spatial_ndim, cid, label_name)
    if dimensionality:
        return summary, found + dimensionality
    found += _check_pair(geometries[0], label.geometry, cid, image_names[0], label_name, expect)
    present, problems = _label_value_checks(label.array[0], expect.label_values, cid, label_name)
    return replace(summary, label_values=present), found + problems


def _summary_of(case_id: str, split: str, images: list, intensity_range: tuple = ()) -> CaseSummary:
    """A :class:`CaseSummary` from the image files read so far (possibly none)."""
    if not images:
        return CaseSummary(case_id, split)
    first = images[0].geometry
    return CaseSummary(case_id, split, shape=first.shape, spacing=first.spacing, dtype=first.dtype,
                       n_channels=sum(image.geometry.n_channels for image in images),
                       intensity_range=intensity_range)


def _inspect_case_safely(job) -> tuple[CaseSummary, list[Problem]]:
    """Run :func:`_inspect_case`; an unexpected exception (a library bug, an exotic file) becomes a problem too."""
    case, split, root, expect = job
    try:
        return _inspect_case(case, split, root, expect)
    except Exception as exc:  # noqa: BLE001 -- the report must list it instead of stopping the scan
        return CaseSummary(case.case_id, split), [P.error(
            "unreadable_file", f"reading the case failed: {type(exc).__name__}: {exc}",
            why="the case cannot be loaded for training or prediction",
            fix="open the files in a viewer (ITK-SNAP, 3D Slicer, an image viewer) and export them again",
            case_id=case.case_id, file=_relative(case.image_files[0], root))]


# --------------------------------------------------------------------------------------------------- dataset checks


def _dataset_wide_checks(dataset: Dataset, summaries: list[CaseSummary]) -> list[Problem]:
    found = []
    training_ids = {c.case_id for c in dataset.training}
    overlap = sorted(training_ids & {c.case_id for c in dataset.test})
    for case_id in overlap:
        found.append(P.warning("duplicate_case", "the case id appears both in imagesTr (training) and imagesTs (test)",
                               why="if it is the same image, test results are measured on training data",
                               fix="rename one of them, or remove the test copy",
                               case_id=case_id))
    read_labels = [s.label_values for s in summaries if s.split == "training" and s.label_values is not None]
    if read_labels:
        present = set().union(*map(set, read_labels))
        for name, value in dataset.foreground_labels.items():
            if value not in present:
                found.append(P.warning("label_never_present",
                                       f"label '{name}' ({value}) is declared but appears in no training case",
                                       why="a class without examples cannot be learnt; its output stays untrained",
                                       fix="check the label value in dataset.json, or remove the label",
                                       file="dataset.json"))
    return found


def _expectations(dataset: Dataset, spacing_rtol: float, affine_atol: float) -> _Expectations:
    return _Expectations(n_channels=dataset.n_channels, label_values=dataset.label_values,
                         spatial_ndim=2 if dataset.is_2d_format else 3,
                         spacing_rtol=spacing_rtol, affine_atol=affine_atol)


def _run_jobs(jobs: list, num_workers: int | None, progress: bool) -> list:
    """Inspect cases with a pool of threads (in this thread for small datasets), keeping the input order.

    Threads, not processes: decompressing gzip, decoding PNG and numpy's reductions release the GIL, so threads
    overlap where files are large, and they cost nothing to start, pickle nothing and behave the same in a
    notebook on every OS. On small files (Hippocampus: 30 kB) the work is mostly Python and the pool gains little;
    bench/inspect.md has the measurements.
    """
    workers = default_workers(MAX_WORKERS) if num_workers is None else min(num_workers, MAX_WORKERS)
    return run_per_case(_inspect_case_safely, jobs, num_workers=workers, workers="threads",
                        min_jobs_for_pool=MIN_CASES_FOR_POOL, progress=progress, description="inspecting cases")


def inspect_dataset(path_or_dataset: "str | os.PathLike | Dataset", *, progress: bool = True,
                    num_workers: int | None = None, spacing_rtol: float = SPACING_RTOL,
                    affine_atol: float = AFFINE_ATOL_MM) -> "DatasetReport":
    """Inspect a dataset folder: what it holds, and every problem found in it.

    Reads ``dataset.json`` and the folder structure (:func:`tutorseg.load_dataset`), then every training and test
    case: headers for shapes, spacings and channels, voxels for intensity ranges, NaN/Inf and label values.

    Args:
        path_or_dataset: the dataset folder (holding ``dataset.json`` and ``imagesTr/``) or a loaded
            :class:`~tutorseg.data.dataset.Dataset`.
        progress: show a progress bar.
        num_workers: parallel threads (default: the number of CPU cores, at most 8; 1 reads one case
            after the other).
        spacing_rtol: relative tolerance when comparing an image's spacing with its label's.
        affine_atol: absolute tolerance (mm) when comparing an image's affine with its label's.

    Returns:
        A :class:`DatasetReport`; ``report.errors`` is empty when the dataset can be trained on.

    Raises:
        DatasetError: the folder does not exist or is not a dataset folder at all.

    Example:
        >>> report = inspect_dataset(tutorseg.sample_dataset_path(), progress=False)
        >>> report.num_training_cases, report.labels
        (25, {'background': 0, 'Anterior': 1, 'Posterior': 2})
    """
    start = time.perf_counter()
    dataset = as_dataset(path_or_dataset)
    expect = _expectations(dataset, spacing_rtol, affine_atol)
    jobs = [(case, "training", dataset.root, expect) for case in dataset.training] + \
           [(case, "test", dataset.root, expect) for case in dataset.test]
    results = _run_jobs(jobs, num_workers, progress)
    summaries = [summary for summary, _ in results]
    problems = list(dataset.problems)
    for _, case_problems in results:
        problems += case_problems
    problems += _dataset_wide_checks(dataset, summaries)
    return DatasetReport(
        dataset_name=dataset.name, layout=dataset.layout, root=display_path(dataset.root),
        file_ending=dataset.file_ending, num_training_cases=len(dataset.training), num_test_cases=len(dataset.test),
        channel_names=dict(dataset.channel_names), labels=dict(dataset.labels), cases=tuple(summaries),
        problems=tuple(problems), seconds=round(time.perf_counter() - start, 3))
