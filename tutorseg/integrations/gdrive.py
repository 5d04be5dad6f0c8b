"""The Google Drive edge: fetch one publicly shared file with gdown and explain what Drive refused.

Only this module imports gdown. Two gdown generations are in use and both work (``gdown>=5.2,<7``):

* gdown 5.2 is what Google Colab has preinstalled (5.2.2), so tutorseg does not replace it there. Its
  ``download(id=..., resume=True)`` draws its own progress bar and continues a ``.part`` file left by a cut transfer
  the next time it is called; it has no retries of its own.
* gdown 6 adds ``retries=`` (resuming a cut transfer with a Range request), ``timeout=`` and a ``progress=``
  callback (fed into tutorseg's own bar), removes ``fuzzy=`` and ``cached_download``, and raises
  ``gdown.exceptions.DownloadError`` for a transfer that stays incomplete.

:func:`_download_options` picks the keywords the installed gdown accepts (tested with 5.2.2 in the Colab-like
environment and 6.5.1 in the main one). Every failure arrives as an exception, which is translated here into a
:class:`~tutorseg.integrations.transfers.DownloadError` that says what to do.

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
import inspect
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
    gdown_6 = "progress" in inspect.signature(gdown.download).parameters
    bar = byte_progress_bar(target.name, None, progress and gdown_6)  # gdown 5 draws its own bar

    def on_chunk(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    options = (dict(quiet=True, progress=on_chunk, retries=RETRIES, timeout=TIMEOUT_S) if gdown_6
               else dict(quiet=not progress, resume=True))
    incomplete = getattr(gdown.exceptions, "DownloadError", ())  # gdown 6 only
    try:
        gdown.download(id=file_id, output=str(target), use_cookies=False, **options)
    except gdown.exceptions.FileURLRetrievalError as exc:
        raise _explain_refusal(file_id, str(exc)) from None
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise DownloadError(f"Drive answered HTTP {status} for {drive_url(file_id)}; check the "
                            "file id in the manifest") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise NetworkError(f"no network connection to Google Drive ({type(exc).__name__})") from None
    except incomplete as exc:  # incomplete transfer after all retries, and the like
        raise NetworkError(f"the Drive transfer failed: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise download_os_error(exc, f"while downloading {target.name} from Drive") from None
        raise DownloadError(f"while downloading {target.name} from Drive: {exc}") from None
    finally:
        bar.close()
    if not target.is_file():  # gdown 5 returns None (and writes nothing) where gdown 6 raises
        raise DownloadError(f"gdown delivered no file for {drive_url(file_id)}; run again, or use the manifest's "
                            "https:// mirror")
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
