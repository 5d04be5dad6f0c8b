"""Writing files so that nobody ever reads a half-written one.

Every artefact tutorseg writes (JSON, figures, label maps, checkpoints) goes to a temporary file in the target's
folder first and is then moved into place with ``os.replace``, which is atomic on POSIX file systems and on Google
Drive's FUSE mount: a reader, or a run resumed after a Colab disconnect, sees the old file or the new one, never a
mixture. On failure the temporary file is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_PATTERN = ".*.tmp*"  # glob of the temporary files atomic_path makes: .NAME.<random>.tmp<ending>


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    The temporary name keeps ``path``'s ending, so writers that choose the format from it (matplotlib, nibabel,
    numpy's ``.npz``) behave as they would for ``path`` itself.

    Args:
        path: the file to (re)write. Its folder is created if needed.
        durable: also ``fsync`` the file and its folder, so the new content survives a power cut or a killed VM
            (used for checkpoints; costs a few milliseconds).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "run" / "notes.txt"
        >>> with atomic_path(target) as tmp:  # a reader of notes.txt never sees it half-written
        ...     _ = tmp.write_text("epoch 3 done")
        >>> target.read_text(), tmp.exists()
        ('epoch 3 done', False)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{ending}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            _fsync_folder(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_folder(path: str | os.PathLike, *, prefix: str | None = None) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; when the block ends without error it takes ``path``'s place.

    A folder is built in full (a converted dataset, an export, a local copy) or not at all: a reader never finds a
    half-filled one. An existing ``path`` is removed just before the staging folder is renamed into its place;
    after an error the staging folder is removed and ``path`` is left as it was.

    Args:
        path: the folder to (re)create. Its parent is created if needed.
        prefix: the staging folder's name prefix (default ``.NAME_``, hidden).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix or f".{path.name}_", dir=path.parent))
    try:
        yield staging
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str, *, durable: bool = False) -> Path:
    """Write UTF-8 text atomically (``durable``: see :func:`atomic_path`). Returns the path."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data, *, indent: int = 2, durable: bool = False) -> Path:
    """Write ``data`` as indented JSON (with a final newline) atomically. Returns the path."""
    return write_text_atomic(path, json.dumps(data, indent=indent) + "\n", durable=durable)


def display_path(path: str | os.PathLike | None) -> str:
    """A path for printing, with the home folder shown as ``~``: reports and notebooks get shared, user names need not.

    ``None`` prints as ``-``.
    """
    if path is None:
        return "-"
    path, home = Path(path), Path.home()
    if home == Path(home.anchor) or not path.is_relative_to(home):  # a home of "/" would turn every path into ~
        return str(path)
    return str(Path("~") / path.relative_to(home))
