"""How a preprocessed case is stored on disk: compressed, in chunks, so that a patch is read without the case.

Training needs a few patches per step, not whole cases. Today's datasets fit in memory (Hippocampus: 25-260 small
cases), the ones researchers bring often do not (MSD BrainTumour ~25 GB as float32, Liver ~60 GB; a Colab VM has
~12.7 GB). So each preprocessed case is written as two Blosc2 N-dimensional arrays, as nnU-Net v2 stores its own
(``CASE.b2nd`` for the image, ``CASE_seg.b2nd`` for the label map); reading a patch decompresses only the chunks
the patch touches. The foreground locations sampled during preprocessing go beside
them in a small ``CASE_locations.npz``.

Why Blosc2 (measured in ``bench/storage.md``): nnU-Net's settings (LZ4HC level 5, byte shuffle or none, whichever
is smaller: :func:`choose_filter`) store the preprocessed Hippocampus in less than half the bytes of the uncompressed
arrays tutorseg stored before, a patch decompresses in well under a millisecond, and Colab has it preinstalled
(``blosc2`` 4.11, in ``../shared/reference/colab/pip-freeze.gpu.txt``). Uncompressed memory-mapped ``.npy`` reads
patches as fast but saves no disk, and disk is the next wall on Colab (80-100 GB).

Chunks and blocks: a Blosc2 array is cut into *chunks* (the unit read from disk) and each chunk into *blocks* (the
unit decompressed). nnU-Net's ``comp_blosc2_params`` sizes them from the patch: one channel per chunk, chunks about
the patch's size (at most 1.5x per axis, at most 6 MB), blocks at most 128 KB. :func:`chunk_shapes` follows the
same limits with a simpler rule: a chunk is the patch (cut to the image, one slice thick along the slice axis of
a 2D configuration on 3D data), halved along its longest axis while above 6 MB; a block is the chunk halved the
same way while above 128 KB. A patch then touches at most 2 chunks per axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from tutorseg.data.files import atomic_path

MAX_CHUNK_BYTES = 6 * 2**20  # nnU-Net's comp_blosc2_params: max_chunk_nbytes
MAX_BLOCK_BYTES = 128 * 2**10  # nnU-Net's comp_blosc2_params: max_block_nbytes
CLEVEL = 5  # nnU-Net's save_case: LZ4HC at level 5 (fast to decompress: patches are read at every step)
DATA_ENDING, LABEL_ENDING, LOCATIONS_ENDING = ".b2nd", "_seg.b2nd", "_locations.npz"


class StoredArray(Protocol):
    """What training reads from a stored array: its shape and type, and numpy arrays by slicing."""

    shape: tuple[int, ...]
    dtype: np.dtype
    ndim: int

    def __getitem__(self, key) -> np.ndarray: ...


def case_files(folder: Path, case_id: str) -> tuple[Path, Path, Path]:
    """The three files of one stored case: image, label map, foreground locations."""
    return (folder / f"{case_id}{DATA_ENDING}", folder / f"{case_id}{LABEL_ENDING}",
            folder / f"{case_id}{LOCATIONS_ENDING}")


def _halve_until(shape: list[int], itemsize: int, limit: int) -> list[int]:
    shape = list(shape)
    while int(np.prod(shape)) * itemsize > limit and max(shape) > 1:
        longest = int(np.argmax(shape))
        shape[longest] = (shape[longest] + 1) // 2
    return shape


def chunk_shapes(shape: Sequence[int], patch_size: Sequence[int], itemsize: int,
                 slice_axis: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(chunks, blocks) for an array ``(C, *spatial)`` read in patches of ``patch_size``.

    Args:
        shape: the array's shape, channels first (a label map is stored with a channel axis of 1).
        patch_size: the configuration's patch (2 entries for a 2D network).
        itemsize: bytes per element.
        slice_axis: for a 2D patch on 3D data, the spatial axis the slices are taken along.

    >>> chunk_shapes((1, 36, 50, 35), (40, 56, 40), 4)  # a Hippocampus case: one chunk
    ((1, 36, 50, 35), (1, 36, 25, 35))
    >>> chunk_shapes((4, 155, 240, 240), (128, 128, 128), 4)[0]  # BrainTumour-like: <= 6 MB chunks
    (1, 64, 128, 128)
    """
    spatial = list(shape[1:])
    patch = [int(p) for p in patch_size]
    if len(patch) < len(spatial):  # a 2D network on 3D data reads one slice at a time
        axis = 0 if slice_axis is None else slice_axis
        patch.insert(axis, 1)
    chunk = _halve_until([min(s, p) for s, p in zip(spatial, patch)], itemsize, MAX_CHUNK_BYTES)
    block = _halve_until(chunk, itemsize, MAX_BLOCK_BYTES)
    return (1, *chunk), (1, *block)


