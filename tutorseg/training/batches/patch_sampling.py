"""Patch sampling: training batches cut from preprocessed cases, with foreground oversampling.

A network trains on patches, not whole cases. nnU-Net's data loaders (``nnUNetDataLoader3D`` / ``2D``) pick cases
at random (with replacement) and a random patch in each; the last third of every batch is forced to contain
foreground, so that small structures are seen often enough. tutorseg does the same here:

- ``oversample_foreground=0.33`` (nnU-Net's ``oversample_foreground_percent``): sample ``i`` of a batch of ``B`` is
  forced when ``i >= round(B * (1 - 0.33))``; for ``B = 2`` the second sample, for ``B = 9`` the last three.
- A forced sample picks one of the case's foreground classes present (uniformly), then one of that class's stored
  locations (``class_locations``, sampled during preprocessing), and centres the patch on it.
- Cases smaller than the patch are padded: images with 0, labels with background (nnU-Net pads labels with -1 and
  its ``RemoveLabelTansform(-1, 0)`` turns them into background; -1 marks "outside the image" in preprocessing).
- "2d" on 3D data: a random slice along ``slice_axis`` (for a forced sample, a slice through the chosen voxel).

Everything stays in numpy on the CPU and is cheap: cropping is slicing into a preallocated batch, from arrays in
memory or from compressed arrays on disk that decompress only the chunks a patch touches
(:mod:`tutorseg.preprocessing.storage`). Augmentation is the
next step (:func:`tutorseg.training.batches.augmentation.augment_batch`), on the batch tensor, ideally on the GPU. Give the
sampler the larger ``sample_size`` (:func:`tutorseg.training.batches.augmentation.sampling_patch_size`) and the augmentation
crops the network's patch out of the rotated sample, as nnU-Net does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Protocol, Sequence

import numpy as np
import torch

from tutorseg.preprocessing.preprocessor import ANNOTATED
from tutorseg.preprocessing.storage import StoredArray

OVERSAMPLE_FOREGROUND = 0.33  # nnU-Net's oversample_foreground_percent


class SampleableCase(Protocol):
    """What the sampler needs of a case (:class:`tutorseg.preprocessing.preprocessor.PreprocessedCase` has it)."""

    case_id: str
    data: np.ndarray | StoredArray  # (C, *S) float, in memory or read from disk by slicing
    label: np.ndarray | StoredArray  # (*S) integer, -1 = outside the image's non-zero region
    class_locations: Mapping[int, np.ndarray]  # class -> (N, len(S)) voxel indices
    previous: np.ndarray | None  # (*S) a cascade's first-stage segmentation (label channel 1), or None


def is_forced_foreground(index: int, batch_size: int, oversample_foreground: float = OVERSAMPLE_FOREGROUND) -> bool:
    """nnU-Net's ``get_do_oversample``: the last ``oversample_foreground`` share of each batch is forced."""
    return index >= round(batch_size * (1 - oversample_foreground))


@dataclass(frozen=True)
class PatchBox:
    """Where a patch lies in a case: lower corner (may be negative: padding) and the slice for 2D sampling."""

    case_index: int
    lower: tuple[int, ...]
    slice_index: int | None = None
    forced_class: int | None = None


