"""Fetch a dataset described by a manifest: whole, verified, safely extracted, or not at all.

What :func:`download` does for each file of a :class:`~tutorseg.integrations.manifests.Manifest`:

1. **Cache**: a file (or extracted folder) already in the target and verified is used as it is, no request made.
2. **Fetch**: sources are tried in order: ``gdrive:FILE_ID`` with gdown (:mod:`tutorseg.integrations.gdrive`),
   ``https://`` with the standard library. Bytes go to a temporary folder inside the target; a connection cut mid-file
   is resumed with an HTTP ``Range`` request where the server allows it.
3. **Verify**: size and hash (``sha256`` or ``md5``) are checked before anything is used; a mismatch tries the next
   source.
4. **Extract**: tar and zip archives are extracted safely (:mod:`tutorseg.integrations.archives`) into the temporary
   folder, the case count is checked, a marker with the archive's hash is written, and the folder is moved into place in
   one rename.

A manifest of separate files (one with a ``folder``, such as ISBI 2012's 60 PNGs) is fetched whole instead: every
file is fetched and verified into the temporary folder at its ``path``, the manifest's build step turns them into
the dataset (:func:`tutorseg.integrations.convert.convert_folders`), and the finished folder is checked, marked and
moved into place in one rename, as an extracted archive is.

Any failure removes the temporary folder, so the target never holds a half-written file or folder. One download
runs into a folder at a time (a lock on the folder): a second one waits and then finds the first's result cached.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tutorseg import __version__
from tutorseg.data.jobs import progress_bar
from tutorseg.data.limits import FileLimitError, check_fits_on_disk
from tutorseg.integrations.archives import UnsafeArchiveError, extract_archive, file_hash, find_dataset_folder, is_junk
from tutorseg.integrations.manifests import Manifest, ManifestFile, find_manifest, is_placeholder, sharing_instructions
from tutorseg.integrations.transfers import (
    ChecksumError,
    DiskFullError,
    DownloadError,
    NetworkError,
    byte_progress_bar,
    download_os_error,
)

MARKER_NAME = ".tutorseg_download.json"  # written inside an extracted folder: which archive, which hash, which files
STAGING_PREFIX = ".tutorseg-download-"  # the temporary folder inside the target, removed after success or failure
CHUNK_BYTES = 1 << 16  # network read size
TIMEOUT_S = 60.0  # seconds without a byte before a connection counts as dead
RESUME_ATTEMPTS = 5  # reconnections per source after a connection is cut mid-file
RESUME_BACKOFF_S = 1.0  # wait before reconnection n: n * this


@dataclass(frozen=True)
class SourceFailure:
    """Why one source of a file did not deliver it."""

    source: str
    error: DownloadError


# --------------------------------------------------------------------------------------------------- public API


def download(name_or_manifest: "str | os.PathLike | Manifest", to: str | os.PathLike, *, progress: bool = True,
             keep_archive: bool = False, check: bool = True) -> Path:
    """Download, verify and extract a dataset described by a manifest; return its dataset folder.

    Args:
        name_or_manifest: a shipped manifest's name (``"Task04_Hippocampus"``, case-insensitive), the path of a
            manifest ``.json`` file, or a :class:`~tutorseg.integrations.manifests.Manifest`.
        to: the download folder (created if missing). Extracted datasets land in it as ``TO/<folder in archive>``.
        progress: show a progress bar (console and notebook) per file.
        keep_archive: keep the downloaded archive beside the extracted folder (default: delete it, to save disk).
        check: after extraction, read the folder with :func:`tutorseg.data.dataset.load_dataset` (no voxels read) and
            refuse it unless its layout and number of labelled cases match the manifest.

    Returns:
        The dataset folder (the one holding ``dataset.json``), e.g. ``TO/Task04_Hippocampus``; for a manifest
        without archives, ``to``.

    Raises:
        DownloadError: with a message saying what failed and what to do (Drive quota, file not shared, checksum,
            disk full, no network, unsafe archive...). Subclasses: :class:`ChecksumError`, :class:`NetworkError`,
            :class:`DiskFullError`, :class:`tutorseg.integrations.gdrive.DriveQuotaError`,
            :class:`tutorseg.integrations.gdrive.DriveNotSharedError`.
        ManifestError: unknown name or invalid manifest.

    Example:
        It downloads 27 MB, so it is not run as a doctest::

            folder = tutorseg.download("Task04_Hippocampus", "data")  # -> data/Task04_Hippocampus
    """
    manifest = find_manifest(name_or_manifest)
    _refuse_unhosted(manifest)
    to = Path(to).expanduser()
    created = not to.exists()
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise download_os_error(exc, f"cannot create the download folder {to}") from None
    placed: list[Path] = []
    try:
        with _only_download_into(to):
            if manifest.folder is not None:
                return _download_folder(manifest, to, progress=progress, check=check)
            for entry in manifest.files:
                placed.append(_download_file(entry, manifest, to, progress=progress, keep_archive=keep_archive,
                                             check=check))
    except BaseException:
        if created and to.is_dir() and not any(to.iterdir()):
            to.rmdir()
        raise
    folders = [find_dataset_folder(p) for p in placed if p.is_dir()]
    return next((f for f in folders if f is not None), to)


@contextmanager
def _only_download_into(to: Path) -> Iterator[None]:
    """Hold an exclusive lock on the download folder while downloading into it.

    Two downloads into one folder (two notebooks, or a re-run cell while the first still runs) would fetch the same
    archive twice and race to rename it into place. With the lock the second waits, then finds the first's verified
    result in the cache. Whoever holds the lock also removes staging folders a killed download left behind (no
    live download can own them). The lock is ``flock`` on the folder itself, so no lock file is left in it; where
    the file system has no locks (Windows, some FUSE mounts) the download goes on unlocked.
    """
    fd = _lock_folder(to)
    try:
        if fd is not None:
            for stale in to.glob(STAGING_PREFIX + "*"):
                shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def _lock_folder(folder: Path) -> int | None:
    """An open descriptor of ``folder`` holding an exclusive ``flock`` (waiting for it if taken), or None."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"tutorseg: another download into {folder} is running; waiting for it to finish", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # no locks on this file system
        os.close(fd)
        return None
    return fd


