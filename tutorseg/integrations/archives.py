r"""Archives: hash them, pack a dataset folder into one deterministically, unpack one safely.

Used by :mod:`tutorseg.integrations.downloads` (verify, then extract what arrived) and
:mod:`tutorseg.integrations.manifests` (an instructor packs and hashes a dataset). Safety rules for extraction, because
an archive from the internet is untrusted input:

* no entry may have an absolute path (``/etc/passwd``, ``C:\\x``) or a ``..`` component;
* no link may point outside the extraction folder, and device files or FIFOs are refused;
* on Python versions that have it, ``tarfile``'s ``"data"`` filter (PEP 706) runs as well, as a second net;
* the sizes the entries declare must fit on the disk (and under ``ulimit -f``), no large entry may unpack from
  more than :data:`MAX_RATIO` times fewer bytes (a "zip bomb"), and no entry may unpack to more than it declares
  (the copy counts the bytes as it writes them).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from tutorseg.data.limits import FileLimitError, check_fits_on_disk
from tutorseg.data.problems import TutorsegError

HASH_ALGORITHMS = ("sha256", "md5")
CHUNK_BYTES = 1 << 20  # read files 1 MiB at a time: constant memory for multi-GB archives

# files that are never part of a dataset: macOS resource forks and Finder state, Windows thumbnails, notebook autosaves
JUNK_NAMES = {".DS_Store", "__MACOSX", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints"}

# Compression ratios: image files compress 1-10x, a label map of a small organ in a large volume a few hundred times;
# an entry above LARGE_ENTRY_BYTES unpacking more than MAX_RATIO times its packed size is a bomb, not data (deflate
# reaches ~1030x at most, so a bomb needs that size to do harm).
MAX_RATIO = 200
LARGE_ENTRY_BYTES = 256 * 2**20
MAX_ENTRIES = 200_000  # a dataset of this field has thousands of files; a million empty entries is an attack

# a fixed timestamp for every packed entry (and the gzip header), so packing the same folder twice gives the same bytes
PACK_MTIME = 0


class UnsafeArchiveError(TutorsegError):
    """An archive holds an entry that would land outside the folder it is extracted into, or is not an archive."""


def parse_hash(text: str) -> tuple[str, str]:
    """Split ``"sha256:HEX"`` into ``("sha256", "hex")``.

    Raises:
        ValueError: unknown algorithm or malformed text.
    """
    algorithm, _, hexdigest = text.partition(":")
    if algorithm not in HASH_ALGORITHMS or not hexdigest:
        raise ValueError(f"hash {text!r} is not 'sha256:HEX' or 'md5:HEX'")
    return algorithm, hexdigest.lower()


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hash a file in 1 MiB chunks and return ``"ALGORITHM:HEX"`` (the form manifests use)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return f"{algorithm}:{digest.hexdigest()}"


def is_junk(name: str) -> bool:
    """True for names that are never dataset content (``._x.nii.gz`` resource forks, ``.DS_Store``...)."""
    return name in JUNK_NAMES or name.startswith("._")


# --------------------------------------------------------------------------------------------------- packing


def _files_to_pack(folder: Path) -> list[Path]:
    """Every regular file under ``folder`` (links followed), junk left out, sorted by relative POSIX path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not is_junk(d)]
        found += [Path(dirpath) / name for name in filenames if not is_junk(name)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A tar header with nothing machine- or user-specific in it (owner, permissions, time)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = PACK_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack_folder(folder: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Pack ``folder`` into ``archive`` (``.tar.gz``) so that the same files always give the same bytes.

    Entries are ``FOLDERNAME/relative/path``, sorted, with fixed owner, permissions and time; the gzip header carries
    no file name or time. Links are followed (their targets are packed as regular files); junk such as
    ``.DS_Store`` and ``._*`` is left out. The archive is written to a temporary file and moved into place.

    Args:
        folder: the dataset folder.
        archive: the ``.tar.gz`` file to write.

    Returns:
        The archive's path.
    """
    folder, archive = Path(folder), Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    try:
        with open(partial, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=PACK_MTIME, compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in _files_to_pack(folder):
                name = f"{folder.name}/{path.relative_to(folder).as_posix()}"
                with open(path, "rb") as f:
                    tar.addfile(_tar_info(name, os.fstat(f.fileno()).st_size), f)
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)
    return archive


# --------------------------------------------------------------------------------------------------- safe extraction


def _check_entry_name(name: str, archive: Path) -> None:
    """Refuse absolute paths and ``..`` components, in POSIX and Windows spelling."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"{archive.name} holds an entry with an absolute path ({name!r}); it would be "
                                 "written outside the target folder, so the archive is refused. Ask its publisher "
                                 "for an archive with relative paths.")
    if ".." in posix.parts or ".." in windows.parts:
        raise UnsafeArchiveError(f"{archive.name} holds an entry that climbs out of the target folder ({name!r}); "
                                 "the archive is refused. Ask its publisher for an archive without '..' in paths.")


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    _check_entry_name(member.name, archive)
    if member.issym() or member.islnk():
        target = member.linkname
        # a symbolic link is resolved from the folder holding it; a hard link names another entry of the archive
        base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
        joined = PurePosixPath(os.path.normpath((base / target).as_posix())) if target else PurePosixPath("..")
        if PurePosixPath(target).is_absolute() or joined.parts[:1] == ("..",):
            raise UnsafeArchiveError(f"{archive.name} holds a link {member.name!r} -> {target!r} that points outside "
                                     "the target folder; the archive is refused.")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{archive.name} holds {member.name!r}, which is a device file or FIFO, not a "
                                 "file or folder; the archive is refused.")


