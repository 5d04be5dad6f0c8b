"""Where a notebook keeps its files, on Google Colab and everywhere else: one call, :func:`setup_workspace`.

On Colab the virtual machine's disk is fast but lost at every disconnect, and Google Drive is slow but kept. So:

- runs (checkpoints, logs, predictions) go to Drive, ``MyDrive/<project>/runs``: a run survives a disconnect and
  :func:`tutorseg.resume` picks it up (notebook 03);
- the dataset is copied from wherever it is (often Drive) to the local disk ``/content/<project>_data`` before
  training, because reading thousands of small files from Drive in every epoch is slow;
- preprocessed arrays stay on the local disk too (they are remade in a minute).

Outside Colab the same call uses local folders under ``work_dir`` and leaves the dataset where it is.

The only line that touches Google's API is in :func:`_mount_drive`; the rest runs (and is tested) anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tutorseg.data.copies import COPY_MARKER, DatasetCopyError, copy_dataset
from tutorseg.data.files import display_path
from tutorseg.data.problems import TutorsegError
from tutorseg.integrations.environment import on_colab
from tutorseg.training.runs.folder import find_runs, run_path

COLAB_DRIVE_MOUNT = Path("/content/drive")  # where Colab's drive.mount puts Google Drive, by convention
COLAB_LOCAL_DISK = Path("/content")  # the Colab machine's own (fast, temporary) disk


class WorkspaceError(TutorsegError):
    """The workspace cannot be set up (Drive not mountable, dataset folder missing)."""


__all__ = ["COPY_MARKER", "DatasetCopyError", "Workspace", "WorkspaceError", "copy_dataset", "drive_root",
           "setup_workspace"]


@dataclass(frozen=True)
class Workspace:
    """The folders a notebook works in.

    Attributes:
        root: the project folder that is kept (``MyDrive/tutorseg`` on Colab, ``work_dir`` elsewhere).
        runs_dir: training runs, one folder each (``root/runs``); kept across Colab disconnects.
        scratch_dir: fast local folder for preprocessed data and copies (lost when a Colab session ends).
        dataset_dir: the dataset to use: the local copy on Colab, the folder itself elsewhere, or ``None``.
        on_colab: running inside Google Colab.
        drive_mounted: Google Drive is mounted (Colab only).
        notes: what was done (mounted, copied, reused a copy...), for the notebook to print.
    """

    root: Path
    runs_dir: Path
    scratch_dir: Path
    dataset_dir: Path | None
    on_colab: bool
    drive_mounted: bool
    notes: tuple[str, ...] = field(default=())

    def run_dir(self, dataset: str, configuration: str, fold: int | str = 0) -> Path:
        """The run folder of a fold: ``runs/<dataset>/<configuration>/fold_<k>`` (created if missing).

        The same naming everywhere (:func:`tutorseg.training.runs.folder.run_path`), so notebook 04 finds the run
        notebook 03 trained, on Colab through Google Drive.
        """
        path = run_path(self.runs_dir, dataset, configuration, fold)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def finished_run(self, dataset: str, fold: int | str = 0) -> Path | None:
        """The newest finished run (``checkpoint_final.pt``) of the dataset's fold, any configuration, or None."""
        runs = find_runs(self.runs_dir, dataset, fold)
        return runs[0] if runs else None

    def started_run(self, dataset: str, fold: int | str = 0) -> Path | None:
        """The newest run of the dataset's fold, finished or not (after a disconnect: the one to resume), or None."""
        runs = find_runs(self.runs_dir, dataset, fold, finished=False)
        return runs[0] if runs else None

    @property
    def preprocessed_dir(self) -> Path:
        """Where preprocessed arrays go: the fast local disk."""
        return self.scratch_dir / "preprocessed"

    def to_dict(self) -> dict:
        return {"root": str(self.root), "runs_dir": str(self.runs_dir), "scratch_dir": str(self.scratch_dir),
                "dataset_dir": str(self.dataset_dir) if self.dataset_dir else None, "on_colab": self.on_colab,
                "drive_mounted": self.drive_mounted, "notes": list(self.notes)}

    def _rows(self) -> list[tuple[str, str]]:
        return [("runs (kept)", display_path(self.runs_dir)),
                ("scratch (fast, temporary)" if self.on_colab else "scratch", display_path(self.scratch_dir)),
                ("dataset", display_path(self.dataset_dir)),
                ("where", "Google Colab, Drive mounted" if self.drive_mounted else
                 "Google Colab" if self.on_colab else "this computer")]

    def __str__(self) -> str:
        lines = [f"{name:26s} {value}" for name, value in self._rows()]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def __repr__(self) -> str:
        return (f"Workspace(runs_dir={display_path(self.runs_dir)!r}, dataset_dir={display_path(self.dataset_dir)!r}, "
                f"on_colab={self.on_colab})")

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'><code>{v}</code></td></tr>"
                       for k, v in self._rows())
        notes = "".join(f"<li>{n}</li>" for n in self.notes)
        return f"<b>Workspace</b><table>{body}</table>" + (f"<ul>{notes}</ul>" if notes else "")