# --------------------------------------------------------------------------------------------------- one file


def _download_file(entry: ManifestFile, manifest: Manifest, to: Path, *, progress: bool, keep_archive: bool,
                   check: bool) -> Path:
    """Fetch, verify and place one manifest file (extracting it if asked); return what was placed."""
    cached = _cached(entry, to)
    if cached is not None:
        return cached
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=to))
    try:
        fetched = _fetch_verified(entry, staging, progress=progress)
        if not entry.extract:
            return _move_into_place(fetched, to / entry.filename)
        folder = _extract(fetched, entry, manifest, staging, check=check)
        placed = _move_into_place(folder, to / folder.name)
        if keep_archive:
            _move_into_place(fetched, to / entry.filename)
        return placed
    except OSError as exc:
        raise download_os_error(exc, f"while writing {entry.filename} into {to}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_folder(manifest: Manifest, to: Path, *, progress: bool, check: bool) -> Path:
    """Fetch every file of a manifest of separate files, build the dataset from them, move it into place whole."""
    assert manifest.folder is not None
    final = to / manifest.folder
    digest = _files_digest(manifest)
    cached = _cached_folder(final, digest)
    if cached is not None:
        return cached
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=to))
    try:
        fetched = staging / "fetched"
        bar = progress_bar(len(manifest.files), enabled=progress, description=manifest.name, unit="file")
        with bar:
            for entry in manifest.files:
                place = fetched / entry.relative_path
                place.parent.mkdir(parents=True, exist_ok=True)
                os.replace(_fetch_verified(entry, staging, progress=False), place)
                bar.update(1)
        folder = _build(fetched, manifest, staging)
        if check:
            _check_content(folder, manifest, f"the files of {manifest.name}")
        _write_marker(folder, manifest.name, f"{len(manifest.files)} files", digest)
        return _move_into_place(folder, final)
    except OSError as exc:
        raise download_os_error(exc, f"while writing {manifest.name} into {to}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build(fetched: Path, manifest: Manifest, staging: Path) -> Path:
    """The dataset folder made from the fetched files: converted by the build step (files kept beside), or as is."""
    assert manifest.folder is not None
    if manifest.build is None:
        return fetched.rename(staging / manifest.folder)
    from tutorseg.integrations.convert import ConversionError, convert_folders

    step = manifest.build
    try:
        result = convert_folders(fetched / step.images, fetched / step.masks, staging / "built", name=manifest.folder,
                                 channel_names=step.channel_names, labels=step.labels, value_mapping=step.mask_values,
                                 case_ids=step.case_ids, description=step.description)
    except ConversionError as exc:
        raise DownloadError(f"the files of {manifest.name} were verified but cannot be converted as the manifest's "
                            f"build step says: {exc}") from None
    for item in fetched.iterdir():  # the files as published stay in the dataset folder (e.g. _raw/)
        os.replace(item, result.dataset_dir / item.name)
    return result.dataset_dir


def _files_digest(manifest: Manifest) -> str:
    """One hash for a manifest of separate files: of every file's place and hash, and of the build step."""
    content = json.dumps({"files": sorted((f.relative_path, f.hash) for f in manifest.files),
                          "build": manifest.build.to_dict() if manifest.build else None}, sort_keys=True)
    return "sha256:" + hashlib.sha256(content.encode("utf-8")).hexdigest()


def _refuse_unhosted(manifest: Manifest) -> None:
    """A manifest made by `tutorseg manifest create` whose Drive id was never filled in has nothing to fetch."""
    for entry in manifest.files:
        if not entry.usable_sources:
            where = manifest.path or f"the manifest {manifest.name!r}"
            raise DownloadError(
                f"{manifest.name}: {entry.filename} has no download source yet: its only source is the Drive id "
                f"placeholder written by `tutorseg manifest create`. The dataset's host must upload the archive, "
                f"share it and put the file id in {where}.\n"
                + sharing_instructions(manifest.path or f"{manifest.name}.json", entry.filename))


def _fetch_verified(entry: ManifestFile, staging: Path, *, progress: bool) -> Path:
    """Try each source until one delivers a file with the right size and hash."""
    failures: list[SourceFailure] = []
    if entry.size is not None:  # a manifest may declare any size: it must fit before a byte is fetched
        try:
            check_fits_on_disk(entry.size, staging, what=f"{entry.filename} is declared as",
                               largest_file=entry.size)
        except FileLimitError as exc:
            raise DiskFullError(str(exc)) from None
    for source in entry.sources:
        if is_placeholder(source):
            continue
        target = staging / entry.filename
        try:
            _fetch(source, target, size=entry.size, progress=progress)
            _verify(target, entry, source)
            return target
        except DiskFullError:
            raise  # another source would need the same disk space
        except DownloadError as exc:
            failures.append(SourceFailure(source, exc))
            target.unlink(missing_ok=True)
    raise _summarise(entry, failures)


def _summarise(entry: ManifestFile, failures: list[SourceFailure]) -> DownloadError:
    """One error for a file whose every source failed, of the failures' class when they all agree."""
    lines = "\n".join(f"  - {_short(f.source)}: {f.error}" for f in failures)
    kinds = {type(f.error) for f in failures}
    kind = kinds.pop() if len(kinds) == 1 else DownloadError
    advice = ("\nCheck the internet connection (on Colab: Runtime > Reconnect) and run again."
              if kind is NetworkError else "")
    return kind(f"could not download {entry.filename}; every source failed:\n{lines}{advice}")


def _short(source: str) -> str:
    return source if len(source) <= 90 else source[:87] + "..."


def _fetch(source: str, target: Path, *, size: int | None, progress: bool) -> None:
    if source.startswith("gdrive:"):
        from tutorseg.integrations.gdrive import fetch_drive_file

        fetch_drive_file(source.removeprefix("gdrive:"), target, progress=progress)
    else:
        fetch_url(source, target, size=size, progress=progress)


def _verify(path: Path, entry: ManifestFile, source: str) -> None:
    """Size, then hash: a file is used only if both match the manifest."""
    found_size = path.stat().st_size
    if entry.size is not None and found_size != entry.size:
        raise ChecksumError(f"size {found_size} bytes, expected {entry.size} (hash not checked): the source served "
                            "a different or truncated file")
    found = file_hash(path, entry.hash_algorithm)
    if found != entry.hash:
        raise ChecksumError(f"hash {found}, expected {entry.hash}: the file is corrupted or is not the one the "
                            "manifest describes")


# --------------------------------------------------------------------------------------------------- HTTP(S)


def fetch_url(url: str, target: str | os.PathLike, *, size: int | None = None, progress: bool = True,
              attempts: int = RESUME_ATTEMPTS, timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` to ``target`` with the standard library, resuming a cut connection with ``Range``.

    A connection that fails before any byte arrives is not retried (the source counts as unreachable, so the next
    one is tried quickly). A connection cut mid-file is re-opened up to ``attempts`` times, asking for the rest with
    ``Range: bytes=N-``; a server that answers 200 instead of 206 sends the whole file again.

    Raises:
        NetworkError: unreachable, or still cut after ``attempts`` reconnections.
        DownloadError: the server answered an HTTP error (404...).
        DiskFullError: no space left while writing.
    """
    target = Path(target)
    target.unlink(missing_ok=True)
    bar = byte_progress_bar(target.name, size, progress)
    try:
        for attempt in range(attempts + 1):
            before = target.stat().st_size if target.exists() else 0
            try:
                _transfer(url, target, bar, timeout=timeout, size=size)
                return target
            except (http.client.IncompleteRead, ConnectionError, TimeoutError, socket.timeout,
                    urllib.error.URLError, http.client.HTTPException) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    raise DownloadError(f"the server answered HTTP {exc.code} {exc.reason}") from None
                received = (target.stat().st_size if target.exists() else 0) - before
                if received == 0 or attempt == attempts:
                    raise NetworkError(f"no network connection to the source ({_reason(exc)})"
                                       if received == 0 and before == 0 else
                                       f"the connection was cut {attempt + 1} times ({_reason(exc)})") from None
                time.sleep(RESUME_BACKOFF_S * (attempt + 1))
    except OSError as exc:
        raise download_os_error(exc, f"while downloading {target.name}") from None
    finally:
        bar.close()
    return target


def _refuse_oversized(length: int, size: int | None, target: Path) -> None:
    """A server announcing more bytes than the manifest declares, or than the disk holds, is not read from."""
    if size is not None and length > size:
        raise ChecksumError(f"the server announces {length:,} bytes, the manifest declares {size:,}: not the "
                            "manifest's file; nothing was downloaded from it")
    try:
        check_fits_on_disk(length, target.parent, what=f"{target.name} is", largest_file=length)
    except FileLimitError as exc:
        raise DiskFullError(str(exc)) from None


def _transfer(url: str, target: Path, bar, *, timeout: float, size: int | None = None) -> None:
    """One HTTP request: ask for the bytes not yet in ``target`` and append them, never past ``size``."""
    offset = target.stat().st_size if target.exists() else 0
    headers = {"User-Agent": f"tutorseg/{__version__} (+urllib)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        resumed = offset > 0 and response.status == 206
        if not resumed:
            offset = 0  # first request, or the server ignored Range: start from the beginning
        length = response.headers.get("Content-Length")
        if length is not None:
            bar.total = offset + int(length)
            _refuse_oversized(offset + int(length), size, target)
        bar.reset(total=bar.total)
        bar.update(offset)
        received = 0
        with open(target, "ab" if resumed else "wb") as f:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                received += len(chunk)
                if size is not None and offset + received > size:  # a server that sends on past the file's size
                    raise ChecksumError(f"the server sent more than the {size:,} bytes the manifest declares; the "
                                        "download was stopped there")
                f.write(chunk)
                bar.update(len(chunk))
    if length is not None and received < int(length):  # read() returns b"" when the server closes early
        raise http.client.IncompleteRead(b"", int(length) - received)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, http.client.IncompleteRead):
        return f"the server closed the connection {exc.expected} bytes before the end"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------------------------------- extraction


def _extract(archive: Path, entry: ManifestFile, manifest: Manifest, staging: Path, *, check: bool) -> Path:
    """Extract into the staging folder; return the one folder to move into place (marker written inside)."""
    unpacked = staging / "unpacked"
    try:
        extract_archive(archive, unpacked)
    except (UnsafeArchiveError, FileLimitError) as exc:
        raise DownloadError(str(exc)) from None
    content = [p for p in unpacked.iterdir() if not is_junk(p.name)]
    if len(content) == 1 and content[0].is_dir():
        folder = content[0]
    else:  # files at the archive's top level: keep them together in a folder named after the dataset
        folder = unpacked.rename(staging / manifest.name)
    if check:
        _check_content(folder, manifest, entry.filename)
    _write_marker(folder, manifest.name, entry.filename, entry.hash)
    return folder


def _check_content(folder: Path, manifest: Manifest, what: str) -> None:
    """Refuse a downloaded dataset that does not match the manifest (layout, labelled cases)."""
    from tutorseg.data.dataset import load_dataset

    dataset_folder = find_dataset_folder(folder)
    if dataset_folder is None:
        raise DownloadError(f"{what} was verified but holds no dataset.json; the manifest "
                            f"{manifest.name!r} points at the wrong archive")
    ds = load_dataset(dataset_folder)
    if ds.layout != manifest.layout or len(ds.training) != manifest.expected_cases:
        raise DownloadError(f"{what} holds a {ds.layout} dataset with {len(ds.training)} labelled cases; "
                            f"the manifest {manifest.name!r} expects {manifest.layout} with {manifest.expected_cases}. "
                            "Fix the manifest, or pass check=False to keep the data anyway")


def _listing(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under ``folder`` (marker excluded)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER_NAME}


def _write_marker(folder: Path, manifest_name: str, filename: str, content_hash: str) -> None:
    marker = {"manifest": manifest_name, "filename": filename, "hash": content_hash,
              "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "files": _listing(folder)}
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def _move_into_place(path: Path, final: Path) -> Path:
    """Rename from the staging folder into the target (same file system: atomic); never overwrite."""
    if final.exists():
        raise DownloadError(f"{final} already exists but is not a verified download of this manifest; "
                            "move it away (or choose another --to folder) and run again")
    os.replace(path, final)
    return final


# --------------------------------------------------------------------------------------------------- cache


def _cached(entry: ManifestFile, to: Path) -> Path | None:
    """What is already in ``to`` and verified for this file, or None.

    A plain file is re-hashed. An extracted folder carries a marker (archive hash + file listing); it counts when
    the hash matches and every listed file is present with its size. A folder whose files went missing raises,
    since replacing it could lose the user's own work.
    """
    if not entry.extract:
        path = to / entry.filename
        return path if path.is_file() and file_hash(path, entry.hash_algorithm) == entry.hash else None
    for marker_path in sorted(to.glob(f"*/{MARKER_NAME}")):
        folder = _cached_folder(marker_path.parent, entry.hash)
        if folder is not None:
            return folder
    return None


def _cached_folder(folder: Path, content_hash: str) -> Path | None:
    """``folder`` if its marker says it was made from ``content_hash`` and its files are all there, else None.

    Raises:
        DownloadError: the marker matches but files went missing (replacing the folder could lose the user's work).
    """
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if marker.get("hash") != content_hash:
        return None
    listed = marker.get("files", {})
    present = _listing(folder)
    missing = sorted(name for name, size in listed.items() if present.get(name) != size)
    if missing:
        raise DownloadError(f"{folder} came from {marker.get('filename')} but {len(missing)} file(s) are missing or "
                            f"changed (e.g. {missing[0]}). Delete the folder and run the download again.")
    return folder
