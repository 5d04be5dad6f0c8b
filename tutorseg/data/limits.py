"""Limits no real file of this field reaches, checked before tutorseg opens a file someone else made.

A learner opens files they did not make: a model an instructor put on Drive, an archive a manifest names, a
colleague's plan, images in every format. A file can be made to look small and be huge once opened (a 3 MB zip that
unpacks 2 GiB, a 6 MB ``.nii.gz`` holding a 6 GiB volume), or to be nested until the parser's recursion runs out.
Each check here compares what a file *says* it holds with what this machine has, before the bytes are read, and
answers with a message that names the file, the limit and what to do, never with a traceback from inside numpy or
torch. Where the files are opened:

* JSON artefacts (plans, fingerprints, dataset.json, manifests, model.json): :func:`parse_json`;
* images: :func:`memory_shortfall` on the header's shape and type, before the voxels are read;
* archives and downloads: :func:`check_fits_on_disk` on the declared sizes, before and while writing
  (:mod:`tutorseg.integrations.archives`, :mod:`tutorseg.integrations.transfers`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tutorseg.data.problems import TutorsegError

# The largest JSON artefact of a real dataset is a fingerprint of a few thousand cases: a few MB.
MAX_JSON_BYTES = 64 * 2**20
# Artefacts nest a handful of levels (plan -> configurations -> a configuration -> kernel sizes -> a size).
MAX_JSON_DEPTH = 32
# Room kept free on a disk after writing (a Colab VM whose disk fills loses its session).
DISK_MARGIN_BYTES = 512 * 2**20
# An image may take at most this share of the memory available before it is read: reading, casting to float and
# resampling hold a few copies at once.
MEMORY_SHARE_PER_IMAGE = 0.5
# Images smaller than this are read without asking the system for its free memory (any machine that runs torch has
# it; asking costs ~0.2 ms, a tenth of reading a small case).
ALWAYS_FITS_BYTES = 64 * 2**20
# Label values a label map can hold: tutorseg writes uint8, or int16 beyond 255 classes (tutorseg.data.imageio).
MAX_LABEL_VALUE = 32767
# Channels of one case: multi-parametric MRI has a handful, multiplexed microscopy a few dozen.
MAX_CHANNELS = 256
# Voxel sizes in mm: from nanometre electron microscopy to centimetre slices, with room on both sides.
SPACING_RANGE_MM = (1e-7, 1e4)
# Voxels along one image axis: a whole-slide image has ~10^5.
MAX_AXIS_VOXELS = 10**6


def implausible_geometry(spacing, shape) -> str | None:
    """What is impossible about a spacing and a shape read from a file someone else wrote, or None."""
    low, high = SPACING_RANGE_MM
    bad_spacing = [s for s in spacing if not (isinstance(s, (int, float)) and low <= s <= high)]
    if bad_spacing:
        return f"spacing {bad_spacing[0]!r} mm outside {low:g}..{high:g}"
    bad_shape = [n for n in shape if not (isinstance(n, int) and 1 <= n <= MAX_AXIS_VOXELS)]
    if bad_shape:
        return f"image size {bad_shape[0]!r} voxels outside 1..{MAX_AXIS_VOXELS:,}"
    return None


class FileLimitError(TutorsegError):
    """A file from someone else declares more than a real file of its kind holds, or than this machine has."""


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"  # pragma: no cover (the loop returns)


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in parsed JSON (a scalar: 0), without recursing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def parse_json(text: str | bytes, *, source: str | os.PathLike) -> Any:
    """Parse JSON from a file tutorseg did not write, within :data:`MAX_JSON_BYTES` and :data:`MAX_JSON_DEPTH`.

    Raises:
        FileLimitError: larger or deeper than any artefact of this field (named by ``source``).
        json.JSONDecodeError: not JSON (the caller says which artefact and how to make a good one).
    """
    if len(text) > MAX_JSON_BYTES:
        raise FileLimitError(f"{source} holds {_size(len(text))} of JSON, more than the {_size(MAX_JSON_BYTES)} any "
                             "tutorseg or nnU-Net file holds; it is not read. Check that it is the file you meant.")
    try:
        data = json.loads(text)
    except RecursionError:
        data = None
        deep = True
    else:
        deep = _depth(data) > MAX_JSON_DEPTH
    if deep:
        raise FileLimitError(f"{source} nests lists or objects more than {MAX_JSON_DEPTH} levels deep; no tutorseg "
                             "or nnU-Net file does, so it is not read. Check that it is the file you meant.")
    return data


def read_json_file(path: str | os.PathLike) -> Any:
    """Read and parse a JSON file within the limits of :func:`parse_json` (its size checked before reading)."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise FileLimitError(f"{path} is {_size(size)}, more than the {_size(MAX_JSON_BYTES)} any tutorseg or nnU-Net "
                             "JSON file holds; it is not read. Check that it is the file you meant.")
    return parse_json(path.read_bytes(), source=path)


def memory_shortfall(n_bytes: int, *, what: str) -> str | None:
    """Why ``n_bytes`` (an image's voxels, as its header declares them) cannot be read here, or None if they can.

    Args:
        n_bytes: the size the header declares (voxels x bytes per voxel x channels).
        what: what the header declares, for the message ("100000 x 100000 x 100000 voxels of float32").
    """
    from tutorseg.data.jobs import available_memory_bytes

    if n_bytes <= ALWAYS_FITS_BYTES:
        return None
    available = available_memory_bytes()
    if available is None or n_bytes <= MEMORY_SHARE_PER_IMAGE * available:
        return None
    return (f"its header declares {what}, {_size(n_bytes)} once read, and this machine has {_size(available)} of "
            f"memory available (at most {MEMORY_SHARE_PER_IMAGE:.0%} goes to one image); it is not read")


# what to do about an image too large to read (a small file declaring this much is forged)
TOO_LARGE_FIX = ("if the image is real, crop or downsample it with a tool that streams (SimpleITK, c3d) or use a "
                 "machine with more memory; a small file that declares this much is forged: delete it")


def max_file_bytes() -> int | None:
    """The largest file this process may write (``ulimit -f``), or None without a limit."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def check_fits_on_disk(n_bytes: int, folder: str | os.PathLike, *, what: str, largest_file: int = 0) -> None:
    """Refuse to write ``n_bytes`` into ``folder`` where the disk would be left with less than the margin.

    Args:
        n_bytes: what will be written in all.
        folder: where (or a folder above it that exists).
        what: what, for the message ("model.zip unpacks to").
        largest_file: the largest single file among them, checked against ``ulimit -f``.
    """
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if n_bytes + DISK_MARGIN_BYTES > free:
        raise FileLimitError(f"{what} {_size(n_bytes)}, and {folder} has {_size(free)} free (tutorseg keeps "
                             f"{_size(DISK_MARGIN_BYTES)} free). Nothing was written. Free space, or choose a "
                             "folder on a larger disk.")
    limit = max_file_bytes()
    if limit is not None and largest_file > limit:
        raise FileLimitError(f"{what} a file of {_size(largest_file)}, larger than this process may write "
                             f"(ulimit -f: {_size(limit)}). Nothing was written.")
