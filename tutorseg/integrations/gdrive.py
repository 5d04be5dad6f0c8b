"""The Google Drive edge: fetch one publicly shared file with gdown and explain what Drive refused.

Only this module imports gdown. Tested with gdown 6.5.1; needs ``gdown>=6.5,<7`` (``retries=``, ``timeout=``,
``progress=``). gdown 6 removed
``fuzzy=``, ``cached_download(md5=...)`` and the ``--id`` option, and raises instead of returning ``None``, so the
call below is ``gdown.download(id=...)`` and every failure arrives as an exception, which is translated here into
a :class:`~tutorseg.integrations.transfers.DownloadError` that says what to do.

What users meet, and the text gdown hands over (taken from the pages Drive serves):

* quota: Drive's page says "Too many users have viewed or downloaded this file recently" (a popular file, about
  24 hours of waiting) -> :class:`DriveQuotaError`;
* not shared: Drive sends a sign-in page, gdown finds no download link and says "Cannot retrieve the public link of
  the file" -> :class:`DriveNotSharedError`;
* no network, disk full -> :class:`~tutorseg.integrations.transfers.NetworkError`,
  :class:`~tutorseg.integrations.transfers.DiskFullError`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from tutorseg.integrations.transfers import (
    DownloadError,
    NetworkError,
    byte_progress_bar,
    download_os_error,
)

QUOTA_TEXT = "too many users have viewed or downloaded this file"
NOT_PUBLIC_TEXT = "cannot retrieve the public link"
RETRIES = 3  # gdown resumes a cut transfer with a Range request this many times
TIMEOUT_S = 60.0


class DriveQuotaError(DownloadError):
    """Drive refuses a file downloaded too often recently."""


class DriveNotSharedError(DownloadError):
    """Drive asks for a sign-in: the file is not shared with 'Anyone with the link', or the id is wrong."""


def drive_url(file_id: str) -> str:
    """The page a person opens in a browser for a Drive file id."""
    return f"https://drive.google.com/file/d/{file_id}/view"


def fetch_drive_file(file_id: str, target: str | os.PathLike, *, progress: bool = True) -> Path:
    """Download the publicly shared Drive file ``file_id`` to ``target`` with gdown.

    gdown handles Drive's "can't scan this file for viruses" confirmation page and resumes a cut transfer
    (``retries``). Cookies from ``~/.cache/gdown`` are not used (``use_cookies=False``), so a download behaves the
    same for every learner and nothing is written to the home folder.

    Args:
        file_id: the id in ``https://drive.google.com/file/d/FILE_ID/view``.
        target: the file to write; gdown keeps its partial file beside it.
        progress: show a progress bar (tqdm.auto: a widget in notebooks).

    Returns:
        ``target``.

    Raises:
        DriveQuotaError, DriveNotSharedError, NetworkError, DiskFullError, DownloadError.
    """
    import gdown
    import requests


    target = Path(target)
    bar = byte_progress_bar(target.name, None, progress)

    def on_chunk(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        gdown.download(id=file_id, output=str(target), quiet=True, use_cookies=False, progress=on_chunk,
                       retries=RETRIES, timeout=TIMEOUT_S)
    except gdown.exceptions.FileURLRetrievalError as exc:
        raise _explain_refusal(file_id, str(exc)) from None
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise DownloadError(f"Drive answered HTTP {status} for {drive_url(file_id)}; check the "
                            "file id in the manifest") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise NetworkError(f"no network connection to Google Drive ({type(exc).__name__})") from None
    except gdown.exceptions.DownloadError as exc:  # incomplete transfer after all retries, and the like
        raise NetworkError(f"the Drive transfer failed: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise download_os_error(exc, f"while downloading {target.name} from Drive") from None
        raise DownloadError(f"while downloading {target.name} from Drive: {exc}") from None
    finally:
        bar.close()
    return target


def _explain_refusal(file_id: str, gdown_message: str) -> DownloadError:
    """Sort a refusal by the text Drive put on its page (gdown passes it on)."""
    text = " ".join(gdown_message.lower().split())
    if QUOTA_TEXT in text:
        return DriveQuotaError(
            f"Google Drive quota exceeded for {drive_url(file_id)}: \"Too many users have viewed or downloaded this "
            "file recently.\" Drive lifts this after up to 24 hours. Meanwhile: use the manifest's mirror if it has "
            "one, or open the link in a browser, use 'Add shortcut to Drive' / 'Make a copy' in your own Drive and "
            "download that copy. Instructors: add an https:// mirror as a second source in the manifest.")
    if NOT_PUBLIC_TEXT in text:
        return DriveNotSharedError(
            f"the Drive file {drive_url(file_id)} is not shared publicly (Drive asked for a sign-in), or the file "
            "id is wrong. The file's owner must set Share > General access > 'Anyone with the link'; check the id "
            "in the manifest.")
    return DownloadError(f"Google Drive refused {drive_url(file_id)}: {' '.join(gdown_message.split())[:300]}")


__all__ = ["DriveQuotaError", "DriveNotSharedError", "fetch_drive_file", "drive_url"]