def _check_zip_member(info: zipfile.ZipInfo, archive: Path) -> None:
    _check_entry_name(info.filename, archive)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"{archive.name} holds a symbolic link {info.filename!r}; links in zip files are "
                                 "refused. Ask for an archive with the files themselves.")


def _check_entry_count(count: int, archive: Path) -> None:
    if count > MAX_ENTRIES:
        raise FileLimitError(f"{archive.name} holds more than {MAX_ENTRIES:,} entries; no dataset of this field does. "
                             "It is not extracted.")


def _check_sizes(archive: Path, destination: Path, sizes: list[int], packed: list[int] | None) -> None:
    """Refuse an archive whose entries would not fit on the disk, or that unpacks like a bomb.

    ``packed``: each entry's compressed size (zip); ``None`` where only the archive's size is known (tar.gz).
    """
    total = sum(sizes)
    pairs = zip(sizes, packed) if packed is not None else [(total, archive.stat().st_size)]
    for unpacked, size in pairs:
        if unpacked > LARGE_ENTRY_BYTES and unpacked > MAX_RATIO * max(size, 1):
            raise FileLimitError(
                f"{archive.name} would unpack {unpacked / 2**20:,.0f} MiB from {size / 2**20:,.1f} MiB "
                f"({unpacked / max(size, 1):,.0f} times; real image data compresses at most ~{MAX_RATIO} times): a "
                "decompression bomb, not data. Nothing was extracted. Ask its publisher for the files themselves.")
    check_fits_on_disk(total, destination, what=f"{archive.name} unpacks to", largest_file=max(sizes, default=0))


def _copy_counted(source, target: Path, declared: int, archive: Path, name: str) -> None:
    """Copy an entry's bytes, stopping with an error past the size it declared."""
    written = 0
    with open(target, "wb") as out:
        for block in iter(lambda: source.read(CHUNK_BYTES), b""):
            written += len(block)
            if written > declared:
                raise FileLimitError(f"{archive.name}: entry {name!r} unpacks to more than the {declared:,} bytes it "
                                     "declares; the archive is forged or damaged. Extraction stopped.")
            out.write(block)


def extract_archive(archive: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Extract a tar (plain, gz, bz2, xz) or zip archive into ``destination``, refusing unsafe entries.

    Every entry and the sizes they declare are checked before anything is written, so a refused archive writes
    nothing; zip entries are then copied with their bytes counted (tar entries are read by their declared size).

    Args:
        archive: the archive file.
        destination: an (empty) folder to extract into; created if missing.

    Returns:
        ``destination``.

    Raises:
        UnsafeArchiveError: an entry escapes ``destination``, or the file is neither tar nor zip.
        FileLimitError: the entries would not fit on the disk, unpack like a bomb, or are too many.
    """
    archive, destination = Path(archive), Path(destination)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            members = []
            for member in tar:  # one at a time: a million entries is refused before their list is kept
                _check_tar_member(member, archive)
                members.append(member)
                _check_entry_count(len(members), archive)
            _check_sizes(archive, destination, [m.size for m in members if m.isfile()], None)
            destination.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.8-3.11 security releases (PEP 706)
                tar.extractall(destination, members=members, filter="data")
            else:
                tar.extractall(destination, members=members)
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_entry_count(len(infos), archive)
            for info in infos:
                _check_zip_member(info, archive)
            files = [info for info in infos if not info.is_dir()]
            _check_sizes(archive, destination, [i.file_size for i in files], [i.compress_size for i in files])
            destination.mkdir(parents=True, exist_ok=True)
            for info in infos:
                target = destination / PurePosixPath(info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source:
                    _copy_counted(source, target, info.file_size, archive, info.filename)
    else:
        raise UnsafeArchiveError(f"{archive.name} is neither a tar nor a zip archive, so it cannot be extracted. "
                                 "Check the manifest's 'extract' flag, or that the source serves the archive itself "
                                 "and not a web page.")
    return destination


def find_dataset_folder(root: str | os.PathLike) -> Path | None:
    """The shallowest folder under ``root`` (``root`` included) that holds a ``dataset.json``, or ``None``."""
    root = Path(root)
    candidates = [p.parent for p in root.rglob("dataset.json")
                  if not any(is_junk(part) for part in p.relative_to(root).parts)]
    return min(candidates, key=lambda p: (len(p.relative_to(root).parts), str(p)), default=None)

