"""Copies of a dataset folder on a fast local disk, and where each copy came from.

On Colab a dataset on Google Drive is copied to the machine's own disk before training (reading thousands of small
files from Drive in every epoch is slow; :func:`tutorseg.colab.setup_workspace` does it). That disk is wiped at every
disconnect, so each copy records its source in a marker file: :func:`tutorseg.resume` reads it (through the run's
``config.json``) and copies the dataset again when a resumed run finds its copy gone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tutorseg.data.files import atomic_folder
from tutorseg.data.problems import TutorsegError

COPY_MARKER = ".tutorseg_copy.json"  # written into a copied dataset: what it was copied from, to skip a second copy


class DatasetCopyError(TutorsegError):
    """A dataset folder to copy does not exist."""


def _folder_signature(folder: Path) -> dict:
    """Number of files and their total size: enough to tell whether a copy is complete and current."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != COPY_MARKER]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def copy_dataset(source: str | os.PathLike, destination_parent: str | os.PathLike) -> tuple[Path, str]:
    """Copy a dataset folder under ``destination_parent`` unless an identical copy is already there.

    The copy is made in a temporary folder and renamed into place, so an interrupted copy is never mistaken for a
    complete one; a marker file records the source's file count and size.

    Args:
        source: the dataset folder (holding ``dataset.json``).
        destination_parent: the folder to copy into (the copy keeps the source's folder name).

    Returns:
        ``(path of the copy, a note saying what was done)``.

    Raises:
        DatasetCopyError: the source folder does not exist.
    """
    source = Path(source).expanduser()
    if not source.is_dir():
        raise DatasetCopyError(f"dataset folder {source} not found; give the folder that holds dataset.json "
                               "(on Colab, e.g. /content/drive/MyDrive/datasets/Task04_Hippocampus)")
    destination = Path(destination_parent) / source.name
    signature = {"source": str(source), **_folder_signature(source)}
    marker = destination / COPY_MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == signature:
        return destination, f"reused the local copy of {source.name} ({signature['files']} files)"
    with atomic_folder(destination) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / COPY_MARKER).write_text(json.dumps(signature), encoding="utf-8")
    megabytes = signature["bytes"] / 1e6
    return destination, f"copied {source.name} to the local disk ({signature['files']} files, {megabytes:.1f} MB)"


def copied_from(folder: str | os.PathLike) -> Path | None:
    """The folder that ``folder`` was copied from by :func:`copy_dataset`, or None (not a copy)."""
    try:
        return Path(json.loads((Path(folder) / COPY_MARKER).read_text(encoding="utf-8"))["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