# --------------------------------------------------------------------------------------------------- Drive


def _mount_drive(mount_point: Path) -> None:
    """Mount Google Drive at ``mount_point`` (Colab asks the user to allow access). The only google.colab call."""
    try:
        from google.colab import drive
    except ImportError:
        raise WorkspaceError("Google Drive can only be mounted inside Google Colab (google.colab is not "
                             "importable here); outside Colab call setup_workspace(..., use_drive=False)") from None
    drive.mount(str(mount_point))


def drive_root(mount_point: Path = COLAB_DRIVE_MOUNT, *, mount: bool = True) -> Path:
    """The user's ``MyDrive`` folder, mounting Drive first if it is not mounted yet.

    Raises:
        WorkspaceError: not on Colab, or the mount did not produce ``MyDrive``.
    """
    my_drive = Path(mount_point) / "MyDrive"
    if not my_drive.is_dir() and mount:
        _mount_drive(Path(mount_point))
    if not my_drive.is_dir():
        raise WorkspaceError(f"Google Drive is not mounted at {mount_point} (no MyDrive/ folder there); "
                             "run the cell again and allow access when Colab asks")
    return my_drive


# --------------------------------------------------------------------------------------------------- the one call


def setup_workspace(dataset: str | os.PathLike | None = None, *, project: str = "tutorseg",
                    work_dir: str | os.PathLike = "tutorseg_work", colab: bool | None = None,
                    use_drive: bool = True, drive_mount_point: str | os.PathLike = COLAB_DRIVE_MOUNT,
                    local_disk: str | os.PathLike = COLAB_LOCAL_DISK,
                    copy_to_local: bool | None = None) -> Workspace:
    """Choose where runs, scratch files and the dataset live, on Colab (with Drive) or on this computer.

    On Colab (``colab=None`` detects it): mount Google Drive (Colab asks for permission once), keep runs in
    ``MyDrive/<project>/runs``, and copy ``dataset`` to the local disk ``/content/<project>_data``. Elsewhere:
    runs in ``<work_dir>/runs``, scratch in ``<work_dir>/scratch``, the dataset used where it is.

    Args:
        dataset: a dataset folder, or ``None`` (no dataset yet; the notebooks then use the bundled sample).
        project: name of the project folder on Drive (``MyDrive/<project>``).
        work_dir: the local project folder outside Colab (and on Colab when ``use_drive=False``).
        colab: force the Colab (True) or local (False) behaviour; ``None`` detects.
        use_drive: on Colab, keep runs on Google Drive (False: on the temporary local disk, lost at disconnect).
        drive_mount_point: where Drive is mounted (Colab's convention, ``/content/drive``).
        local_disk: the fast local disk on Colab (``/content``).
        copy_to_local: copy the dataset to the fast local disk; ``None``: on Colab only.

    Returns:
        the :class:`Workspace`; print it to see where everything is.

    Raises:
        WorkspaceError: Drive cannot be mounted, or ``dataset`` is not a folder.

    Example:
        On Colab (it mounts Google Drive, so it is not run as a doctest)::

            ws = setup_workspace("/content/drive/MyDrive/datasets/Task04_Hippocampus")
            run = ws.run_dir("Task04_Hippocampus", "3d_fullres", fold=0)  # runs/Task04_Hippocampus/3d_fullres/fold_0
    """
    is_colab = on_colab() if colab is None else bool(colab)
    notes: list[str] = []
    drive_mounted = False
    if is_colab and use_drive:
        root = drive_root(Path(drive_mount_point)) / project
        drive_mounted = True
        notes.append(f"Google Drive mounted at {drive_mount_point}; runs are kept in MyDrive/{project}/runs")
    else:
        root = Path(work_dir).expanduser().resolve()
        if is_colab:
            notes.append("runs are on the Colab machine's disk and are lost when the session ends "
                         "(use_drive=True keeps them on Google Drive)")
    scratch = Path(local_disk) / f"{project}_scratch" if is_colab else root / "scratch"
    runs = root / "runs"
    for folder in (runs, scratch):
        folder.mkdir(parents=True, exist_ok=True)

    dataset_dir = None
    if dataset is not None:
        dataset_dir = Path(dataset).expanduser()
        if not dataset_dir.is_dir():
            raise WorkspaceError(f"dataset folder {dataset_dir} not found; give the folder that holds "
                                 "dataset.json and imagesTr/")
        if copy_to_local if copy_to_local is not None else is_colab:
            target = Path(local_disk) / f"{project}_data" if is_colab else scratch / "data"
            dataset_dir, note = copy_dataset(dataset_dir, target)
            notes.append(note)
        dataset_dir = dataset_dir.resolve()
    return Workspace(root=root, runs_dir=runs, scratch_dir=scratch, dataset_dir=dataset_dir, on_colab=is_colab,
                     drive_mounted=drive_mounted, notes=tuple(notes))