def choose_filter(array: np.ndarray, chunks: Sequence[int], blocks: Sequence[int]):
    """Blosc2's byte shuffle or no filter, whichever compresses a central chunk of ``array`` smaller.

    nnU-Net v2's rule (``nnUNetDatasetBlosc2._select_filter``): intensities that were resampled are continuous and
    compress better shuffled; intensities that were not (Hippocampus at its own 1 mm) keep the few values of the
    scanner's integers and compress better as they are (2.2x against 1.2x shuffled, bench/storage.md). Ties go to
    no filter.
    """
    import blosc2

    slab_shape = [min(int(c), s) for c, s in zip(chunks, array.shape)]
    centre = tuple(slice((s - n) // 2, (s - n) // 2 + n) for s, n in zip(array.shape, slab_shape))
    slab = np.ascontiguousarray(array[centre])
    trial_blocks = tuple(max(1, min(int(b), n)) for b, n in zip(blocks, slab_shape))
    sizes = {}
    for candidate in (blosc2.Filter.NOFILTER, blosc2.Filter.SHUFFLE):
        cparams = {"codec": blosc2.Codec.LZ4HC, "clevel": CLEVEL, "filters": [candidate], "nthreads": 1}
        sizes[candidate] = blosc2.asarray(slab, chunks=tuple(slab_shape), blocks=trial_blocks,
                                          cparams=cparams).schunk.cbytes
    return min(sizes, key=lambda f: (sizes[f], f != blosc2.Filter.NOFILTER))


def _write_array(path: Path, array: np.ndarray, patch_size: Sequence[int], slice_axis: int | None) -> None:
    import blosc2

    chunks, blocks = chunk_shapes(array.shape, patch_size, array.itemsize, slice_axis)
    cparams = {"codec": blosc2.Codec.LZ4HC, "clevel": CLEVEL, "filters": [choose_filter(array, chunks, blocks)],
               "nthreads": 1}
    with atomic_path(path) as tmp:
        blosc2.asarray(np.ascontiguousarray(array), urlpath=str(tmp), mode="w", chunks=chunks, blocks=blocks,
                       cparams=cparams)


def write_case(folder: Path, case_id: str, data: np.ndarray, label: np.ndarray,
               locations: Mapping[int, np.ndarray], *, patch_size: Sequence[int],
               slice_axis: int | None = None) -> None:
    """Write one preprocessed case: ``data (C, *S)`` float32, ``label (*S)`` integer, foreground locations.

    Each file is written atomically (a killed process leaves the old file or none, never half of one).
    """
    data_file, label_file, locations_file = case_files(folder, case_id)
    _write_array(data_file, data, patch_size, slice_axis)
    _write_array(label_file, label[None], patch_size, slice_axis)
    with atomic_path(locations_file) as tmp:
        arrays = {f"locations_{value}": where for value, where in locations.items()}
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stubs take **kwds as allow_pickle


class BloscArray:
    """A stored Blosc2 array, opened for each read: slicing it decompresses only the chunks the slice touches.

    Nothing stays open between reads: a dataset of thousands of cases would otherwise hold two open files per case
    (memory-mapped Blosc2 arrays keep theirs), past the usual limit of 1024 per process, and the mapped pages would
    count as the process's memory. Opening costs about 0.2 ms per read (bench/storage.md).
    """

    def __init__(self, path: Path):
        import blosc2

        self.path = Path(path)
        header = blosc2.open(str(self.path), mode="r")
        self.shape: tuple[int, ...] = tuple(int(s) for s in header.shape)
        self.dtype = np.dtype(header.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        import blosc2

        blosc2.set_nthreads(1)  # one thread per reader: the sampler and the prefetch thread read small patches
        return blosc2.open(str(self.path), mode="r")[key]

    def __repr__(self) -> str:
        return f"BloscArray({self.path.name}, {self.shape}, {self.dtype})"


class LabelView:
    """A stored ``(1, *S)`` label array seen as ``(*S)``: what the sampler indexes."""

    def __init__(self, stored: StoredArray):
        self.stored = stored
        self.shape = tuple(stored.shape[1:])
        self.dtype = stored.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return self.stored[(0, *key)]


class StoredLocations(Mapping[int, np.ndarray]):
    """A case's foreground locations (class -> (N, ndim) voxel indices), read from its ``.npz`` when asked for."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with np.load(self.path) as stored:
            self.classes = tuple(int(k.split("_", 1)[1]) for k in stored.files)

    def __getitem__(self, value: int) -> np.ndarray:
        if value not in self.classes:
            raise KeyError(value)
        with np.load(self.path) as stored:
            return stored[f"locations_{value}"]

    def __iter__(self):
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)


def open_case(folder: Path, case_id: str) -> tuple[StoredArray, StoredArray, Mapping[int, np.ndarray]]:
    """(data, label, locations) of a stored case, all read from disk when used (nothing is held open)."""
    data_file, label_file, locations_file = case_files(folder, case_id)
    return BloscArray(data_file), LabelView(BloscArray(label_file)), StoredLocations(locations_file)


def read_all(array: StoredArray | np.ndarray) -> np.ndarray:
    """The whole array in memory (a numpy array as it is)."""
    return array if isinstance(array, np.ndarray) else array[...]


def stored_bytes(folder: Path, case_id: str) -> int:
    """Bytes on disk of a stored case."""
    return sum(f.stat().st_size for f in case_files(folder, case_id))


def memory_bytes(data: StoredArray, label: StoredArray) -> int:
    """Bytes the case takes when read into memory."""
    return int(np.prod(data.shape)) * data.dtype.itemsize + int(np.prod(label.shape)) * label.dtype.itemsize


def is_complete(folder: Path, case_id: str) -> bool:
    """All three files of the case are there."""
    return all(f.is_file() for f in case_files(folder, case_id))


def remove_case(folder: Path, case_id: str) -> None:
    """Delete a stored case's array files."""
    for f in case_files(folder, case_id):
        f.unlink(missing_ok=True)


def in_memory_decision(nbytes: int, available: int | None, *, share: float = 0.3) -> tuple[bool, str]:
    """Whether training keeps the cases in RAM (faster: no decompression) or reads patches from disk.

    In RAM when the decompressed cases take at most ``share`` of the memory available now: the rest stays for the
    network, the batches, the validation's full-size probabilities and the learner's notebook.

    >>> in_memory_decision(300 * 2**20, 8 * 2**30)[0]
    True
    >>> in_memory_decision(25 * 2**30, 12 * 2**30)[1]
    '26.8 GB of cases > 30% of the 12.9 GB available: patches are read from the compressed files on disk'
    """
    if available is None:
        return True, f"{nbytes / 1e9:.1f} GB of cases held in memory (free memory unknown on this system)"
    if nbytes <= share * available:
        return True, (f"{nbytes / 1e9:.2f} GB of cases <= {share:.0%} of the {available / 1e9:.1f} GB available: "
                      "held in memory")
    return False, (f"{nbytes / 1e9:.1f} GB of cases > {share:.0%} of the {available / 1e9:.1f} GB available: "
                   "patches are read from the compressed files on disk")