class PatchSampler:
    """Draws training batches from preprocessed cases (in memory or on disk).

    Args:
        cases: the cases (``data`` (C, *S) float, ``label`` (*S) int, ``class_locations``).
        patch_size: the network's patch size (2 or 3 axes).
        batch_size: samples per batch.
        sample_size: the size actually cut out, >= ``patch_size`` (nnU-Net's ``initial_patch_size``): the larger
            patch the spatial augmentation rotates before cropping ``patch_size``. Default: ``patch_size``.
        oversample_foreground: share of each batch forced to contain foreground (nnU-Net: 0.33).
        slice_axis: for a 2D patch on 3D cases, the spatial axis along which slices are taken.
        seed: seed of the sampler's random generator (same seed, same batches).
        share: the samples of each batch this sampler cuts (default: all). With several processes training one
            fold (:mod:`tutorseg.training.hardware.distributed`) each process draws the whole batch's boxes from the same
            random sequence and cuts only its share, so together they cut the batch one process would.

    Example:
        On a preprocessed folder (notebook 03 makes one)::

            cases = PreprocessedDataset.open("work/preprocessed/3d_fullres").load_cases()
            sampler = PatchSampler(cases, patch_size=(40, 56, 40), batch_size=9, seed=0)
            images, labels = sampler.next_batch()  # (9, 1, 40, 56, 40) float32 and int16 tensors
    """

    def __init__(self, cases: Sequence[SampleableCase], *, patch_size: Sequence[int], batch_size: int,
                 sample_size: Sequence[int] | None = None, oversample_foreground: float = OVERSAMPLE_FOREGROUND,
                 slice_axis: int | None = None, seed: int = 0, share: range | None = None, keep_outside: bool = False):
        if not cases:
            raise ValueError("PatchSampler needs at least one case")
        self.cases = list(cases)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.sample_size = self.patch_size if sample_size is None else tuple(int(s) for s in sample_size)
        self.batch_size = int(batch_size)
        self.share = range(self.batch_size) if share is None else share
        self.oversample_foreground = float(oversample_foreground)
        self.rng = np.random.default_rng(seed)
        case_dims = self.cases[0].label.ndim
        self.slice_axis = slice_axis if (len(self.patch_size) == 2 and case_dims == 3) else None
        if len(self.patch_size) == 2 and case_dims == 3 and slice_axis is None:
            raise ValueError("a 2D patch on 3D cases needs slice_axis (the configuration's slice_axis)")
        if len(self.sample_size) != len(self.patch_size) or any(
                s < p for s, p in zip(self.sample_size, self.patch_size)):
            raise ValueError(f"sample_size {self.sample_size} must be >= patch_size {self.patch_size} per axis")
        self.n_channels = self.cases[0].data.shape[0]
        # a cascade's second stage: the first stage's segmentation travels as a second label channel
        self.n_label_channels = 2 if getattr(self.cases[0], "previous", None) is not None else 1
        # -1 for "outside the image's non-zero region" (and beyond the case) kept for augment_batch's image mask,
        # as nnU-Net's training loader pads with -1; otherwise background (its validation loader removes -1 at once)
        self.outside_label = -1 if keep_outside else 0

    def __repr__(self) -> str:
        return (f"PatchSampler({len(self.cases)} cases, patch {self.patch_size}, sample {self.sample_size}, "
                f"batch {self.batch_size}, oversample_foreground={self.oversample_foreground}"
                + (f", 2D slices along axis {self.slice_axis}" if self.slice_axis is not None else "") + ")")

    # ----------------------------------------------------------------------------------------------- choosing

    def _plane_shape(self, case: SampleableCase) -> tuple[int, ...]:
        shape = case.label.shape
        if self.slice_axis is None:
            return tuple(shape)
        return tuple(s for axis, s in enumerate(shape) if axis != self.slice_axis)

    def _bounds(self, shape: Sequence[int]) -> tuple[list[int], list[int]]:
        """nnU-Net's ``get_bbox`` bounds: the lowest and highest lower corner, allowing half the extra as padding."""
        lows, highs = [], []
        for size, sample, patch in zip(shape, self.sample_size, self.patch_size):
            need = sample - patch
            if need + size < sample:
                need = sample - size
            lows.append(-(need // 2))
            highs.append(size + need // 2 + need % 2 - sample)
        return lows, highs

    def choose_box(self, case_index: int, force_foreground: bool) -> PatchBox:
        """Where to cut one sample from case ``case_index`` (random, or centred on foreground when forced)."""
        case = self.cases[case_index]
        voxel, forced_class = None, None
        if force_foreground:
            # each class's locations read once (a case on disk reads them from its file)
            present = {c: locs for c, locs in case.class_locations.items() if c != ANNOTATED and len(locs) > 0}
            eligible = list(present)
            if eligible:
                forced_class = int(eligible[self.rng.integers(len(eligible))])
                locations = present[forced_class]
                voxel = np.asarray(locations[self.rng.integers(len(locations))])
        elif ANNOTATED in case.class_locations:  # an ignore label: centred on an annotated voxel (nnU-Net)
            locations = case.class_locations[ANNOTATED]
            if len(locations):
                voxel = np.asarray(locations[self.rng.integers(len(locations))])
        slice_index = None
        if self.slice_axis is not None:
            if voxel is not None:
                slice_index = int(voxel[self.slice_axis])
                voxel = np.delete(voxel, self.slice_axis)
            else:
                slice_index = int(self.rng.integers(case.label.shape[self.slice_axis]))
        lows, highs = self._bounds(self._plane_shape(case))
        if voxel is not None:
            lower = [max(low, int(v) - s // 2) for low, v, s in zip(lows, voxel, self.sample_size)]
        else:
            lower = [int(self.rng.integers(low, high + 1)) for low, high in zip(lows, highs)]
        return PatchBox(case_index, tuple(lower), slice_index, forced_class)

    # ----------------------------------------------------------------------------------------------- cutting

    def cut(self, box: PatchBox, image_out: np.ndarray, label_out: np.ndarray) -> None:
        """Copy the box's region into preallocated ``image_out`` (C, *sample) and ``label_out`` (1 or 2, *sample).

        Parts of the box outside the case read 0 (image) and ``outside_label`` (label), as does label -1 (outside
        the non-zero region): -1 when the sampler keeps it for augmentation, else background.
        """
        case = self.cases[box.case_index]
        plane: list[slice | int] = [slice(None)] * case.label.ndim
        if box.slice_index is not None and self.slice_axis is not None:
            plane[self.slice_axis] = box.slice_index  # an integer index: that axis goes away
        plane_axes = [axis for axis, index in enumerate(plane) if isinstance(index, slice)]
        source: list[slice] = []
        target: list[slice] = []
        for axis, lower, sample in zip(plane_axes, box.lower, self.sample_size):
            size = case.label.shape[axis]
            start, stop = max(lower, 0), min(lower + sample, size)
            source.append(slice(start, stop))
            target.append(slice(start - lower, stop - lower))
        region = list(plane)
        for axis, part in zip(plane_axes, source):
            region[axis] = part
        image_out[:] = 0
        label_out[:] = self.outside_label
        # one read per array: cases on disk (tutorseg.preprocessing.storage) decompress only the chunks it touches
        image_out[tuple([slice(None), *target])] = case.data[tuple([slice(None), *region])]
        label_out[0][tuple(target)] = np.maximum(case.label[tuple(region)], self.outside_label)
        previous = getattr(case, "previous", None)
        if self.n_label_channels == 2 and previous is not None:
            label_out[1][tuple(target)] = previous[tuple(region)]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch, or this sampler's share of it: images (b, C, *sample) float32, labels (b, 1, *sample) int16.

        For a cascade's second stage the labels have a second channel, the first stage's segmentation.
        """
        images = np.zeros((len(self.share), self.n_channels, *self.sample_size), dtype=np.float32)
        labels = np.zeros((len(self.share), self.n_label_channels, *self.sample_size), dtype=np.int16)
        case_indices = self.rng.integers(len(self.cases), size=self.batch_size)
        for i, case_index in enumerate(case_indices):
            forced = is_forced_foreground(i, self.batch_size, self.oversample_foreground)
            box = self.choose_box(int(case_index), forced)  # drawn for every sample: the random sequence is shared
            if i in self.share:
                slot = i - self.share.start
                self.cut(box, images[slot], labels[slot])
        return torch.from_numpy(images), torch.from_numpy(labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    # ----------------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict:
        """The random generator's state, to save in a checkpoint and resume the same batch sequence."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
