"""What downloads from any host share: their errors, and a byte-counting progress bar.

:mod:`tutorseg.integrations.downloads` (URLs, manifests, archives) and :mod:`tutorseg.integrations.gdrive` (Google
Drive through gdown) both raise these, so a caller catches one :class:`DownloadError` whatever the source was.
"""

from __future__ import annotations

import errno

from tutorseg.data.jobs import progress_bar
from tutorseg.data.problems import TutorsegError


class DownloadError(TutorsegError):
    """A dataset could not be fetched, verified or extracted; the target folder is left as it was."""


class ChecksumError(DownloadError):
    """A fetched file's hash or size differs from the manifest's."""


class NetworkError(DownloadError):
    """A source could not be reached, or the connection failed and could not be resumed."""


class DiskFullError(DownloadError):
    """No space left on the device holding the target folder (ENOSPC)."""


def byte_progress_bar(name: str, total: int | None, enabled: bool):
    """A progress bar counting bytes (KiB, MiB...) of one file."""
    return progress_bar(total, enabled=enabled, description=name, unit="B", unit_scale=True, unit_divisor=1024)


def download_os_error(exc: OSError, context: str) -> DownloadError:
    """Turn an OSError into a DownloadError with advice; ENOSPC gets its own class."""
    if exc.errno == errno.ENOSPC:
        return DiskFullError(f"disk full {context}: no space left on the device. Free some space (on Colab: delete "
                             "files in /content or use a Drive folder) or choose another --to folder, then run again. "
                             "Nothing was left half-written.")
    return DownloadError(f"{context}: {exc.strerror or exc}")
