"""DICOM series, one per case, read with SimpleITK (GDCM) into volumes that keep their geometry.

Scanners export a study as a folder of slice files; nnU-Net and tutorseg train on one volume per case. This module
turns a folder holding one sub-folder per case, each with one DICOM series (any file names, ``.dcm`` or none), into
NIfTI volumes: GDCM sorts the slices by their position along the slice normal, and the volume's spacing, origin and
direction come from the slices' own tags (Image Position and Orientation (Patient), Pixel Spacing), so the result
overlays the scan in any viewer. Rescale slope and intercept are applied (CT numbers come out in Hounsfield units).

What cannot become a case is reported, every case at once: a folder without DICOM slices, a folder mixing several
series (a localiser beside the scan, two reconstructions), a series GDCM cannot read. ``tutorseg convert`` and
:func:`tutorseg.integrations.convert.convert_folders` use it when the images folder holds sub-folders.

DICOM-SEG label objects are not read (SimpleITK has no reader for them): export labels from the viewer as NIfTI or
NRRD, named like the case's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tutorseg.data.imageio import file_ending, import_simpleitk
from tutorseg.data.problems import TutorsegError


class DicomError(TutorsegError):
    """A DICOM series cannot be read as one volume (the message names the folder and what to do)."""


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder: its id, its slice files in GDCM's order, and the folder."""

    folder: Path
    series_id: str
    files: tuple[str, ...]


def series_in(folder: str | os.PathLike) -> list[DicomSeries]:
    """Every DICOM series in ``folder`` (not its sub-folders), each with its slice files in spatial order."""
    sitk = import_simpleitk()
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on stderr for every folder without a series
    try:
        found = []
        for series_id in reader.GetGDCMSeriesIDs(str(folder)) or ():
            files = reader.GetGDCMSeriesFileNames(str(folder), series_id)
            found.append(DicomSeries(folder, series_id, tuple(files)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    return found


def case_folders(root: str | os.PathLike) -> list[Path]:
    """The sub-folders of ``root``, one per case (hidden ones skipped), sorted by name."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def read_series(folder: str | os.PathLike):
    """The one DICOM series of ``folder`` as a SimpleITK image with its geometry.

    Raises:
        DicomError: no series, several series, or a series GDCM cannot read.
    """
    sitk = import_simpleitk()
    folder = Path(folder)
    found = series_in(folder)
    if not found:
        raise DicomError(f"{folder.name}: no DICOM series in {folder} (no file GDCM reads as a DICOM slice); put "
                         "the case's slice files in its folder, or remove the folder")
    if len(found) > 1:
        sizes = ", ".join(f"{s.series_id} ({len(s.files)} slices)" for s in found)
        raise DicomError(f"{folder.name}: {len(found)} DICOM series in one folder ({sizes}); keep one series per "
                         "case folder (move a localiser or a second reconstruction elsewhere)")
    series = found[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DicomError(f"{folder.name}: the series {series.series_id} cannot be read as one volume "
                         f"({str(exc).strip().splitlines()[-1]}); export it again from the scanner or PACS") from None
    if image.GetDimension() != 3 or image.GetSize()[2] < 2:
        raise DicomError(f"{folder.name}: the series holds {len(series.files)} slice(s), not a volume; give each "
                         "case a 3D series (single 2D images: save them as PNG)")
    return image


def series_to_nifti(root: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """Write each case folder's series under ``root`` as ``out_dir/<folder name>.nii.gz``.

    Returns:
        ``(written files, problems)``: one problem line per case folder that could not be converted.
    """
    sitk = import_simpleitk()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, problems = [], []
    for folder in case_folders(root):
        try:
            image = read_series(folder)
        except DicomError as exc:
            problems.append(str(exc))
            continue
        target = out_dir / f"{folder.name}.nii.gz"
        sitk.WriteImage(image, str(target), True)
        written.append(target)
    return written, problems


def holds_case_folders(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds sub-folders and no image files: a folder of DICOM series, one per case."""
    entries = [p for p in Path(folder).iterdir() if not p.name.startswith(".")]
    return any(p.is_dir() for p in entries) and not any(p.is_file() and file_ending(p) for p in entries)


__all__ = ["DicomError", "DicomSeries", "case_folders", "holds_case_folders", "read_series", "series_in",
           "series_to_nifti"]
