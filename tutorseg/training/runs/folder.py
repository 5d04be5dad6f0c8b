"""Writing a run's files into its folder, and training on when that folder goes away for a while.

On Colab the run folder is on Google Drive, a network mount that can drop in the middle of a session
(``OSError: [Errno 107] Transport endpoint is not connected``), fail with ``EIO`` or a stale handle, or fill up.
Training should not die of it: an hour of GPU time would be lost for a mount that comes back a minute later.

:class:`RunFolderWriter` writes every checkpoint, ``history.json`` and ``progress.png`` through one method. When the
run folder fails with one of those errors, the file goes to a local fallback folder instead, and the learner is
told once, in the log and the notebook. Every later write tries the run folder again first; when it answers, the
files kept locally are copied back and the learner is told that too. At the end of training the writer insists
(a few tries, seconds apart) and, if the folder is still away, says exactly where everything is. A run whose
process ended while files were held locally gets them back when it is resumed on the same machine
(:meth:`RunFolderWriter.recover`).
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tutorseg.data.files import atomic_path
from tutorseg.data.problems import TutorsegError

# errno values that mean "the folder is not there right now", not "you asked for something wrong"
FOLDER_AWAY = {errno.ENOTCONN, errno.EIO, errno.ESTALE, errno.ENOSPC, errno.EROFS, errno.ENODEV, errno.ENXIO,
               errno.ETIMEDOUT, errno.ECONNABORTED}
PROBE = ".tutorseg_probe"  # written and removed to see whether the run folder is back
AWAY_MARKER = ".away"  # in the fallback folder while the run folder is away and nothing else is held
FINISH_TRIES = 10  # at the end: how often to try the run folder again
FINISH_WAIT_S = 3.0  # ... and how long to wait between tries


def run_path(runs_dir: str | Path, dataset: str, configuration: str, fold: int | str) -> Path:
    """Where a run lives: ``RUNS/<dataset>/<configuration>/fold_<k>``, the one naming used everywhere.

    Notebooks, the workspace and the docs name run folders this way, so that a notebook finds the run another one
    trained (on Colab, through Google Drive). It is nnU-Net's own ``<dataset>/<trainer__plans__configuration>/
    fold_<k>`` with tutorseg's single trainer and plan left out.

    >>> run_path("runs", "Task04_Hippocampus", "3d_fullres", 0).as_posix()
    'runs/Task04_Hippocampus/3d_fullres/fold_0'
    """
    return Path(runs_dir) / dataset / configuration / f"fold_{fold}"


def find_runs(runs_dir: str | Path, dataset: str, fold: int | str = 0, *, finished: bool = True) -> list[Path]:
    """The runs of ``dataset``'s fold under ``runs_dir``, one per configuration, the most recently written first.

    Args:
        runs_dir: the folder of runs (a workspace's ``runs_dir``).
        dataset: the dataset's name (``dataset.json``'s, as in the run folders' names).
        fold: the fold.
        finished: only finished runs (``checkpoint_final.pt`` present); False: every started run (``config.json``).
    """
    mark = "checkpoint_final.pt" if finished else "config.json"
    found = [p.parent for p in Path(runs_dir).glob(f"{dataset}/*/fold_{fold}/{mark}")]
    return sorted(found, key=lambda p: (p / mark).stat().st_mtime, reverse=True)


def fallback_folder(run_dir: Path) -> Path:
    """The local folder that stands in for ``run_dir`` while it is away (the same one for the same run)."""
    digest = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / "tutorseg_fallback" / f"{Path(run_dir).name}-{digest}"


class RunFolderWriter:
    """Writes files of a run folder, falling back to a local folder while the run folder is away.

    Args:
        run_dir: the run folder.
        announce: called with a sentence whenever the learner should know (the run's log).
    """

    def __init__(self, run_dir: Path, announce: Callable[[str], None]):
        self.run_dir = Path(run_dir)
        self.fallback = fallback_folder(self.run_dir)
        self.announce = announce
        self.held: list[str] = []  # names written to the fallback folder, not yet copied back

    def is_away(self, exc: OSError) -> bool:
        """Whether an error means the run folder is unreachable (as opposed to a wrong path or a bug)."""
        return exc.errno in FOLDER_AWAY or (exc.errno == errno.ENOENT and not self.run_dir.exists())

    def write(self, name: str, write: Callable[[Path], object]) -> Path:
        """Write ``run_dir/name`` with ``write(path)``, or the fallback's copy while the run folder is away.

        Returns:
            Where the file went.
        """
        if self._try_run_folder(lambda: write(self.run_dir / name)):
            return self.run_dir / name
        write(self.fallback / name)
        self._hold(name)
        return self.fallback / name

    def append(self, name: str, text: str) -> None:
        """Append ``text`` to ``run_dir/name`` (the log), or to the fallback's copy while the run folder is away."""

        def append_to(folder: Path) -> None:
            with open(folder / name, "a", encoding="utf-8") as f:
                f.write(text)

        if not self._try_run_folder(lambda: append_to(self.run_dir)):
            append_to(self.fallback)
            self._hold(name)

    def _try_run_folder(self, action: Callable[[], object]) -> bool:
        """Run ``action`` on the run folder if it is (back) there; False, and the learner told once, if it is away."""
        if self.held and not self.copy_back():
            return False
        try:
            action()
            return True
        except OSError as exc:
            if not self.is_away(exc):
                raise
            first = not self.held
            self._hold(None)
            if first:
                self.announce(f"the run folder {self.run_dir} cannot be written ({exc.strerror or exc}): training "
                              f"goes on, and its files are kept in {self.fallback} until the folder is back")
            return False

    def _hold(self, name: str | None) -> None:
        self.fallback.mkdir(parents=True, exist_ok=True)
        if name is None:  # away, nothing written yet: an empty marker keeps the state until something is
            name = AWAY_MARKER
            (self.fallback / name).touch()
        if name not in self.held:
            self.held.append(name)
        if name != AWAY_MARKER and AWAY_MARKER in self.held:
            self.held.remove(AWAY_MARKER)
            (self.fallback / AWAY_MARKER).unlink(missing_ok=True)

    def copy_back(self) -> bool:
        """Copy the files held locally into the run folder, if it answers again. Returns True when none is held."""
        was_away = bool(self.held)
        if was_away:
            try:  # is it back? a small write tells, also when nothing but the "away" state is held
                with open(self.run_dir / PROBE, "w", encoding="utf-8") as f:
                    f.write("tutorseg checks that the run folder is writable again")
                (self.run_dir / PROBE).unlink()
            except OSError as exc:
                if not self.is_away(exc):
                    raise
                return False
        for name in list(self.held):
            source = self.fallback / name
            if name == AWAY_MARKER or not source.is_file():  # nothing to copy, or superseded while away
                self.held.remove(name)
                source.unlink(missing_ok=True)
                continue
            try:
                if name == "log.txt":  # the lines logged while away follow the ones before
                    with open(self.run_dir / name, "a", encoding="utf-8") as f:
                        f.write(source.read_text(encoding="utf-8"))
                else:
                    with atomic_path(self.run_dir / name, durable=True) as tmp:
                        shutil.copyfile(source, tmp)
            except OSError as exc:
                if not self.is_away(exc):
                    raise
                return False
            self.held.remove(name)
            source.unlink(missing_ok=True)
        shutil.rmtree(self.fallback, ignore_errors=True)
        if was_away:
            self.announce(f"the run folder {self.run_dir} is back: the files kept in {self.fallback} were copied "
                          "into it")
        return True

    def finish(self) -> None:
        """At the end of training: get every held file into the run folder, trying a few times.

        Raises:
            TutorsegError: the run folder stayed away; the message says where the files are and what to do.
        """
        for attempt in range(FINISH_TRIES):
            if not self.held or self.copy_back():
                return
            if attempt < FINISH_TRIES - 1:
                time.sleep(FINISH_WAIT_S)
        raise TutorsegError(
            f"training finished, but the run folder {self.run_dir} cannot be reached: nothing is lost, the newest "
            f"files ({', '.join(self.held)}) are in {self.fallback}. When the folder is back (on Colab: "
            f"drive.mount('/content/drive', force_remount=True)), copy them into it, or call tutorseg.resume on the "
            "run folder, which copies them back itself")

    def recover(self) -> list[str]:
        """Copy back files a previous process of this run left in the fallback folder; returns their names.

        That process ended (a crash, a kill, a closed notebook) while the run folder was away.
        """
        if not self.fallback.is_dir():
            return []
        left = sorted(p.name for p in self.fallback.iterdir() if p.is_file())
        self.held = list(left)
        if left and self.copy_back():
            return [name for name in left if name != AWAY_MARKER]
        return []

    def discard_leftovers(self) -> bool:
        """Remove what an earlier run in this same folder left in the fallback (a new run starts). True if any."""
        if not self.fallback.exists():
            return False
        shutil.rmtree(self.fallback, ignore_errors=True)
        return True
